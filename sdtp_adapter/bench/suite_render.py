"""Markdown of ``sdtp bench suite`` results (``suite-<model>.json``): tables with intervals and the verdicts."""

from __future__ import annotations

from .genre_fidelity import TRAINED, interval_text
from .suite_stats import ALL, BASE, TARGET_RATIO

FEW_PROMPTS = 10  # below this per cell, a bootstrap interval is too narrow to trust
# below this per cell a verdict is provisional: percentile-bootstrap intervals over few prompts cover less than
# their nominal level, and a confident 10-prompt Gemma-3 lead (ROUGE-L at 8K) did not hold at 30 (docs/quality.md)
VERDICT_PROMPTS = 30
TASK_NOTES = {
    "retrieval": "one fact at a stratified depth, its 3-digit number asked",
    "aggregation": "three facts, one in each third of the document; exactly their three surnames must be listed",
    "second_turn": "turn 2 of a chat asks about a fact near the start of the document given in turn 1",
}


def render(data: dict) -> list[str]:
    res = data["results"]
    level = res["intervals"]["level"]
    filler = "; ".join(f"{genre}: {', '.join(docs)}" for genre, docs in res["filler"].items())
    shares = ", ".join(f"{name} {share:.2f}" for name, share in res["kept_share"].items() if name != BASE)
    schedule = res.get("schedule")  # absent in results written before --keep-ratio
    if schedule:
        shares += f"; keep ratio {schedule['keep_ratio']:g} per stage at layers {', '.join(map(str, schedule['layers']))}, " \
                  f"protected window {schedule['local_window_ratio']:g}"
    lines = [
        "## Held-out long-context suite",
        "",
        f"{res['model']}, {'adapter ' + res['adapter'] if res.get('adapter') else 'shipped adapter'}. {res['prompts']} prompts per "
        f"task and length at {', '.join(map(str, res['lengths']))} tokens, filler from held-out documents ({filler}); "
        "task phrasing, vocabulary and answer formats are disjoint from the training tasks'. Every prompt is one prefill and a "
        f"greedy answer under each method; pruning rows share the adapter's schedule (mean share of the prompt per layer: {shares}). "
        f"Cells: mean over prompts [{level:.0%} percentile-bootstrap interval over prompts].",
    ]
    lines += few_prompts_warning(res)
    for task, by_length in res["accuracy"].items():
        lines += ["", f"**{task}** ({TASK_NOTES.get(task, task)}): accuracy", "", *accuracy_table(res, by_length)]
        if task == "aggregation":
            lines += ["", "Partial credit, share of the three surnames named (extra names not penalised):", "",
                      *accuracy_table(res, by_length, "recall")]
    lines += paired_table(res) + summary_table(res) + lm_eval_table(res) + verdict_lines(res)
    return lines


def few_prompts_warning(res: dict) -> list[str]:
    """A paragraph when some cell is small: a smoke test below ``FEW_PROMPTS`` prompts in a whole task x length
    cell, provisional verdicts below ``VERDICT_PROMPTS``, and a caution when the depth buckets (a third of the
    prompts each) fall below ``FEW_PROMPTS``."""
    whole = [c[ALL]["n"] for by_length in res["accuracy"].values() for c in by_length.values() if ALL in c]
    buckets = [c["n"] for by_length in res["accuracy"].values() for by_bucket in by_length.values()
               for b, c in by_bucket.items() if b != ALL]
    if whole and min(whole) < FEW_PROMPTS:
        return ["", f"With {min(whole)} prompts in a cell the intervals are too narrow to trust (they need about "
                f"{FEW_PROMPTS} or more): read this run as a smoke test and pass more --prompts."]
    lines = []
    if whole and min(whole) < VERDICT_PROMPTS:
        lines += ["", f"With {min(whole)} prompts in a cell the verdicts below are provisional: percentile-bootstrap "
                  f"intervals over so few prompts are narrower than their nominal level, and a difference marked `*` "
                  f"may not hold on more prompts; confirm it with --prompts {VERDICT_PROMPTS}."]
    if buckets and min(buckets) < FEW_PROMPTS:
        lines += ["", f"Depth buckets hold as few as {min(buckets)} prompts: their intervals are rough (about {FEW_PROMPTS} "
                  "or more are needed); the per-length cells (`all`) are the ones to read."]
    return lines


def accuracy_table(res: dict, by_length: dict, figure: str | None = None) -> list[str]:
    """One row per method, one column per length x depth bucket, then the ratio SDTP / unpruned
    (accuracy; ``figure``: that per-prompt figure of the cells instead, without the ratio)."""
    columns = [(length, bucket) for length, buckets in by_length.items() for bucket in buckets]
    lines = ["| method | " + " | ".join(f"{length} {bucket}" for length, bucket in columns) + " |",
             "|---" * (1 + len(columns)) + "|",
             "| *prompts* | " + " | ".join(str(by_length[n][b]["n"]) for n, b in columns) + " |"]
    for name in res["methods"]:
        cells = [interval_text(_figure(by_length[n][b]["methods"][name], figure), "{:.2f}") for n, b in columns]
        label = f"**{name}**" if name == TRAINED else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if TRAINED in res["methods"] and figure is None:
        ratios = [by_length[n][b]["methods"][TRAINED]["ratio"] for n, b in columns]
        lines.append("| *SDTP / unpruned* | " + " | ".join("-" if r is None else f"{r:.2f}" for r in ratios) + " |")
    return lines


