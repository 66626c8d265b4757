"""Quality against speed over keep ratios and stage placements, as a Pareto plot (``sdtp bench sweep``).

Every point is the shipped adapter's trained modules on a subset of its stage layers with a per-stage
keep ratio r; the recency scorer on the same schedule is measured alongside as the reference a learned
scorer has to beat. Quality is continuation fidelity on held-out windows (``compare_methods``); speed is
the measured prefill speedup at ``--speed-tokens``, every point interleaved with the unpruned base.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from ..architectures import model_dims
from ..planning.placements import placements  # named subsets of the adapter's stages (trained modules exist only there)
from ..pruning.scorers import recency_scorer
from ..timing import interleaved
from .common import add_model_arguments, heldout_ids, heldout_windows, load_sdtp, model_label
from .fidelity import compare_methods
from .flops import flops_speedup_bound
from .meta import results_dir, run_meta, write_results
from .methods import Method
from .plotting import pyplot, save_figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--keep-ratios", type=float, nargs="+", default=[0.95, 0.9, 0.85, 0.8], help="per-stage keep ratios, each in (0, 1]")
    parser.add_argument("--windows", type=int, default=6, help="held-out prose windows for fidelity")
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


def sweep_points(sdtp, windows: list[torch.Tensor], prefix: int, ids: torch.Tensor, keep_ratios: list[float], repeats: int) -> tuple[list[dict], dict]:
    """Fidelity and measured speedup of every (placement, keep ratio) point, trained and recency scorers.

    Args:
        windows: ``[1, prefix + C]`` fidelity windows; ids: ``[1, T]`` prompt for the timed prefills.
    Returns:
        ``(points, extras)``; ``extras`` holds the base NLL and the base prefill seconds.
    """
    for r in keep_ratios:
        if not 0.0 < r <= 1.0:
            raise ValueError(f"keep_ratios: {r} must be in (0, 1]")
    dims = model_dims(sdtp.base_model)
    grid = [(name, layers, r) for name, layers in placements(sdtp.schedule.layers).items() for r in keep_ratios]
    trained = [Method(f"SDTP | {name} | r={r}", layers=layers, keep_ratio=r) for name, layers, r in grid]
    recent = [Method(f"recency | {name} | r={r}", scorer=recency_scorer, layers=layers, keep_ratio=r) for name, layers, r in grid]
    fidelity = compare_methods(sdtp, windows, prefix, trained + recent)

    def prefill(method: Method | None):
        def go():
            guard = method.activate(sdtp) if method else sdtp.disable_pruning()
            with torch.inference_mode(), guard:
                sdtp(ids, use_cache=True, logits_to_keep=1)

        return go

    # one timing per schedule: the scorer choice barely changes the cost
    times = interleaved({"base": prefill(None)} | {m.name: prefill(m) for m in trained}, repeats, warmup=1)
    points = []
    for (name, layers, r), method in zip(grid, trained):
        with sdtp.use_schedule(layers, r):
            bound = flops_speedup_bound(dims, sdtp.active_schedule, ids.shape[1], sdtp.sdtp_config.pruner_hidden_size)
        for scorer in ("SDTP", "recency"):
            f = fidelity[f"{scorer} | {name} | r={r}"]
            points.append({
                "scorer": scorer, "placement": name, "layers": list(layers), "keep_ratio": r,
                "kept_share": f.kept_share, "delta_nll_pct": f.delta_nll_pct, "top1": f.top1, "kl": f.kl,
                "speedup": statistics.median(times["base"]) / statistics.median(times[method.name]), "flops_bound": bound,
            })
    for p, front in zip(points, pareto_front(points)):
        p["pareto"] = front
    return points, {"base_nll": fidelity[trained[0].name].base_nll, "base_prefill_s": statistics.median(times["base"])}


def run(args: argparse.Namespace) -> dict:
    """Measure every point; writes ``sweep.json`` and the Pareto plot to ``args.out``."""
    directory = results_dir(args)
    sdtp, tokenizer = load_sdtp(args.model, args.adapter, getattr(args, "revision", None))
    windows = heldout_windows(tokenizer, args.windows, args.prefix + args.continuation)
    ids = heldout_ids(tokenizer, args.speed_tokens)
    points, extras = sweep_points(sdtp, windows, args.prefix, ids, args.keep_ratios, args.repeats)
    results = {
        "model": model_label(args.model), "prefix": args.prefix, "continuation": args.continuation, "windows": args.windows,
        "speed_tokens": args.speed_tokens, "repeats": args.repeats, **extras, "points": points, "adapter": args.adapter,
    }
    data = {"meta": run_meta(args.command_line), "results": results}
    write_results("sweep", data["meta"], results, directory)
    plot(data, directory)
    return data


def plot(data: dict, directory: Path) -> None:
    """``sweep-pareto.png`` in ``directory``: dNLL against measured speedup, one line per placement and scorer."""
    plt = pyplot()
    res = data["results"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(dict.fromkeys(p["placement"] for p in res["points"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, name in zip(colors, names):
        for scorer, marker, fill in (("SDTP", "o", color), ("recency", "s", "none")):
            pts = sorted((p for p in res["points"] if p["placement"] == name and p["scorer"] == scorer), key=lambda p: p["speedup"])
            ax.plot([p["speedup"] for p in pts], [p["delta_nll_pct"] for p in pts], marker=marker, color=color,
                    markerfacecolor=fill, linestyle="-" if scorer == "SDTP" else ":", label=f"{scorer}, {name}")
            for p in pts:
                ax.annotate(f"{p['keep_ratio']}", (p["speedup"], p["delta_nll_pct"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"measured prefill speedup at {res['speed_tokens']} tokens")
    ax.set_ylabel(f"continuation dNLL (%) after a {res['prefix']}-token prefix")
    ax.set_title("Quality vs speed: keep ratio r (labels) x stage placement")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    save_figure(fig, "sweep-pareto.png", directory)


def _adapter(res: dict) -> str:
    return f"adapter {res['adapter']}'s" if res.get("adapter") else "shipped adapter's"


def render(data: dict) -> list[str]:
    res = data["results"]
    lines = [
        "## Sweep: keep ratio x stage placement",
        "",
        f"{res['model']}, {_adapter(res)} modules on subsets of its stage layers. Quality: {res['windows']} "
        f"held-out windows, {res['prefix']}-token prefix + {res['continuation']} (unpruned NLL {res['base_nll']:.3f}); "
        f"speed: prefill of {res['speed_tokens']} held-out tokens, {res['repeats']} interleaved rounds against the "
        f"base ({1000 * res['base_prefill_s']:.0f} ms). The recency scorer runs on every schedule too. "
        "Bold: on the Pareto front (no other point is faster with lower dNLL).",
        "",
        "| scorer | placement | r | layers | kept share | speedup | FLOPs bound | dNLL | top-1 | KL |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in res["points"]:
        cells = [p["scorer"], p["placement"], f"{p['keep_ratio']}", ",".join(map(str, p["layers"])), f"{p['kept_share']:.2f}",
                 f"{p['speedup']:.2f}x", f"{p['flops_bound']:.2f}x", f"{p['delta_nll_pct']:+.2f}%", f"{p['top1']:.3f}", f"{p['kl']:.3f}"]
        if p["pareto"]:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![Pareto plot](benchmarks/sweep-pareto.png)"]
    return lines
