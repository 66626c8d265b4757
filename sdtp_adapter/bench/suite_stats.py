"""Intervals, paired differences and target verdicts of the held-out suite (``bench.suite``).

Every figure is a mean over prompts with its 95% percentile-bootstrap interval over prompts
(``genre_fidelity.interval_cell``, i.e. ``bench.intervals``). Comparisons are paired by prompt (the
same resampled prompts for both methods, ``genre_fidelity.paired_cell``): SDTP is "better" than a
method only when the interval of SDTP minus the method excludes zero on the right side. The accuracy
target "at least 95% of the unpruned model" is checked on the means (``sdtp >= 0.95 * base``) and
carries the paired interval of ``sdtp - 0.95 * base`` over prompts: above zero, the target holds
beyond sampling noise; below zero, it fails beyond it; across zero, these prompts cannot tell.
"""

from __future__ import annotations

from ..data.eval_tasks import BUCKETS, QA_TASKS, SPREAD, WHOLE
from .genre_fidelity import BOOTSTRAP_SEED, LEVEL, RESAMPLES, interval_cell, paired_cell
from ..pruning.scorers import RECENCY
from .methods import BASE, TRAINED

TARGET_RATIO = 0.95
ALL = "all"  # every depth bucket (or every length) pooled
BUCKET_ORDER = (*BUCKETS, SPREAD, WHOLE)
INTERVALS = {
    "level": LEVEL, "resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "unit": "prompt",
    "method": "percentile bootstrap over prompts; paired: the same resampled prompts for both methods",
    "paired_difference": f"{TRAINED} minus the method (accuracy, ROUGE-L: above zero, SDTP better; degenerate share: below zero)",
    "margin": f"method minus {TARGET_RATIO} x the unpruned model, paired by prompt",
}


def summarize(samples: list[dict], evaluation: dict) -> dict:
    """``{accuracy, summarization, intervals}`` from ``suite.evaluate``'s per-prompt scores.

    ``accuracy[task][length][bucket]`` (QA tasks; buckets as the samples have them, plus ``all``
    where a task has several) and ``summarization[length]`` (plus ``all``) are ``accuracy_cell`` /
    ``summary_cell`` over those prompts; lengths are strings (JSON keys).
    """
    methods, per_prompt = evaluation["methods"], evaluation["per_prompt"]
    lengths = list(dict.fromkeys(str(s["length"]) for s in samples))
    accuracy = {}
    for task in (t for t in QA_TASKS if any(s["task"] == t for s in samples)):
        accuracy[task] = {}
        for length in lengths:
            rows = [i for i, s in enumerate(samples) if s["task"] == task and str(s["length"]) == length]
            if not rows:
                continue
            buckets = sorted({samples[i]["bucket"] for i in rows}, key=BUCKET_ORDER.index)
            cells = {b: [i for i in rows if samples[i]["bucket"] == b] for b in buckets}
            if len(buckets) > 1:
                cells[ALL] = rows
            extra = ("recall",) if task == "aggregation" else ()
            accuracy[task][length] = {b: accuracy_cell(idx, per_prompt, methods, extra) for b, idx in cells.items()}
    summaries = [i for i, s in enumerate(samples) if s["task"] == "summarization"]
    summarization = {}
    if summaries:
        for length in lengths:
            rows = [i for i in summaries if str(samples[i]["length"]) == length]
            if rows:
                summarization[length] = summary_cell(rows, per_prompt, methods)
        summarization[ALL] = summary_cell(summaries, per_prompt, methods)
    return {"accuracy": accuracy, "summarization": summarization, "intervals": INTERVALS}


def _values(per_prompt: dict, method: str, key: str, rows: list[int]) -> list[float]:
    return [float(per_prompt[method][key][i]) for i in rows]


def accuracy_cell(rows: list[int], per_prompt: dict, methods: list[str], extra: tuple[str, ...] = ()) -> dict:
    """``{n, methods: {name: {mean, low, high, ratio, margin, vs_sdtp}}}`` over the prompts ``rows``.

    ``ratio``: mean over the base's mean (``None`` where the base scores 0); ``margin`` (not for the
    base): ``paired_cell(method, 0.95 x base)``; ``vs_sdtp`` (not for SDTP, absent without it):
    ``paired_cell(SDTP, method)``; each per-prompt figure named in ``extra`` (e.g. ``recall``) adds
    its own interval cell.
    """
    base = _values(per_prompt, BASE, "score", rows)
    sdtp = _values(per_prompt, TRAINED, "score", rows) if TRAINED in methods else None
    base_mean = sum(base) / len(base)
    out = {}
    for name in methods:
        values = _values(per_prompt, name, "score", rows)
        entry = interval_cell(values)
        entry["ratio"] = entry["mean"] / base_mean if base_mean > 0 else None
        if name != BASE:
            entry["margin"] = paired_cell(values, [TARGET_RATIO * b for b in base])
        if sdtp is not None and name != TRAINED:
            entry["vs_sdtp"] = paired_cell(sdtp, values)
        for key in extra:
            entry[key] = interval_cell(_values(per_prompt, name, key, rows))
        out[name] = entry
    return {"n": len(rows), "methods": out}


