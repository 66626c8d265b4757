"""The ablation table of docs/training.md from ``recipes/ablation.sh``'s runs (markdown on stdout).

    python recipes/ablation_table.py OUT [ARM ...]      # default arms: every OUT/<arm>/eval found

Each arm folder holds the adapter (``trainer_state.json``) and ``eval/`` with ``compare-<model>.json``
(fidelity per genre on held-out windows, all arms on the same windows) and ``suite-<model>.json``
(held-out tasks). The tables:

1. fidelity per genre: the arm's dNLL and KL, mean [95% interval over windows];
2. paired differences per genre, SDTP minus recency (the rule to beat) and the arm minus the first arm
   (``paper``), dNLL points, ``*`` where the paired interval excludes zero (below zero: the arm is better);
3. held-out tasks: accuracy of the arm and the unpruned model per QA task, the arm minus recency and minus the
   first arm, summary ROUGE-L against the unpruned summary and the degenerate share, and the arm minus
   recency, paired by prompt;
4. training: distinct samples the joint steps drew, joint steps, median seconds per joint step and the mean
   L_lm of the last 10 steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from sdtp_adapter.bench.genre_fidelity import TRAINED, interval_cell, paired_cell
from sdtp_adapter.bench.suite_stats import BASE, RECENCY


def load_arm(folder: Path) -> dict:
    """``{compare, suite, state}`` of one arm (``None`` for a file not written yet)."""
    def one(pattern: str):
        found = sorted((folder / "eval").glob(pattern)) if (folder / "eval").is_dir() else []
        return json.loads(found[0].read_text())["results"] if found else None

    state = folder / "trainer_state.json"
    return {"compare": one("compare-*.json"), "suite": one("suite-*.json"),
            "state": json.loads(state.read_text()) if state.is_file() else None}


def cell(c: dict, fmt: str = "+.2f") -> str:
    return f"{c['mean']:{fmt}} [{c['low']:{fmt}}, {c['high']:{fmt}}]"


def paired(c: dict, fmt: str = "+.2f") -> str:
    return f"{c['diff']:{fmt}} [{c['low']:{fmt}}, {c['high']:{fmt}}]" + (" *" if c["excludes_zero"] else "")


def fidelity_tables(arms: dict[str, dict]) -> list[str]:
    """Tables 1 and 2 over the genres every arm's compare JSON has, in the first arm's order."""
    measured = {a: d["compare"] for a, d in arms.items() if d["compare"]}
    if not measured:
        return ["No fidelity results yet."]
    genres = [g for g in next(iter(measured.values()))["genres"] if all(g in r["genres"] for r in measured.values())]
    first = next(iter(measured))
    lines = ["| arm | " + " | ".join(f"{g}: dNLL % | {g}: KL" for g in genres) + " |",
             "|---|" + "---|---|" * len(genres)]
    for arm, res in measured.items():
        row = []
        for g in genres:
            m = res["genres"][g]["methods"][TRAINED]
            row += [cell(m["delta_nll_pct"]), cell(m["kl"], ".4f")]
        lines.append(f"| {arm} | " + " | ".join(row) + " |")
    lines += ["", "| arm | " + " | ".join(f"{g}: SDTP - recency | {g}: arm - {first}" for g in genres) + " |",
              "|---|" + "---|---|" * len(genres)]
    for arm, res in measured.items():
        row = []
        for g in genres:
            methods = res["genres"][g]["methods"]
            own = methods[TRAINED]["per_window"]["delta_nll_pct"]
            ref = measured[first]["genres"][g]["methods"][TRAINED]["per_window"]["delta_nll_pct"]
            if len(own) != len(ref):
                raise ValueError(f"arm {arm}, genre {g}: {len(own)} windows against {len(ref)} for {first}; "
                                 "the arms must be measured on the same windows")
            row += [paired(methods[RECENCY]["vs_sdtp"]["delta_nll_pct"]),
                    "—" if arm == first else paired(paired_cell(own, ref))]
        lines.append(f"| {arm} | " + " | ".join(row) + " |")
    return lines


def suite_table(arms: dict[str, dict]) -> list[str]:
    """Table 3: per QA task (lengths and buckets pooled) and the summaries."""
    measured = {a: d["suite"] for a, d in arms.items() if d["suite"]}
    if not measured:
        return ["No task-suite results yet."]
    tasks = list(next(iter(measured.values()))["accuracy"])
    first = next(iter(measured))

    def scores(res: dict, task: str, method: str) -> list[float]:
        return [res["per_prompt"][method]["score"][i] for i, s in enumerate(res["samples"]) if s["task"] == task]

    def minus_first(arm: str, task: str, fmt: str) -> str:
        """The arm's per-prompt scores on ``task`` minus the first arm's, paired by prompt."""
        if arm == first:
            return "—"
        return paired(paired_cell(scores(measured[arm], task, TRAINED), scores(measured[first], task, TRAINED)), fmt)

    head = [f"{t}: arm | {t}: unpruned | {t}: arm - recency | {t}: arm - {first}" for t in tasks]
    lines = ["| arm | " + " | ".join(head) + " | summary ROUGE-L | degenerate: arm / unpruned | ROUGE-L: arm - recency "
             f"| ROUGE-L: arm - {first} |", "|---|" + "---|---|---|---|" * len(tasks) + "---|---|---|---|"]
    for arm, res in measured.items():
        if res["samples"] != measured[first]["samples"]:
            raise ValueError(f"arm {arm}: its suite prompts differ from {first}'s; the arms must be measured on the same prompts")
        row = []
        for task in tasks:
            own = scores(res, task, TRAINED)
            row += [cell(interval_cell(own), ".2f"), cell(interval_cell(scores(res, task, BASE)), ".2f"),
                    paired(paired_cell(own, scores(res, task, RECENCY))) if RECENCY in res["per_prompt"] else "—",
                    minus_first(arm, task, "+.2f")]
        pooled = (res.get("summarization") or {}).get("all")
        if pooled:
            m = pooled["methods"]
            row += [cell(m[TRAINED]["rouge_l"], ".3f"),
                    f"{m[TRAINED]['degenerate']['mean']:.2f} / {m[BASE]['degenerate']['mean']:.2f}",
                    paired(m[RECENCY]["vs_sdtp"]["rouge_l"], "+.3f") if RECENCY in m else "—",
                    minus_first(arm, "summarization", "+.3f")]
        else:
            row += ["—"] * 4
        lines.append(f"| {arm} | " + " | ".join(row) + " |")
    return lines


def training_table(arms: dict[str, dict]) -> list[str]:
    """Table 4 from each arm's ``trainer_state.json`` (median step time: robust to pauses)."""
    lines = ["| arm | distinct samples drawn | joint steps | batch | s / step (median) | L_lm, last 10 steps |",
             "|---|---|---|---|---|---|"]
    for arm, data in arms.items():
        state = data["state"]
        if not state or "joint" not in state:  # not trained yet, or an adapter from before the joint-step record
            lines.append(f"| {arm} | — | no joint-step record | — | — | — |")
            continue
        joint, args = state["joint"], state["args"]
        last = joint[-10:]
        drawn = len({row for step in joint for row in step["rows"]})  # the state keeps no sample count of its own
        lines.append(f"| {arm} | {drawn} | {len(joint)} | {args['per_device_batch_size']} | "
                     f"{statistics.median(s['seconds'] for s in joint):.1f} | "
                     f"{sum(s['lm'] for s in last) / len(last):.3f} |")
    return lines


def table(out: Path, arms: list[str] | None = None) -> str:
    """The whole markdown for the arms under ``out`` (default: every subfolder with ``eval/``, ``paper`` first)."""
    # default order: `paper` first (the arm the others are paired against), the rest sorted
    names = arms or sorted((p.name for p in out.iterdir() if (p / "eval").is_dir()), key=lambda a: (a != "paper", a))
    if not names:
        raise ValueError(f"{out}: no arm folder with eval/ results; run recipes/ablation.sh {out} first")
    missing = [a for a in names if not (out / a).is_dir()]
    if missing:
        raise ValueError(f"arms {missing} have no folder under {out}; found: {sorted(p.name for p in out.iterdir() if p.is_dir())}")
    data = {a: load_arm(out / a) for a in names}
    parts = [["### Fidelity per genre (held-out windows)"], fidelity_tables(data), ["### Held-out tasks"],
             suite_table(data), ["### Training"], training_table(data)]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder recipes/ablation.sh wrote")
    parser.add_argument("arms", nargs="*", help="arms in table order (default: every arm folder with eval/ results, paper first, the rest sorted)")
    args = parser.parse_args(argv)
    print(table(args.out, args.arms or None), end="")


if __name__ == "__main__":
    main()
