"""The held-out suite against measured speed over keep ratios: where the quality targets hold, and at what speedup.

Issue 12's fallback when a target fails at the shipped budget: run ``sdtp bench suite --keep-ratio R`` at
several ratios and ``sdtp bench sweep`` over the same ratios (it times every schedule, interleaved with the
unpruned base), then ``recipes/suite_pareto.py`` joins them here. A row is one suite run and one pruning method
(the trained modules and each training-free scorer that ran): its QA accuracy per task and length with the
95% interval and the share of the unpruned model's accuracy on the same prompts, its summaries (ROUGE-L against
the unpruned summary, degenerate share), the suite's target verdicts (SDTP rows), and the prefill speedup the
sweep measured for the same scorer on the same layers and keep ratio (``None`` where the sweep has no such point).
"""

from __future__ import annotations

from pathlib import Path

from ..pruning.scorers import SCORER_IDS
from .methods import BASE, TRAINED
from .plotting import pyplot, save_figure

QA_TASKS = ("retrieval", "second_turn")  # the answerable QA tasks (aggregation: the unpruned 135M model scores 0)
SWEEP_LABELS = {TRAINED: "SDTP", **{name: scorer_id for scorer_id, name in SCORER_IDS.items()}}  # suite name -> sweep label
VERDICTS = ("long_context", "summary_degenerate", "summary_rouge")


def qa_cell(accuracy: dict, task: str, length: str, method: str) -> dict | None:
    """The task's accuracy over every depth bucket of one length (``{"mean", "low", "high", "ratio"}``), or None.

    A task with one bucket (the second turn: the fact is always near the start) has no ``all`` entry.
    """
    buckets = accuracy.get(task, {}).get(length)
    if not buckets:
        return None
    cell = buckets.get("all") or (next(iter(buckets.values())) if len(buckets) == 1 else None)
    return None if cell is None else cell["methods"].get(method)


def sweep_speedup(sweep: dict | None, method: str, layers: list[int], keep_ratio: float) -> float | None:
    """The sweep's measured prefill speedup of ``method`` (a suite method name) on ``layers`` at ``keep_ratio``."""
    if sweep is None or method not in SWEEP_LABELS:
        return None
    for point in sweep["points"]:
        if point["scorer"] == SWEEP_LABELS[method] and point["layers"] == layers and abs(point["keep_ratio"] - keep_ratio) < 1e-9:
            return point["speedup"]
    return None


def pareto_rows(suites: list[dict], sweep: dict | None) -> list[dict]:
    """One row per suite run and pruning method, sorted by keep ratio (descending), SDTP first within a run.

    Args:
        suites: ``results`` of ``sdtp bench suite`` runs of one model (any keep ratios, any methods).
        sweep: ``results`` of ``sdtp bench sweep`` of the same model, or None (no speedups).
    Raises:
        ValueError: the runs are of different models or prompt lengths, or two runs share a keep ratio.
    """
    if not suites:
        raise ValueError("suites is empty; allowed: one or more `sdtp bench suite` results")
    models, lengths = {s["model"] for s in suites}, {tuple(s["lengths"]) for s in suites}
    if len(models) > 1 or len(lengths) > 1:
        raise ValueError(f"suites mix models {sorted(models)} or prompt lengths {sorted(lengths)}; allowed: one model at one set of lengths")
    if sweep is not None and sweep["model"] not in models:
        raise ValueError(f"sweep is of model {sweep['model']!r}, the suites of {sorted(models)!r}; allowed: the same model")
    ratios = [s["schedule"]["keep_ratio"] for s in suites]
    if len(set(ratios)) < len(ratios):
        raise ValueError(f"two suite runs share a keep ratio ({sorted(ratios)}); allowed: one run per keep ratio")
    rows = []
    for suite in sorted(suites, key=lambda s: -s["schedule"]["keep_ratio"]):
        schedule, summaries = suite["schedule"], suite["summarization"] if "summarization" in suite["tasks"] else None
        cells = [(task, str(length)) for task in QA_TASKS for length in suite["lengths"]]
        base = {cell: qa_cell(suite["accuracy"], *cell, BASE) for cell in cells}
        for method in [m for m in suite["methods"] if m != BASE]:
            qa = {(task, length): {"method": qa_cell(suite["accuracy"], task, length, method), "base": base[task, length]}
                  for task, length in cells}
            rows.append({
                "keep_ratio": schedule["keep_ratio"], "kept_share": suite["kept_share"][method], "method": method,
                "prompts": suite["prompts"], "speedup": sweep_speedup(sweep, method, schedule["layers"], schedule["keep_ratio"]),
                "qa": {f"{task}@{length}": cell for (task, length), cell in qa.items() if cell["method"] is not None},
                "rouge_l": summaries["all"]["methods"][method]["rouge_l"] if summaries else None,
                "degenerate": {n: summaries[str(n)]["methods"][method]["degenerate"]["mean"] for n in suite["lengths"]} if summaries else None,
                "degenerate_base": {n: summaries[str(n)]["methods"][BASE]["degenerate"]["mean"] for n in suite["lengths"]} if summaries else None,
                "verdict": {k: suite["verdict"][k]["met"] for k in VERDICTS if k in suite["verdict"]} if method == TRAINED else None,
            })
    return rows


