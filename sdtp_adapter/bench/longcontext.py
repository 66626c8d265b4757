"""``sdtp bench tasks``: the synthetic long-context suite, answered by greedy generation under each method.

Tasks (``data.tasks``): passkey, single needle, multi-key needle, key-value retrieval and RULER-style
variable tracking, hidden in held-out Shakespeare at several prompt lengths and depths. A generation
is correct iff it names the answer's key and none of the document's other candidates
(``data.tasks.is_correct``); ``data.tasks.CHANCE`` gives each task's chance level.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from pathlib import Path

import torch

from ..architectures import model_dims
from ..data.corpora import shakespeare_texts
from ..data.tasks import CHANCE, SUITE_TASKS, is_correct, prompt_ids, task_sample
from ..model import SDTPModel
from .common import add_model_arguments, load_sdtp, model_label
from .meta import results_dir, run_meta, write_results
from .methods import Method, standard_methods
from .plotting import pyplot, save_figure

# Calibrated on SmolLM2-135M-Instruct (unpruned, greedy, 4-6 samples a cell): passkey 4/4 at 1K and
# 2K, needle 4/4 and 4/4, multikey 4/4 and 2/4, kv (scattered) 3/6 and 3/4, all above chance.
# Variable tracking (one hop) stays at chance (5/12 at 1K, chance 1/2), so it is not in the default
# run; ``--tasks ... vartrack`` adds it for a larger model. The default run (24 samples, 7 methods)
# takes about 9 minutes on a 2-core CPU.
DEFAULT_TASKS = ("passkey", "needle", "multikey", "kv")
DEFAULT_LENGTHS = (1024, 2048)
DEFAULT_DEPTHS = (0.2, 0.5, 0.8)
DEFAULT_PER_CELL = 1
MAX_NEW_TOKENS = 20
PLOT = "tasks.png"


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's own options (shared with ``sdtp bench compare``)."""
    parser.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS), help="prompt lengths in tokens")
    parser.add_argument("--depths", type=float, nargs="+", default=list(DEFAULT_DEPTHS),
                        help="where the asked fact sits in the document (0 = start, 1 = end)")
    parser.add_argument("--per-cell", type=int, default=DEFAULT_PER_CELL, help="samples per task x length x depth")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), choices=SUITE_TASKS,
                        help="tasks to run (vartrack is at chance for SmolLM2-135M, so not in the default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples (each cell draws from its own RNG)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_suite_arguments(parser)
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="greedy tokens generated for each answer")


def task_suite(
    tokenizer, texts: list[str], lengths, depths, per_cell: int, seed: int, tasks=DEFAULT_TASKS
) -> list[dict]:
    """``per_cell`` samples (``data.tasks.task_sample``) for every task x length x depth.

    Each cell draws from its own RNG seeded by ``(seed, task, length, depth, index)``, so a sample does
    not change when other tasks, lengths or depths are added or removed.
    """
    if per_cell < 1:
        raise ValueError(f"per_cell={per_cell} is invalid; allowed: >= 1")
    unknown = [t for t in tasks if t not in SUITE_TASKS]
    if unknown:
        raise ValueError(f"tasks={unknown} are invalid; allowed: {list(SUITE_TASKS)}")
    samples = []
    for task in tasks:
        for length in lengths:
            for depth in depths:
                for index in range(per_cell):
                    rng = random.Random(f"{seed}/{task}/{length}/{depth}/{index}")
                    samples.append(task_sample(tokenizer, texts, length, task, rng, depth))
    return samples


def suite_from_args(tokenizer, args: argparse.Namespace, texts: list[str] | None = None) -> list[dict]:
    """The suite ``add_suite_arguments`` describes, its facts hidden in ``texts`` (default: the held-out plays)."""
    if texts is None:
        texts = list(shakespeare_texts("heldout").values())
    return task_suite(tokenizer, texts, args.lengths, args.depths, args.per_cell, args.seed, args.tasks)


