"""Quality against speed over keep ratios and stage placements, as a Pareto plot (``sdtp bench sweep``).

Every point is the adapter's trained modules on a subset of its stage layers (``--placements``) with a
per-stage keep ratio r; training-free scorers on the same schedule (``--scorers``, default recency) are
measured alongside as the reference a learned scorer has to beat. Quality is continuation fidelity on
held-out windows (``genre_fidelity.score_windows``): the held-out plays, or ``--genres`` pooled with the
same number of windows each, every figure with its 95% bootstrap interval over windows and the paired
difference of SDTP minus each scorer at the same schedule. Speed is the measured prefill speedup at
``--speed-tokens``, every point interleaved with the unpruned base.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from ..architectures import model_dims
from ..data import genres as genre_registry
from ..planning.placements import SUBSETS, placements  # named subsets of the adapter's stages (trained modules exist only there)
from ..pruning.scorers import SCORER_IDS, scorers_for
from ..timing import interleaved
from .common import add_model_arguments, heldout_ids, heldout_windows, load_sdtp, model_label
from .flops import flops_speedup_bound
from .genre_fidelity import genre_source, genre_windows, interval_cell, paired_cell, pooled, requested_genres, score_windows, window_values
from .meta import results_dir, run_meta, write_results
from .methods import Method
from .plotting import pyplot, save_figure

# --scorers ids (also their label in the points) -> name in ``scorers.scorers_for``
SCORERS = {i: SCORER_IDS[i] for i in ("recency", "norm", "last-query", "random")}
PLAYS = "plays"  # without --genres: the held-out plays, as before genres existed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--keep-ratios", type=float, nargs="+", default=[0.95, 0.9, 0.85, 0.8], help="per-stage keep ratios, each in (0, 1]")
    parser.add_argument("--placements", nargs="+", default=list(SUBSETS), choices=list(SUBSETS), metavar="PLACEMENT",
                        help=f"subsets of the adapter's stages (allowed: {', '.join(repr(k) for k in SUBSETS)}; default: all four)")
    parser.add_argument("--scorers", nargs="+", default=["recency"], choices=list(SCORERS),
                        help="training-free scorers measured on every schedule beside the trained modules (default: recency)")
    parser.add_argument("--genres", nargs="+", default=None, metavar="GENRE",
                        help=f"genres whose held-out windows are pooled, --windows each (allowed: {', '.join(genre_registry.GENRES)}; "
                        "default: the held-out plays)")
    parser.add_argument("--windows", type=int, default=6, help="held-out prose windows for fidelity (per genre with --genres)")
    parser.add_argument("--prefix", type=int, default=2048, help="prompt tokens of each window (pruned)")
    parser.add_argument("--continuation", type=int, default=128, help="tokens after the prompt scored against the unpruned model")
    parser.add_argument("--speed-tokens", type=int, default=4096, help="prompt length of the timed prefills")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds per point")


def pareto_front(points: list[dict]) -> list[bool]:
    """Whether each point is non-dominated: no other point is at least as fast with at most its dNLL
    and strictly better in one of the two."""
    flags = []
    for p in points:
        dominated = any(
            q["speedup"] >= p["speedup"] and q["delta_nll_pct"] <= p["delta_nll_pct"]
            and (q["speedup"] > p["speedup"] or q["delta_nll_pct"] < p["delta_nll_pct"])
            for q in points
        )
        flags.append(not dominated)
    return flags


def sweep_points(
    sdtp, windows: dict[str, list[torch.Tensor]], prefix: int, ids: torch.Tensor, keep_ratios: list[float], repeats: int,
    kinds: list[str] | None = None, scorer_ids: list[str] | None = None,
) -> tuple[list[dict], dict]:
    """Fidelity (with intervals) and measured speedup of every (placement, keep ratio) point, per scorer.

    Args:
        windows: ``{genre: [1, prefix + C] windows}``, pooled (each window counts once).
        ids: ``[1, T]`` prompt for the timed prefills.
        kinds: placement kinds (keys of ``placements.SUBSETS``; default all).
        scorer_ids: training-free scorers (keys of ``SCORERS``; default recency).
    Returns:
        ``(points, extras)``: a point per scorer (``SDTP`` first) and schedule with ``delta_nll_pct``,
        ``kl`` and ``top1`` means, ``intervals`` ``{figure: [low, high]}``, ``genres`` ``{genre: dNLL
        mean}``, ``vs_sdtp`` (training-free scorers) ``{figure: paired cell of SDTP minus it}``, kept
        share, speedup, FLOPs bound and ``pareto``; ``extras`` holds the base NLL (mean over genres)
        and the base prefill seconds.
    """
    for r in keep_ratios:
        if not 0.0 < r <= 1.0:
            raise ValueError(f"keep_ratios: {r} must be in (0, 1]")
    scorer_ids = list(dict.fromkeys(scorer_ids or ["recency"]))
    unknown = [i for i in scorer_ids if i not in SCORERS]
    if unknown:
        raise ValueError(f"scorers {unknown} are unknown; allowed: {', '.join(SCORERS)}")
    dims = model_dims(sdtp.base_model)
    named = placements(sdtp.schedule.layers, list(dict.fromkeys(kinds or SUBSETS)))
    grid = [(name, layers, r) for name, layers in named.items() for r in keep_ratios]
    free = scorers_for(sdtp.base_model)
    labels = ["SDTP", *scorer_ids]
    methods = {("SDTP", name, r): Method(f"SDTP | {name} | r={r}", layers=layers, keep_ratio=r) for name, layers, r in grid}
    for label in scorer_ids:
        methods |= {(label, name, r): Method(f"{label} | {name} | r={r}", scorer=free[SCORERS[label]], layers=layers, keep_ratio=r)
                    for name, layers, r in grid}
    values: dict[str, dict[str, list[float]]] = {m.name: {"delta_nll_pct": [], "kl": [], "top1": []} for m in methods.values()}
    by_genre: dict[str, dict[str, float]] = {m.name: {} for m in methods.values()}
    shares: dict[str, list[float]] = {m.name: [] for m in methods.values()}
    base_nll = {}
    for genre, cut in windows.items():
        scored = score_windows(sdtp, cut, prefix, list(methods.values()), None)
        base_nll[genre] = pooled(next(iter(scored.values()))).base_nll
        for name, per_window in scored.items():
            own = window_values(per_window, base_nll[genre])
            for figure in values[name]:
                values[name][figure] += own[figure]
            by_genre[name][genre] = statistics.fmean(own["delta_nll_pct"])
            shares[name] += [f.kept_share for f in per_window]

    def prefill(method: Method | None):
        def go():
            guard = method.activate(sdtp) if method else sdtp.disable_pruning()
            with torch.inference_mode(), guard:
                sdtp(ids, use_cache=True, logits_to_keep=1)

        return go

    # one timing per schedule: the scorer choice barely changes the cost
    trained = [methods[("SDTP", name, r)] for name, _, r in grid]
    times = interleaved({"base": prefill(None)} | {m.name: prefill(m) for m in trained}, repeats, warmup=1)
    points = []
    for (name, layers, r), timed in zip(grid, trained):
        with sdtp.use_schedule(layers, r):
            bound = flops_speedup_bound(dims, sdtp.active_schedule, ids.shape[1], sdtp.sdtp_config.pruner_hidden_size)
        for label in labels:
            method = methods[(label, name, r)].name
            own = values[method]
            cells = {figure: interval_cell(own[figure]) for figure in own}
            point = {
                "scorer": label, "placement": name, "layers": list(layers), "keep_ratio": r,
                "kept_share": statistics.fmean(shares[method]),
                **{figure: cell["mean"] for figure, cell in cells.items()},
                "intervals": {figure: [cell["low"], cell["high"]] for figure, cell in cells.items()},
                "genres": by_genre[method],
                "speedup": statistics.median(times["base"]) / statistics.median(times[timed.name]), "flops_bound": bound,
            }
            if label != "SDTP":
                point["vs_sdtp"] = {figure: paired_cell(values[timed.name][figure], own[figure]) for figure in ("delta_nll_pct", "kl")}
            points.append(point)
    for p, front in zip(points, pareto_front(points)):
        p["pareto"] = front
    return points, {"base_nll": statistics.fmean(base_nll.values()), "base_prefill_s": statistics.median(times["base"])}


def sweep_windows(tokenizer, genres: list[str] | None, count: int, length: int) -> dict[str, list[torch.Tensor]]:
    """``{genre: windows}``: ``--genres``' held-out windows (``genre_fidelity``), else the held-out plays."""
    if genres is None:
        return {PLAYS: heldout_windows(tokenizer, count, length)}
    return {name: genre_windows(tokenizer, genre_source(name, None), count, length) for name in requested_genres(genres, None)}