def _pct(cell: dict) -> str:
    return f"{cell['mean']:.2f} [{cell['low']:.2f}, {cell['high']:.2f}]"


def render(rows: list[dict], speed_tokens: int | None) -> list[str]:
    """Markdown: the QA table (accuracy, interval, share of unpruned) and the summaries/verdicts table."""
    cells = list(dict.fromkeys(key for row in rows for key in row["qa"]))
    speed = f"prefill speedup at {speed_tokens} tokens" if speed_tokens else "prefill speedup"
    lines = [
        "| keep ratio (share per layer) | method | " + " | ".join(c.replace("_", " ").replace("@", " ") for c in cells) + f" | {speed} |",
        "|---|---|" + "---|" * len(cells) + "---|",
    ]
    for row in rows:
        qa = []
        for key in cells:
            cell = row["qa"].get(key)
            if cell is None:
                qa.append("")
                continue
            share = f"{cell['method']['ratio']:.0%} of {cell['base']['mean']:.2f}" if cell["method"].get("ratio") is not None else "unpruned 0"
            qa.append(f"{_pct(cell['method'])}, {share}")
        speedup = f"{row['speedup']:.2f}x" if row["speedup"] is not None else "not measured"
        lines.append(f"| {row['keep_ratio']:g} ({row['kept_share']:.2f}) | {row['method']} | " + " | ".join(qa) + f" | {speedup} |")
    lines += ["", "| keep ratio | method | summaries: ROUGE-L vs unpruned | degenerate (unpruned) per length | targets met (long context / degenerate / ROUGE-L) |",
              "|---|---|---|---|---|"]
    for row in rows:
        rouge = _pct(row["rouge_l"]) if row["rouge_l"] else ""
        degenerate = ", ".join(f"{row['degenerate'][n]:.2f} ({row['degenerate_base'][n]:.2f})" for n in row["degenerate"]) if row["degenerate"] else ""
        verdict = " / ".join("yes" if row["verdict"].get(k) else "no" for k in VERDICTS) if row["verdict"] else ""
        lines.append(f"| {row['keep_ratio']:g} | {row['method']} | {rouge} | {degenerate} | {verdict} |")
    return lines


def plot(rows: list[dict], directory: Path, name: str = "suite-pareto.png") -> Path:
    """QA accuracy as a share of unpruned (mean over task x length cells) and ROUGE-L against measured speedup."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r for r in rows if r["method"] == method and r["speedup"] is not None), key=lambda r: r["speedup"])
        if not points:
            continue
        xs = [r["speedup"] for r in points]
        shares = [_mean_share(r) for r in points]
        axes[0].plot(xs, shares, marker="o", label=method)
        if all(r["rouge_l"] for r in points):
            axes[1].plot(xs, [r["rouge_l"]["mean"] for r in points], marker="o", label=method)
        for r, y in zip(points, shares):
            axes[0].annotate(f"{r['keep_ratio']:g}", (r["speedup"], y), fontsize=7)
    axes[0].axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
    axes[0].set(xlabel="measured prefill speedup", ylabel="QA accuracy / unpruned (mean of cells, each capped at 1)")
    axes[1].set(xlabel="measured prefill speedup", ylabel="summary ROUGE-L vs unpruned")
    if axes[0].get_legend_handles_labels()[0]:  # no run with a measured speedup: an empty plot, no legend
        axes[0].legend(fontsize=7)
    return save_figure(fig, name, directory)


def _mean_share(row: dict) -> float:
    """Mean over the row's QA cells of its share of unpruned, capped at 1 per cell (a cell above the unpruned model
    does not make up for one below it); cells the unpruned model never answers are left out."""
    ratios = [min(c["method"]["ratio"], 1.0) for c in row["qa"].values() if c["method"].get("ratio") is not None]
    return sum(ratios) / len(ratios) if ratios else float("nan")
