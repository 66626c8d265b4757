"""The self-contained HTML page of an ``Explanation``: the prompt with each token shaded by the last layer it
reached, a legend, per-stage kept counts and score distributions (inline CSS and SVG; no script, no
external resource).

All prompt text goes through ``html.escape``; newlines show as a visible ``↵`` and then break the line,
other control characters as their Unicode control pictures (U+2400 block).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from ..files import atomic_write_bytes
from .data import Explanation

# light (dropped at the first stage) to dark (survived every stage)
RAMP = ((1.00, 0.93, 0.63), (0.99, 0.60, 0.30), (0.80, 0.25, 0.33), (0.40, 0.13, 0.45), (0.10, 0.12, 0.35))
KEPT, DROPPED = "#4c78a8", "#e45756"
BINS = 24
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f4f4f4} td.l{text-align:left}
.legend span.sw{display:inline-block;padding:.1em .5em;margin:.1em .3em .1em 0;border-radius:3px;font-size:.85em}
.prompt{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,"DejaVu Sans Mono",monospace;
 font-size:13px;line-height:1.7;border:1px solid #ddd;padding:.8em;background:#fafafa}
.prompt span{border-radius:2px}
.prompt span.hl{outline:2px solid #f2a900;outline-offset:0}
.note{color:#555;font-size:.85em}
"""


def layer_colours(explanation: Explanation) -> dict[int, str]:
    """``{last layer reached: background colour}``: each stage layer, then ``num_layers`` (survived every stage)."""
    levels = [*explanation.stage_layers, explanation.num_layers]
    return {level: _rgb(_ramp(i / max(1, len(levels) - 1))) for i, level in enumerate(levels)}


def token_text(token: str) -> str:
    """``token`` escaped for the page, with newlines and other control characters visible."""
    if token == "":
        return "∅"  # a token that decodes to nothing (a partial UTF-8 byte sequence, some special tokens)
    out = []
    for ch in token:
        if ch == "\n":
            out.append("↵\n")
        elif ch == "\t":
            out.append("\t")
        elif ord(ch) < 0x20:
            out.append(chr(0x2400 + ord(ch)))
        elif ch == "\x7f":
            out.append("␡")
        else:
            out.append(ch)
    return html.escape("".join(out), quote=True)


def quantiles(values: list[float], qs=(0.0, 0.1, 0.5, 0.9, 1.0)) -> list[float]:
    """Linear-interpolated quantiles of the finite ``values`` (numpy's default rule); ``nan`` if none."""
    data = sorted(v for v in values if math.isfinite(v))
    if not data:
        return [math.nan] * len(qs)
    out = []
    for q in qs:
        x = q * (len(data) - 1)
        lo = math.floor(x)
        hi = min(lo + 1, len(data) - 1)
        out.append(data[lo] + (data[hi] - data[lo]) * (x - lo))
    return out


def histogram_svg(kept: list[float], dropped: list[float], threshold: float | None = None, width: int = 260,
                  height: int = 56) -> str:
    """A stacked histogram (kept in blue, dropped in red) of one stage's finite scores, as inline SVG;
    ``threshold`` (the lowest unprotected kept score) is drawn as a black line."""
    values = [v for v in kept + dropped if math.isfinite(v)]
    if not values:
        return '<span class="note">no finite scores</span>'
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0

    def counts(vs):
        c = [0] * BINS
        for v in vs:
            if math.isfinite(v):
                c[min(BINS - 1, int((v - lo) / span * BINS))] += 1
        return c

    k, d = counts(kept), counts(dropped)
    top = max(a + b for a, b in zip(k, d))
    bar, plot = width / BINS, height - 14
    rects = []
    for i, (a, b) in enumerate(zip(k, d)):
        x, hk, hd = i * bar, plot * a / top, plot * b / top
        if b:
            rects.append(f'<rect x="{x:.1f}" y="{plot - hd - hk:.1f}" width="{bar - 1:.1f}" height="{hd:.1f}" fill="{DROPPED}"/>')
        if a:
            rects.append(f'<rect x="{x:.1f}" y="{plot - hk:.1f}" width="{bar - 1:.1f}" height="{hk:.1f}" fill="{KEPT}"/>')
    if threshold is not None and math.isfinite(threshold):
        x = (threshold - lo) / span * width
        rects.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{plot:.1f}" stroke="#000" stroke-width="1"/>')
    labels = (f'<text x="0" y="{height - 2}" font-size="10">{lo:.2f}</text>'
              f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{hi:.2f}</text>')
    return (f'<svg width="{width}" height="{height}" role="img" '
            f'aria-label="score histogram">{"".join(rects)}{labels}</svg>')


def render_html(explanation: Explanation) -> str:
    """The whole page, as a string."""
    e, esc = explanation, html.escape
    colours = layer_colours(e)
    model = e.meta.get("base_model") or "model"
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sdtp explain: {esc(model)}</title>"
             f"<style>{CSS}{_level_css(colours)}</style></head><body>",
             f"<h1>What SDTP kept: {esc(model)}</h1>",
             f"<p>{e.length} prompt tokens, {e.num_layers} decoder layers, pruning before layers "
             f"{', '.join(map(str, e.stage_layers))} (keep ratio {esc(str(e.schedule.get('keep_ratio', '?')))} per stage; "
             f"{len(e.protected)} protected tokens: the first ones and the local window).</p>"]
    if e.meta.get("source"):
        parts.append(f"<p class=\"note\">Prompt: {esc(str(e.meta['source']))}</p>")
    parts.append("<h2>Stages</h2>" + _stage_table(e))
    if e.highlight:
        surviving = e.surviving(e.highlight)
        reached = min(e.last_layer[p] for p in e.highlight)
        verdict = ("survives every stage" if surviving[-1] == len(e.highlight) else
                   f"loses tokens: its first drop is before layer {reached}")
        lost = [f"<code>{token_text(e.tokens[p] if e.tokens else str(e.input_ids[p]))}</code> before L{e.last_layer[p]}"
                for p in e.highlight if e.last_layer[p] < e.num_layers]
        parts.append(f"<h2>Highlighted text</h2><p><span class=\"hl-text\">{token_text(e.highlight_text or '')}</span> "
                     f"({len(e.highlight)} tokens, outlined below) {verdict}; tokens left after each stage: "
                     f"{', '.join(f'L{layer}: {n}' for layer, n in zip(e.stage_layers, surviving))}"
                     + (f". Dropped: {', '.join(lost)}" if lost else "") + ".</p>")
    parts.append("<h2>Prompt, shaded by the last layer each token reached</h2><p class=\"legend\">"
                 + "".join(f'<span class="sw l{level}">{_legend_label(e, level)}</span>' for level in colours) + "</p>")
    parts.append('<div class="prompt">' + _tokens(e) + "</div>")
    parts.append('<p class="note">Hover a token for its position, the last layer it reached and its scores. '
                 "Made by <code>sdtp explain</code>.</p></body></html>\n")
    return "".join(parts)


