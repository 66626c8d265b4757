"""The held-out suite through lm-eval's ``HFLM`` (``sdtp bench suite --lm-eval``): a local multiple-choice task.

Each document is a retrieval prompt of ``data.eval_tasks`` (one fact hidden in held-out prose,
templates disjoint from training) in plain ``User:`` / ``Assistant:`` text; the choices are the fact's
3-digit number and ``DISTRACTORS`` other 3-digit numbers absent from the text. lm-eval scores each
choice by its log-likelihood after the prompt (``output_type: multiple_choice``, metric ``acc``), once
with the adapter pruning every prefill and once inside ``sdtp.disable_pruning()`` (the unpruned
model), with ``batch_size=1`` (what ``tests/test_lm_eval.py`` checks: lm-eval right-pads larger
loglikelihood batches without a mask, which a pruner would read as prompt). The task's YAML and
jsonl are written to a folder (kept, so the task can be rerun with ``lm_eval --include_path``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..data.eval_filler import FillerPool
from ..data.eval_tasks import NUMBERS, build_suite, plain_prompt
from ..data.tasks import mentions
from ..model import SDTPModel
from .genre_fidelity import TRAINED
from .suite_stats import ALL, BASE, accuracy_cell

TASK = "sdtp_suite_choice"
DISTRACTORS = 3
SEED_OFFSET = 7919  # the lm-eval documents are other prompts than the generation suite's (same templates)
YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""


def choice_documents(tokenizer, pool: FillerPool, lengths: list[int], prompts: int, seed: int = 0) -> list[dict]:
    """``prompts`` multiple-choice documents per length: ``{text, choices, answer, length, depth, bucket, source}``.

    ``choices[answer]`` is the hidden fact's number; the other choices are distinct 3-digit numbers
    that do not occur in ``text``.
    """
    docs = []
    for sample in build_suite(tokenizer, pool, ["retrieval"], lengths, prompts, seed + SEED_OFFSET):
        text = plain_prompt(sample["messages"])
        rng = random.Random(f"lm-eval/{seed}/{sample['length']}/{sample['index']}")
        choices = [sample["key"]]
        while len(choices) < DISTRACTORS + 1:
            number = str(rng.randint(*NUMBERS))
            if number not in choices and not mentions(text, number):
                choices.append(number)
        rng.shuffle(choices)
        docs.append({"text": text, "choices": choices, "answer": choices.index(sample["key"]), "length": sample["length"],
                     "depth": sample["depth"], "bucket": sample["bucket"], "source": sample["source"]})
    return docs


def write_task(folder: Path, docs: list[dict]) -> str:
    """Write ``folder/docs.jsonl`` and ``folder/<TASK>.yaml``; returns the task name."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs), encoding="utf-8")
    (folder / f"{TASK}.yaml").write_text(YAML.format(task=TASK, data=data, cache=folder / "cache"), encoding="utf-8")
    return TASK


def run_task(sdtp: SDTPModel, tokenizer, folder: Path, task: str = TASK) -> dict[str, list[float]]:
    """``{"pruned": [acc per document], "unpruned": [...]}`` of ``task`` in ``folder``, in document order."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(folder), include_defaults=False)  # not lm-eval's ~10k built-in tasks
    lm = HFLM(pretrained=sdtp.base_model, tokenizer=tokenizer, batch_size=1)  # the hooks live on the base model

    def accuracies() -> list[float]:
        out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager, log_samples=True, num_fewshot=0)
        return [float(s["acc"]) for s in sorted(out["samples"][task], key=lambda s: s["doc_id"])]

    pruned = accuracies()
    with sdtp.disable_pruning():
        unpruned = accuracies()
    return {"pruned": pruned, "unpruned": unpruned}


def summarize(docs: list[dict], scores: dict[str, list[float]]) -> dict:
    """``{length: {n, pruned, unpruned}}`` (plus ``all``): interval cells as ``suite_stats.accuracy_cell`` gives
    them (``pruned`` with ``ratio``, ``margin`` against 0.95 x unpruned; ``unpruned.vs_sdtp``: pruned minus unpruned)."""
    per_prompt = {BASE: {"score": scores["unpruned"]}, TRAINED: {"score": scores["pruned"]}}
    groups = {str(n): [i for i, d in enumerate(docs) if d["length"] == n] for n in dict.fromkeys(d["length"] for d in docs)}
    groups[ALL] = list(range(len(docs)))
    out = {}
    for length, rows in groups.items():
        cell = accuracy_cell(rows, per_prompt, [BASE, TRAINED])
        out[length] = {"n": cell["n"], "pruned": cell["methods"][TRAINED], "unpruned": cell["methods"][BASE]}
    return out


def lm_eval_section(sdtp: SDTPModel, tokenizer, pool: FillerPool, lengths: list[int], prompts: int, seed: int,
                    folder: Path) -> dict:
    """Write the task to ``folder``, run it pruned and unpruned, and summarise (``{task, folder, documents,
    accuracy, per_document}``)."""
    docs = choice_documents(tokenizer, pool, lengths, prompts, seed)
    task = write_task(folder, docs)
    print(f"suite: lm-eval {task}: {len(docs)} documents x {DISTRACTORS + 1} choices, pruned then unpruned", flush=True)
    scores = run_task(sdtp, tokenizer, folder, task)
    return {"task": task, "folder": str(folder), "documents": len(docs), "choices": DISTRACTORS + 1,
            "accuracy": summarize(docs, scores), "per_document": scores}