def run(args: argparse.Namespace) -> dict:
    """Measure every point; writes ``sweep-<model>.json`` and its Pareto plot to ``args.out``."""
    directory = results_dir(args)
    genres = getattr(args, "genres", None)
    if genres is not None:
        requested_genres(genres, None)  # an unknown or unavailable genre fails before the model loads
    sdtp, tokenizer = load_sdtp(args.model, args.adapter, getattr(args, "revision", None))
    windows = sweep_windows(tokenizer, genres, args.windows, args.prefix + args.continuation)
    ids = heldout_ids(tokenizer, args.speed_tokens)
    kinds, scorer_ids = getattr(args, "placements", None), getattr(args, "scorers", None)
    points, extras = sweep_points(sdtp, windows, args.prefix, ids, args.keep_ratios, args.repeats, kinds, scorer_ids)
    results = {
        "model": model_label(args.model), "prefix": args.prefix, "continuation": args.continuation, "windows": args.windows,
        "genres": list(windows), "speed_tokens": args.speed_tokens, "repeats": args.repeats, **extras, "points": points,
        "adapter": args.adapter,
    }
    data = {"meta": run_meta(args.command_line), "results": results}
    write_results(f"sweep-{results['model']}", data["meta"], results, directory)  # one per model: models share an --out
    plot(data, directory)
    return data