def summary_cell(rows: list[int], per_prompt: dict, methods: list[str]) -> dict:
    """``{n, methods: {name: {rouge_l, degenerate, new_tokens, vs_sdtp}}}`` over the summary prompts ``rows``.

    ``rouge_l`` and ``degenerate`` (share of degenerate outputs) are interval cells; ``vs_sdtp`` holds
    the paired cells of SDTP minus the method for both (not for SDTP, absent without it).
    """
    out = {}
    for name in methods:
        entry = {
            "rouge_l": interval_cell(_values(per_prompt, name, "score", rows)),
            "degenerate": interval_cell(_values(per_prompt, name, "degenerate", rows)),
            "new_tokens": sum(_values(per_prompt, name, "new_tokens", rows)) / len(rows),
        }
        if TRAINED in methods and name != TRAINED:
            entry["vs_sdtp"] = {key: paired_cell(_values(per_prompt, TRAINED, key, rows), _values(per_prompt, name, key, rows))
                                for key in ("score", "degenerate")}
            entry["vs_sdtp"]["rouge_l"] = entry["vs_sdtp"].pop("score")
        out[name] = entry
    return {"n": len(rows), "methods": out}


def verdict(results: dict) -> dict:
    """The issue's targets for SDTP (trained), checked on the measured figures (reported, not asserted).

    - ``long_context``: at every QA task, length and depth bucket, SDTP's accuracy >= 0.95 x the base's;
    - ``summary_degenerate``: at every length, SDTP's degenerate share <= the base's;
    - ``summary_rouge``: SDTP's ROUGE-L (all lengths) higher than recency's, the paired interval above zero;
    - ``lm_eval`` (with ``--lm-eval``): at every length, SDTP's accuracy >= 0.95 x the base's.

    Each entry: ``{target, met, checks}``; a check gives the figures and ``confident`` (its paired
    interval excludes zero). Targets whose methods did not run are left out.
    """
    if TRAINED not in results["methods"]:
        return {}
    out = {}
    checks = []
    for task, by_length in results["accuracy"].items():
        for length, by_bucket in by_length.items():
            for bucket, cell in by_bucket.items():
                if bucket != ALL:
                    checks.append(_ratio_check(cell["methods"][TRAINED], cell["methods"][BASE]["mean"], cell["n"])
                                  | {"task": task, "length": length, "bucket": bucket})
    if checks:
        out["long_context"] = {"target": f"accuracy >= {TARGET_RATIO:.0%} of the unpruned model at every task, length and depth bucket",
                               "met": all(c["met"] for c in checks), "checks": checks}
    summaries = results.get("summarization") or {}
    per_length = {k: v for k, v in summaries.items() if k != ALL}
    if per_length:
        degenerate = []
        for length, cell in per_length.items():
            sdtp, base = cell["methods"][TRAINED]["degenerate"]["mean"], cell["methods"][BASE]["degenerate"]["mean"]
            degenerate.append({"length": length, "sdtp": sdtp, "base": base, "met": sdtp <= base,
                               "difference": cell["methods"][BASE]["vs_sdtp"]["degenerate"]})
        out["summary_degenerate"] = {"target": "share of degenerate summaries no higher than the unpruned model's at every length",
                                     "met": all(c["met"] for c in degenerate), "checks": degenerate}
        pooled = summaries[ALL]["methods"]
        if RECENCY in pooled:
            diff = pooled[RECENCY]["vs_sdtp"]["rouge_l"]
            out["summary_rouge"] = {
                "target": "ROUGE-L against the unpruned summary higher than recency's (paired interval above zero, all lengths)",
                "met": diff["low"] > 0,
                "checks": [{"length": ALL, "sdtp": pooled[TRAINED]["rouge_l"]["mean"], "recency": pooled[RECENCY]["rouge_l"]["mean"],
                            "difference": diff, "met": diff["low"] > 0}],
            }
    lm_eval = results.get("lm_eval")
    if lm_eval:
        lm_checks = [_ratio_check(cell["pruned"], cell["unpruned"]["mean"], cell["n"]) | {"length": length}
                     for length, cell in lm_eval["accuracy"].items() if length != ALL]
        out["lm_eval"] = {"target": f"lm-eval HFLM accuracy >= {TARGET_RATIO:.0%} of the unpruned model at every length",
                          "met": all(c["met"] for c in lm_checks), "checks": lm_checks}
    return out


def _ratio_check(method: dict, base_mean: float, n: int) -> dict:
    """One ``>= 0.95 x base`` check: the means, the ratio, the margin interval and whether it is confident."""
    margin = method["margin"]
    return {"n": n, "sdtp": method["mean"], "base": base_mean, "ratio": method["ratio"], "margin": margin,
            "met": method["mean"] >= TARGET_RATIO * base_mean - 1e-12, "confident": margin["excludes_zero"],
            "uninformative": base_mean == 0}