def _figure(cell: dict, figure: str | None) -> dict:
    return cell if figure is None else cell[figure]


def paired_table(res: dict) -> list[str]:
    """SDTP minus every other method, per task and length over all depths, paired by prompt."""
    if TRAINED not in res["methods"]:
        return []
    columns = [(task, length, ALL if ALL in buckets else next(iter(buckets)))
               for task, by_length in res["accuracy"].items() for length, buckets in by_length.items()]
    if not columns:
        return []
    lines = ["", f"**{TRAINED} minus each method**, accuracy paired by prompt (all depths); `*`: the interval excludes zero "
             "(above zero: SDTP better).", "",
             "| method | " + " | ".join(f"{task} {length}" for task, length, _ in columns) + " |", "|---" * (1 + len(columns)) + "|"]
    for name in res["methods"]:
        if name == TRAINED:
            continue
        cells = [interval_text(res["accuracy"][t][n][b]["methods"][name]["vs_sdtp"], "{:+.2f}") for t, n, b in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def summary_table(res: dict) -> list[str]:
    summaries = res.get("summarization") or {}
    if not summaries:
        return []
    groups = list(summaries)
    lines = ["", f"**summarization**: ROUGE-L F1 of each summary's tokens against the unpruned model's greedy summary "
             f"(at most {res['summary_tokens']} tokens), and the share of degenerate summaries (a 3-token sequence "
             "occurring 4 or more times); last column: SDTP minus the method on ROUGE-L, all lengths, paired by prompt.", "",
             "| method | " + " | ".join(f"{g}: ROUGE-L | {g}: degenerate" for g in groups) + " | mean tokens | SDTP - method: ROUGE-L |",
             "|---" * (3 + 2 * len(groups)) + "|"]
    for name in res["methods"]:
        cells = []
        for g in groups:
            m = summaries[g]["methods"][name]
            cells += ["(reference)" if name == BASE else interval_text(m["rouge_l"], "{:.3f}"), interval_text(m["degenerate"], "{:.2f}")]
        pooled = summaries[ALL]["methods"][name]
        vs = pooled.get("vs_sdtp")
        cells += [f"{pooled['new_tokens']:.0f}", interval_text(vs["rouge_l"], "{:+.3f}") if vs else "-"]
        lines.append(f"| {f'**{name}**' if name == TRAINED else name} | " + " | ".join(cells) + " |")
    return lines


def lm_eval_table(res: dict) -> list[str]:
    lm = res.get("lm_eval")
    if not lm:
        return []
    groups = list(lm["accuracy"])
    acc = lm["accuracy"]
    return [
        "", f"**lm-eval** (`HFLM`, batch size 1): local multiple-choice task `{lm['task']}`, {lm['documents']} documents "
        f"(retrieval prompts of this suite in plain text, {lm['choices']} numbers to choose from), accuracy by log-likelihood; "
        f"task files in `{lm['folder']}`.", "",
        "| model | " + " | ".join(f"{g} tokens" if g != ALL else "all" for g in groups) + " |", "|---" * (1 + len(groups)) + "|",
        "| unpruned | " + " | ".join(interval_text(acc[g]["unpruned"], "{:.2f}") for g in groups) + " |",
        f"| **{TRAINED}** | " + " | ".join(interval_text(acc[g]["pruned"], "{:.2f}") for g in groups) + " |",
        "| *SDTP - unpruned* | " + " | ".join(interval_text(acc[g]["unpruned"]["vs_sdtp"], "{:+.2f}") for g in groups) + " |",
    ]


def verdict_lines(res: dict) -> list[str]:
    """One line per target: met / not met, with the cells that miss it and their figures."""
    verdict = res.get("verdict") or {}
    if not verdict:
        return []
    lines = ["", f"**Targets** for {TRAINED}, checked on these figures (the margin is SDTP minus {TARGET_RATIO} x unpruned, "
             "paired by prompt; `confident`: its interval excludes zero):", ""]
    for key, entry in verdict.items():
        status = "met" if entry["met"] else "not met"
        blind = sum(bool(c.get("uninformative")) for c in entry["checks"])
        if blind:  # a cell where the unpruned model scores 0 meets the ratio trivially
            status += f"; {blind} of {len(entry['checks'])} cells cannot test it, the unpruned model scores 0 there"
        missed = [c for c in entry["checks"] if not c["met"]]
        shown = missed or entry["checks"]
        detail = "; ".join(_check_text(key, c) for c in shown)
        lines.append(f"- {entry['target']}: **{status}** ({'missed at' if missed else 'figures'}: {detail}).")
    return lines


def _check_text(key: str, c: dict) -> str:
    where = " ".join(str(c[k]) for k in ("task", "length", "bucket") if k in c)
    if key in ("long_context", "lm_eval"):
        note = ", unpruned scores 0" if c.get("uninformative") else ""
        return (f"{where}: {c['sdtp']:.2f} vs {c['base']:.2f}{note}, margin {interval_text(c['margin'], '{:+.2f}')}"
                + (", confident" if c["confident"] else ""))
    if key == "summary_degenerate":
        return f"{where}: {c['sdtp']:.2f} vs {c['base']:.2f} degenerate"
    return f"{where}: ROUGE-L {c['sdtp']:.3f} vs recency {c['recency']:.3f}, difference {interval_text(c['difference'], '{:+.3f}')}"
