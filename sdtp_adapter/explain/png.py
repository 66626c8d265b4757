"""The PNG heatmap of an ``Explanation``: stage x token, kept or dropped (top) and the stage's score (bottom)."""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

from ..files import publish
from .data import Explanation

DPI = 100
WIDTH_IN = 14.0  # 1400 px: one pixel per token up to 1400 tokens, antialiased beyond

# status colours (RGB 0-1): the token never reached the stage / was dropped there / kept / kept as protected
GONE, DROPPED, KEPT, PROTECTED = (1.0, 1.0, 1.0), (0.89, 0.34, 0.34), (0.30, 0.47, 0.66), (0.11, 0.23, 0.36)
HIGHLIGHT = "#f2a900"


def png_size(explanation: Explanation) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``render_png``'s image: fixed width, 0.32 in per stage row and panel."""
    return int(WIDTH_IN * DPI), int(round(_height_in(len(explanation.stage_layers)) * DPI))


def _height_in(stages: int) -> float:
    return 2.0 + 2 * 0.22 * stages


def status_rows(explanation: Explanation) -> list[list[tuple[float, float, float]]]:
    """``[S][N]`` RGB colour of each token at each stage (``GONE``, ``DROPPED``, ``KEPT``, ``PROTECTED``)."""
    protected, rows = set(explanation.protected), []
    for scored, kept in zip(explanation.scored_positions, explanation.kept_positions):
        scored, kept = set(scored), set(kept)
        rows.append([
            (PROTECTED if p in protected else KEPT) if p in kept else DROPPED if p in scored else GONE
            for p in range(explanation.length)
        ])
    return rows


def score_rows(explanation: Explanation) -> list[list[float]]:
    """``[S][N]`` each token's score at each stage, ``nan`` where it did not reach the stage."""
    rows = []
    for positions, scores in zip(explanation.scored_positions, explanation.scores):
        row = [math.nan] * explanation.length
        for p, score in zip(positions, scores):
            row[p] = score
        rows.append(row)
    return rows


def render_png(explanation: Explanation, path: str | Path) -> Path:
    """Draw ``explanation`` to ``path`` (``png_size`` pixels, headless Agg backend), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch
    from PIL import Image

    n, stages = explanation.length, len(explanation.stage_layers)
    labels = [f"L{layer}" for layer in explanation.stage_layers]
    extent = (-0.5, n - 0.5, stages - 0.5, -0.5)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH_IN, _height_in(stages)), dpi=DPI, sharex=True,
                                      gridspec_kw=dict(left=0.05, right=0.9, top=0.84, bottom=0.12, hspace=0.3))
    top.imshow(np.array(status_rows(explanation)), aspect="auto", interpolation="antialiased", extent=extent)
    top.set_title("kept at each stage (pruning happens before the layer)", fontsize=9, loc="left")
    scores = np.ma.masked_invalid(np.array(score_rows(explanation), dtype=float))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
    image = bottom.imshow(scores, aspect="auto", interpolation="antialiased", extent=extent, cmap=cmap)
    bottom.set_title("score of each token that reached the stage (higher = keep; grey: dropped before)", fontsize=9, loc="left")
    bar = fig.add_axes((0.915, 0.12, 0.01, 0.3))
    fig.colorbar(image, cax=bar).ax.tick_params(labelsize=7)
    for ax in (top, bottom):
        ax.set_yticks(range(stages), labels, fontsize=8)
    for p in explanation.highlight:  # ticks above the top panel: lines over the cells would hide them
        top.axvspan(p - 0.5, p + 0.5, ymin=1.0, ymax=1.06, color=HIGHLIGHT, clip_on=False)
    if explanation.highlight:
        top.plot([sum(explanation.highlight) / len(explanation.highlight)], [1.1], marker="v", color=HIGHLIGHT,
                 markersize=7, transform=top.get_xaxis_transform(), clip_on=False)
    bottom.set_xlabel("token position", fontsize=9)
    bottom.tick_params(axis="x", labelsize=8)
    counts = ", ".join(f"{label}: {count}" for label, count in zip(labels, explanation.kept_counts))
    model = explanation.meta.get("base_model") or "model"
    fig.suptitle(f"{model}: {n} tokens; kept per stage: {counts}", fontsize=10, x=0.05, ha="left")
    legend = [Patch(color=KEPT, label="kept"), Patch(color=PROTECTED, label="kept (protected)"),
              Patch(color=DROPPED, label="dropped here"), Patch(facecolor=GONE, edgecolor="#999999", label="dropped before")]
    if explanation.highlight:
        legend.append(Patch(color=HIGHLIGHT, label=f"highlight: {_short(explanation.highlight_text)}"))
    fig.legend(handles=legend, loc="upper right", ncol=len(legend), fontsize=8, frameon=False, bbox_to_anchor=(0.9, 0.97))
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI)  # no bbox_inches="tight": the size stays png_size
    finally:
        plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        # a 256-colour palette (Pillow ships with matplotlib): the antialiased score panel of a long prompt
        # is noise to PNG's compressor, 330 KB in full colour for the demo's prompt, 190 KB with a palette
        Image.open(buffer).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(tmp, optimize=True)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _short(text: str | None, limit: int = 40) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