def method_prompt(method: Method, tokenizer, sample: dict) -> list[int]:
    """The sample's prompt ids; a prompt compressor's is rebuilt from its compressed document."""
    if method.compress is None:
        return sample["input_ids"][: sample["prompt_length"]]
    return prompt_ids(tokenizer, method.compress(sample["document"], sample["question"]), sample["question"])


def generate_answer(sdtp: SDTPModel, tokenizer, prompt: list[int], max_new_tokens: int) -> str:
    """Greedy answer to one prompt, decoded without special tokens."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = sdtp.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=True)


def evaluate_tasks(
    sdtp: SDTPModel, tokenizer, samples: list[dict], methods: list[Method], max_new_tokens: int = MAX_NEW_TOKENS
) -> dict:
    """Accuracy of every method on every sample (one greedy generation each, under ``method.activate``).

    Returns:
        ``tasks``, ``lengths`` (as in the samples, in order), ``chance`` per task, ``counts[task][length]``,
        ``accuracy[method] = {overall, per_task[task], per_length[length], cells[task][length]}``
        (lengths as strings, as JSON keeps them), ``kept_share[method]`` (mean share of the prompt's
        tokens each layer processed; a compressor's compressed over original prompt length) and
        ``generations[method]`` (the decoded answers, in sample order).
    """
    if not samples:
        raise ValueError("samples=[]: nothing to evaluate")
    tasks = list(dict.fromkeys(s["task"] for s in samples))
    lengths = list(dict.fromkeys(str(s["length"]) for s in samples))
    num_layers = model_dims(sdtp.base_model).num_layers
    counts: dict = defaultdict(lambda: defaultdict(int))
    for s in samples:
        counts[s["task"]][str(s["length"])] += 1
    accuracy, kept_share, generations = {}, {}, {}
    for method in methods:
        hits: dict = defaultdict(lambda: defaultdict(int))
        texts, shares = [], []
        with method.activate(sdtp):
            for sample in samples:
                prompt = method_prompt(method, tokenizer, sample)
                text = generate_answer(sdtp, tokenizer, prompt, max_new_tokens)
                texts.append(text)
                hits[sample["task"]][str(sample["length"])] += is_correct(text, sample["key"], sample["distractors"])
                shares.append(_kept_share(sdtp, method, len(prompt), sample["prompt_length"], num_layers))
        accuracy[method.name] = _accuracies(hits, counts, tasks, lengths)
        kept_share[method.name] = sum(shares) / len(shares)
        generations[method.name] = texts
        print(f"tasks: {method.name}: {accuracy[method.name]['overall']:.3f} "
              f"({ {t: round(a, 2) for t, a in accuracy[method.name]['per_task'].items()} })", flush=True)
    return {
        "tasks": tasks,
        "lengths": lengths,
        "chance": {t: CHANCE[t] for t in tasks},
        "counts": {t: dict(counts[t]) for t in tasks},
        "accuracy": accuracy,
        "kept_share": kept_share,
        "generations": generations,
    }


def _kept_share(sdtp: SDTPModel, method: Method, prompt: int, original: int, num_layers: int) -> float:
    if method.compress is not None:
        return prompt / original
    if not method.prune:
        return 1.0
    return sdtp.active_schedule.kept_share(prompt, num_layers)


def _accuracies(hits: dict, counts: dict, tasks: list[str], lengths: list[str]) -> dict:
    def share(cells) -> float:
        n = sum(counts[t][length] for t, length in cells)
        return sum(hits[t][length] for t, length in cells) / n

    cells = [(t, length) for t in tasks for length in lengths if counts[t][length]]
    return {
        "overall": share(cells),
        "per_task": {t: share([c for c in cells if c[0] == t]) for t in tasks},
        "per_length": {length: share([c for c in cells if c[1] == length]) for length in lengths},
        "cells": {t: {length: share([(t, length)]) for length in lengths if counts[t][length]} for t in tasks},
    }


def run(args: argparse.Namespace) -> dict:
    """Run the suite on every standard method; writes ``tasks.json`` and its plot to ``args.out``."""
    directory = results_dir(args)
    sdtp, tokenizer = load_sdtp(args.model, args.adapter, getattr(args, "revision", None))
    samples = suite_from_args(tokenizer, args)
    methods = standard_methods(sdtp)
    print(f"tasks: {len(samples)} samples x {len(methods)} methods", flush=True)
    results = evaluate_tasks(sdtp, tokenizer, samples, methods, args.max_new_tokens)
    results |= {"model": model_label(args.model), "adapter": args.adapter, "depths": list(args.depths),
                "per_cell": args.per_cell, "seed": args.seed, "max_new_tokens": args.max_new_tokens}
    meta = run_meta(args.command_line)
    write_results("tasks", meta, results, directory)
    plot(results, directory=directory)
    return {"meta": meta, "results": results}


def plot(results: dict, name: str = PLOT, *, directory: Path) -> None:
    """Accuracy per task, one bar per method, one panel per prompt length; dashes mark chance."""
    plt = pyplot()
    tasks, lengths, methods = results["tasks"], results["lengths"], list(results["accuracy"])
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.5 * len(lengths) + 1.5, 3.8), sharey=True, squeeze=False)
    width = 0.8 / len(methods)
    for ax, length in zip(axes[0], lengths):
        for m, method in enumerate(methods):
            cells = results["accuracy"][method]["cells"]
            xs = [t + (m - (len(methods) - 1) / 2) * width for t in range(len(tasks))]
            ax.bar(xs, [cells[task].get(length, float("nan")) for task in tasks], width, label=method)
        for t, task in enumerate(tasks):
            ax.hlines(results["chance"][task], t - 0.45, t + 0.45, colors="black", linestyles="dashed", linewidth=1)
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_title(f"{length}-token prompts")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy (dashes: chance)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    save_figure(fig, name, directory)


def render(data: dict) -> list[str]:
    res = data["results"]
    tasks, lengths = res["tasks"], res["lengths"]
    # the unpruned base first, then the order the run used
    methods = sorted(res["accuracy"], key=lambda name: not name.startswith("base"))
    per_task = {t: sum(res["counts"][t].values()) for t in tasks}
    lines = [
        "## Synthetic long-context tasks",
        "",
        f"{res.get('model', 'model')}, {res.get('adapter') or 'shipped adapter'}; greedy answers "
        f"(at most {res.get('max_new_tokens', MAX_NEW_TOKENS)} new tokens) to questions about facts hidden in held-out Shakespeare. Prompt lengths {', '.join(lengths)} tokens, "
        f"depths {', '.join(f'{d:g}' for d in res.get('depths', []))}, "
        f"{', '.join(f'{t} {n}' for t, n in per_task.items())} samples. A generation is correct iff it names the "
        "answer's key (number, place, value) and none of the document's other candidates. Pruning rows share the "
        "adapter's schedule and differ only in the scorer.",
        "",
        "| method | kept share | " + " | ".join(tasks) + " | overall | " + " | ".join(f"{n} tok" for n in lengths) + " |",
        "|---" * (3 + len(tasks) + len(lengths)) + "|",
        "| *chance* | | " + " | ".join(_chance(res["chance"][t]) for t in tasks) + " |" + " |" * (1 + len(lengths)),
    ]
    for name in methods:
        acc = res["accuracy"][name]
        cells = [name, f"{res['kept_share'][name]:.2f}", *(f"{acc['per_task'][t]:.2f}" for t in tasks),
                 f"{acc['overall']:.2f}", *(f"{acc['per_length'][n]:.2f}" for n in lengths)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Chance: a uniform guess over what the question admits (passkey: any 5-digit number; needle: one of the "
        "generator's 8 places; multikey, kv, vartrack: one of the document's candidates).",
        "",
        f"![accuracy per task]({'benchmarks/' + PLOT})",
    ]
    return lines


def _chance(p: float) -> str:
    return "*~0*" if p < 0.005 else f"*{p:.2f}*"