def figure_name(res: dict) -> str:
    """The plot's file name, one per model: several models' sweeps share one ``--out`` folder."""
    return f"sweep-{res['model']}-pareto.png"


def plot(data: dict, directory: Path) -> None:
    """``sweep-<model>-pareto.png`` in ``directory``: dNLL against measured speedup, one line per placement and scorer."""
    plt = pyplot()
    res = data["results"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(dict.fromkeys(p["placement"] for p in res["points"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    scorers = list(dict.fromkeys(p["scorer"] for p in res["points"]))  # SDTP first
    styles = dict(zip(scorers, zip("osD^v", ["-", ":", "--", "-.", (0, (1, 3))])))
    for color, name in zip(colors, names):
        for scorer in scorers:
            pts = sorted((p for p in res["points"] if p["placement"] == name and p["scorer"] == scorer), key=lambda p: p["speedup"])
            marker, line = styles[scorer]
            ax.plot([p["speedup"] for p in pts], [p["delta_nll_pct"] for p in pts], marker=marker, color=color,
                    markerfacecolor=color if scorer == "SDTP" else "none", linestyle=line, label=f"{scorer}, {name}")
            for p in pts:
                ax.annotate(f"{p['keep_ratio']}", (p["speedup"], p["delta_nll_pct"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"measured prefill speedup at {res['speed_tokens']} tokens")
    ax.set_ylabel(f"continuation dNLL (%) after a {res['prefix']}-token prefix")
    ax.set_title("Quality vs speed: keep ratio r (labels) x stage placement")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    save_figure(fig, figure_name(res), directory)


def _adapter(res: dict) -> str:
    return f"adapter {res['adapter']}'s" if res.get("adapter") else "shipped adapter's"


def render(data: dict) -> list[str]:
    res = data["results"]
    genres = res.get("genres") or [PLAYS]  # results before --genres: the held-out plays
    where = "held-out windows" if genres == [PLAYS] else f"held-out windows of each of {', '.join(genres)}, pooled"
    with_intervals = all("intervals" in p for p in res["points"])
    lines = [
        "## Sweep: keep ratio x stage placement",
        "",
        f"{res['model']}, {_adapter(res)} modules on subsets of its stage layers. Quality: {res['windows']} "
        f"{where}, {res['prefix']}-token prefix + {res['continuation']} (unpruned NLL {res['base_nll']:.3f}); "
        f"speed: prefill of {res['speed_tokens']} held-out tokens, {res['repeats']} interleaved rounds against the "
        f"base ({1000 * res['base_prefill_s']:.0f} ms). Training-free scorers run on every schedule too"
        + ("; cells: mean [95% bootstrap interval over windows], last column SDTP minus the scorer at the same "
           "schedule, paired by window (`*`: the interval excludes zero; below zero, SDTP is better)" if with_intervals else "")
        + ". Bold: on the Pareto front (no other point is faster with lower dNLL).",
        "",
        "| scorer | placement | r | layers | kept share | speedup | FLOPs bound | dNLL | top-1 | KL |"
        + (" SDTP - scorer: dNLL (points) |" if with_intervals else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if with_intervals else ""),
    ]
    for p in res["points"]:
        dnll, kl = f"{p['delta_nll_pct']:+.2f}%", f"{p['kl']:.3f}"
        cells = [p["scorer"], p["placement"], f"{p['keep_ratio']}", ",".join(map(str, p["layers"])), f"{p['kept_share']:.2f}",
                 f"{p['speedup']:.2f}x", f"{p['flops_bound']:.2f}x"]
        if with_intervals:
            (dl, dh), (kll, klh) = p["intervals"]["delta_nll_pct"], p["intervals"]["kl"]
            dnll, kl = f"{dnll} [{dl:+.2f}, {dh:+.2f}]", f"{kl} [{kll:.3f}, {klh:.3f}]"
        cells += [dnll, f"{p['top1']:.3f}", kl]
        if with_intervals:
            d = p.get("vs_sdtp", {}).get("delta_nll_pct")
            cells.append("—" if d is None else f"{d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" + (" *" if d["excludes_zero"] else ""))
        if p["pareto"]:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![Pareto plot](benchmarks/{figure_name(res)})"]
    return lines