def write_html(explanation: Explanation, path: str | Path) -> Path:
    """Write ``render_html(explanation)`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, render_html(explanation).encode("utf-8"))
    return path


def _stage_table(e: Explanation) -> str:
    protected = set(e.protected)
    rows = ["<table><tr><th>stage</th><th>layer</th><th>tokens in</th><th>kept</th><th>dropped</th>"
            "<th>score min</th><th>10%</th><th>median</th><th>90%</th><th>max</th>"
            "<th>lowest kept (unprotected)</th><th>scores: kept / dropped (line: lowest kept)</th></tr>"]
    for s, layer in enumerate(e.stage_layers):
        scores, kept = e.stage_scores(s), set(e.kept_positions[s])
        kept_scores = [v for p, v in scores.items() if p in kept]
        dropped_scores = [v for p, v in scores.items() if p not in kept]
        free = [v for p, v in scores.items() if p in kept and p not in protected and math.isfinite(v)]
        cells = "".join(f"<td>{_num(q)}</td>" for q in quantiles(list(scores.values())))
        rows.append(f"<tr><td>{s + 1}</td><td>{layer}</td><td>{len(scores)}</td><td>{len(kept)}</td>"
                    f"<td>{len(scores) - len(kept)}</td>{cells}<td>{_num(min(free)) if free else '–'}</td>"
                    f"<td class=\"l\">{histogram_svg(kept_scores, dropped_scores, min(free) if free else None)}</td></tr>")
    return "".join(rows) + "</table>"


def _tokens(e: Explanation) -> str:
    stage_scores = [e.stage_scores(s) for s in range(len(e.stage_layers))]
    highlight, out = set(e.highlight), []
    for p in range(e.length):
        level = e.last_layer[p]
        text = e.tokens[p] if e.tokens is not None else f"[{e.input_ids[p]}] "
        last = max(s for s, layer in enumerate(e.stage_layers) if p in stage_scores[s])  # its deciding stage
        fate = "kept to the end" if level == e.num_layers else f"dropped before L{level}"
        title = f"#{p} {fate} (L{e.stage_layers[last]} score {_num(stage_scores[last][p])})"
        cls = f"l{level} hl" if p in highlight else f"l{level}"
        out.append(f'<span class="{cls}" title="{html.escape(title)}">{token_text(text)}</span>')
    return "".join(out)


def _legend_label(e: Explanation, level: int) -> str:
    if level == e.num_layers:
        return f"survived every stage (all {e.num_layers} layers): {e.last_layer.count(level)}"
    return f"dropped before layer {level}: {e.last_layer.count(level)}"


def _num(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "nan"


def _ramp(t: float) -> tuple[float, float, float]:
    x = t * (len(RAMP) - 1)
    i = min(int(x), len(RAMP) - 2)
    a, b, f = RAMP[i], RAMP[i + 1], x - i
    return tuple(a[c] + (b[c] - a[c]) * f for c in range(3))


def _rgb(c: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(v * 255):02x}" for v in c)


def _level_css(colours: dict[int, str]) -> str:
    """One class per last layer reached (``.l12``), so each token carries a class instead of a style."""
    return "".join(f".l{level}{{{_style(colour)}}}" for level, colour in colours.items())


def _style(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5  # relative luminance (sRGB approximation)
    return f"background:{colour};color:{'#fff' if dark else '#111'}"
