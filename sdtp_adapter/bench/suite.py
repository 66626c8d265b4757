"""``sdtp bench suite``: the held-out long-context suite, every method at the adapter's kept share, with intervals.

Prompts (``data.eval_tasks``): retrieval, aggregation, a question in a second chat turn and
summarization, their templates disjoint from the training tasks', their filler the held-out
documents of prose genres (default technical prose and novels), ``--prompts`` per task and length
(default 30) at two lengths per model (SmolLM2: 1K and 2K tokens; Gemma-3-270M: 4K and 8K), depths
stratified over the document. Every prompt is one prefill plus a short greedy generation under each
method: the unpruned model, the trained adapter and the training-free scorers of ``bench.methods`` on
the adapter's schedule. QA answers score 0/1 (``suite_metrics.is_correct``); a summary scores its
token ROUGE-L F1 against the unpruned model's summary of the same prompt and whether it degenerates.
``suite_stats`` adds 95% bootstrap intervals, paired differences against SDTP and the targets'
verdicts; ``suite_render`` the page; ``--lm-eval`` a multiple-choice task of the same kind through
lm-eval's ``HFLM`` (``suite_lm_eval``). Results: ``<--out>/suite-<model>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from ..architectures import model_dims
from ..data import genres as genre_registry
from ..data.eval_filler import FILLER_GENRES, FillerPool, default_filler_genres, suite_documents
from ..data.eval_tasks import TASKS, build_suite
from ..model import SDTPModel
from ..pruning.scorers import SCORER_IDS
from .common import adapter_source, add_model_arguments, load_sdtp, model_label
from .genre_fidelity import GenreNotAvailable
from .journal import GenerationJournal, ids_sha256, tensors_sha256
from .meta import results_dir, run_meta, write_results
from .methods import BASE, TRAINED, Method, standard_methods
from .suite_metrics import is_correct, is_degenerate, rouge_l_f1, surname_recall
from . import suite_render
from .suite_stats import summarize, verdict

DEFAULT_LENGTHS = {"smollm2-135m-instruct": (1024, 2048), "gemma3-270m": (4096, 8192)}
DEFAULT_PROMPTS = 30
# greedy tokens per answer: a number or a name needs few, a list of three surnames a few more
ANSWER_TOKENS = {"retrieval": 16, "aggregation": 32, "second_turn": 16}
SUMMARY_TOKENS = 64
# --methods ids -> the method names of ``methods.standard_methods`` (the unpruned base always runs)
METHOD_IDS = {
    "sdtp": TRAINED, **SCORER_IDS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="tasks to run (default: all)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, metavar="TOKENS",
                        help="prompt lengths in tokens (default: " + "; ".join(
                            f"{m}: {' '.join(map(str, n))}" for m, n in DEFAULT_LENGTHS.items()) + "; required for other models)")
    parser.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS, help="prompts per task and length")
    parser.add_argument("--filler-genres", nargs="+", default=None, choices=FILLER_GENRES, metavar="GENRE",
                        help=f"genres whose held-out documents are the filler, alternating by prompt (allowed: "
                        f"{', '.join(FILLER_GENRES)}; default: technical novels, those available here)")
    parser.add_argument("--methods", nargs="+", default=list(METHOD_IDS), choices=list(METHOD_IDS),
                        help="methods besides the unpruned base, which always runs (default: all)")
    parser.add_argument("--summary-tokens", type=int, default=SUMMARY_TOKENS, help="greedy tokens of each summary")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts (each prompt has its own RNG)")
    parser.add_argument("--keep-ratio", type=float, default=None, metavar="R",
                        help="per-stage keep ratio of every pruning method, in (0, 1] (default: the adapter's); "
                        "a run per ratio traces quality against budget")
    parser.add_argument("--local-window-ratio", type=float, default=None, metavar="W",
                        help="protected share of the most recent tokens, in [0, 1) (default: the adapter's)")
    parser.add_argument("--lm-eval", action="store_true",
                        help="also run a held-out multiple-choice task through lm-eval's HFLM, pruned vs unpruned")
    parser.add_argument("--lm-eval-prompts", type=int, default=None, help="lm-eval documents per length (default: --prompts)")


def suite_lengths(model: str, lengths: list[int] | None) -> list[int]:
    """``lengths`` if given, else the packaged model's default pair.

    Raises:
        ValueError: no ``--lengths`` for a model without defaults.
    """
    if lengths:
        return list(lengths)
    if model not in DEFAULT_LENGTHS:
        raise ValueError(f"--model {model}: no default prompt lengths (defaults exist for {', '.join(DEFAULT_LENGTHS)}); pass --lengths")
    return list(DEFAULT_LENGTHS[model])


def filler_pool(genres: list[str] | None) -> FillerPool:
    """The held-out documents of ``genres`` (default: ``DEFAULT_FILLER_GENRES`` available here).

    Raises:
        GenreNotAvailable: a genre whose source cannot be fetched here (a ``ValueError``: one line on the CLI).
    """
    wanted = list(dict.fromkeys(genres)) if genres else default_filler_genres()
    try:
        return FillerPool(suite_documents(wanted))
    except genre_registry.GenreUnavailable as err:
        raise GenreNotAvailable(f"--filler-genres {' '.join(wanted)}: {err}; available here: "
                                f"{', '.join(genre_registry.available_genres()) or 'none'}") from err


def suite_methods(sdtp: SDTPModel, ids: list[str]) -> list[Method]:
    """The unpruned base, then the methods of ``ids`` (keys of ``METHOD_IDS``) in that order."""
    by_name = {m.name: m for m in standard_methods(sdtp)}
    wanted = [BASE] + [METHOD_IDS[i] for i in dict.fromkeys(ids)]
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise RuntimeError(f"methods {missing} are not among bench.methods.standard_methods: {sorted(by_name)}")
    return [by_name[name] for name in wanted]


def greedy_ids(sdtp: SDTPModel, prompt: list[int], max_new_tokens: int) -> list[int]:
    """The greedily generated token ids after ``prompt`` (EOS included when reached)."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = sdtp.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, ids.shape[1] :].tolist()


class Progress:
    """Prints ``done/total`` with the elapsed time and an ETA (rate so far) about every 5% of the work."""

    def __init__(self, total: int, label: str = "suite", stream=None):
        self.total, self.label, self.stream, self.done = total, label, stream or sys.stdout, 0
        self.start, self.step = time.perf_counter(), max(1, total // 20)

    def advance(self, what: str) -> None:
        self.done += 1
        if self.done % self.step and self.done != self.total:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        print(f"{self.label}: {self.done}/{self.total} generations ({what}), {elapsed / 60:.1f} min elapsed, "
              f"ETA {eta / 60:.1f} min", file=self.stream, flush=True)


def evaluate(sdtp: SDTPModel, tokenizer, samples: list[dict], methods: list[Method], summary_tokens: int = SUMMARY_TOKENS,
             answer_tokens: dict[str, int] | None = None, progress_stream=None,
             journal: GenerationJournal | None = None) -> dict:
    """Greedy generations of every method on every sample, scored.

    The first method must be the unpruned base: its summaries are the references of the others.
    ``answer_tokens`` overrides ``ANSWER_TOKENS`` per task; progress and the ETA go to
    ``progress_stream`` (default stdout). With a ``journal``, generations it already holds are read
    from it instead of run, and every new one is recorded in it as soon as it finishes.

    Returns:
        ``{methods, kept_share: {method: mean}, per_prompt: {method: {text, score, recall, degenerate,
        new_tokens}}}``, each list in sample order; ``score`` is 0/1 for QA samples and ROUGE-L F1
        against the base's summary for summaries; ``recall`` the share of the surnames named
        (aggregation; ``None`` otherwise); ``degenerate`` is ``is_degenerate`` of the new tokens.
    """
    if not samples:
        raise ValueError("samples=[]: nothing to evaluate")
    if not methods or methods[0].prune or methods[0].compress is not None:
        raise ValueError(f"methods[0] must be the unpruned base (the summaries' reference); got {[m.name for m in methods][:1]}")
    budget = ANSWER_TOKENS | {"summarization": summary_tokens} | (answer_tokens or {})
    special = set(getattr(tokenizer, "all_special_ids", None) or [tokenizer.eos_token_id])
    layers = model_dims(sdtp.base_model).num_layers
    done = 0 if journal is None else sum(journal.get(m.name, i) is not None for m in methods for i in range(len(samples)))
    if done:
        print(f"suite: {done} generations read back from {journal.path}", file=progress_stream or sys.stdout, flush=True)
    progress = Progress(len(samples) * len(methods) - done, stream=progress_stream)
    per_prompt, kept_share, references = {}, {}, []
    for method in methods:
        rows = {"text": [], "score": [], "recall": [], "degenerate": [], "new_tokens": []}
        shares = []
        with method.activate(sdtp):
            for i, sample in enumerate(samples):
                prompt = sample["prompt_ids"]
                ids = journal.get(method.name, i) if journal is not None else None
                if ids is None:
                    ids = greedy_ids(sdtp, prompt, budget[sample["task"]])
                    if journal is not None:
                        journal.put(method.name, i, ids)
                    progress.advance(method.name)
                tokens = [t for t in ids if t not in special]
                if method is methods[0]:
                    references.append(tokens)
                text = tokenizer.decode(ids, skip_special_tokens=True)
                if sample["task"] == "summarization":
                    score = rouge_l_f1(tokens, references[i])
                else:
                    score = float(is_correct(sample, text))
                rows["text"].append(text)
                rows["score"].append(score)
                rows["recall"].append(surname_recall(sample, text) if sample["task"] == "aggregation" else None)
                rows["degenerate"].append(is_degenerate(tokens))
                rows["new_tokens"].append(len(tokens))
                shares.append(sdtp.active_schedule.kept_share(len(prompt), layers) if method.prune else 1.0)
        per_prompt[method.name], kept_share[method.name] = rows, sum(shares) / len(shares)
    return {"methods": [m.name for m in methods], "kept_share": kept_share, "per_prompt": per_prompt}


def sample_record(sample: dict) -> dict:
    """What the results keep of a sample (not its document: ``--seed`` rebuilds it)."""
    keep = ("task", "length", "index", "genre", "source", "template", "depth", "bucket", "key", "prompt_length")
    return {k: sample[k] for k in keep}


def journal_fingerprint(args: argparse.Namespace, sdtp: SDTPModel, samples: list[dict]) -> dict:
    """What the suite's generations depend on: a journal with another fingerprint belongs to another run."""
    versions = run_meta("")["versions"]
    return {
        "model": model_label(args.model), "revision": getattr(args, "revision", None), "adapter": args.adapter,
        "adapter_sha256": tensors_sha256(sdtp.pruners.state_dict()), "sdtp_config": sdtp.sdtp_config.to_dict(),
        "schedule": dataclasses.asdict(sdtp.active_schedule),
        "prompts_sha256": ids_sha256(s["prompt_ids"] for s in samples), "summary_tokens": args.summary_tokens,
        "answer_tokens": ANSWER_TOKENS, "versions": {k: versions.get(k) for k in ("torch", "transformers", "sdtp-adapter")},
    }


def render(data: dict) -> list[str]:
    """The section's markdown (``suite_render.render``), as ``bench.report`` asks every section for it."""
    return suite_render.render(data)


def run(args: argparse.Namespace) -> dict:
    """Run the section; writes ``suite-<model>.json`` (and the lm-eval task folder with ``--lm-eval``) to ``args.out``."""
    directory = results_dir(args)
    lengths = suite_lengths(args.model, args.lengths)
    if args.prompts < 1:
        raise ValueError(f"--prompts {args.prompts} is invalid; allowed: >= 1")
    keep, window = getattr(args, "keep_ratio", None), getattr(args, "local_window_ratio", None)
    if keep is not None and not 0 < keep <= 1:
        raise ValueError(f"--keep-ratio {keep} is invalid; allowed: 0 < R <= 1")
    if window is not None and not 0 <= window < 1:
        raise ValueError(f"--local-window-ratio {window} is invalid; allowed: 0 <= W < 1")
    adapter_source(args.model, args.adapter)  # no adapter for this model: fail before fetching anything
    pool = filler_pool(args.filler_genres)  # fetched and checked before the model loads
    sdtp, tokenizer = load_sdtp(args.model, args.adapter, getattr(args, "revision", None))
    with sdtp.use_schedule(keep_ratio=keep, local_window_ratio=window):  # every pruning method's schedule
        return _run_on_schedule(args, directory, lengths, pool, sdtp, tokenizer)


def _run_on_schedule(args: argparse.Namespace, directory, lengths: list[int], pool: FillerPool, sdtp: SDTPModel, tokenizer) -> dict:
    methods = suite_methods(sdtp, args.methods)
    tasks = list(dict.fromkeys(args.tasks))
    samples = build_suite(tokenizer, pool, tasks, lengths, args.prompts, args.seed)
    print(f"suite: {len(samples)} prompts ({len(tasks)} tasks x {len(lengths)} lengths x {args.prompts}) x "
          f"{len(methods)} methods; filler: held-out {', '.join(pool.genres)}", flush=True)
    name = f"suite-{model_label(args.model)}"
    journal = GenerationJournal(directory / f"{name}.journal.jsonl", journal_fingerprint(args, sdtp, samples))
    evaluation = evaluate(sdtp, tokenizer, samples, methods, args.summary_tokens, journal=journal)
    records = [sample_record(s) for s in samples]
    results = {
        "model": model_label(args.model), "adapter": args.adapter, "lengths": lengths, "prompts": args.prompts,
        "tasks": tasks, "seed": args.seed, "summary_tokens": args.summary_tokens, "answer_tokens": ANSWER_TOKENS,
        "filler": {g: sorted(docs) for g, docs in pool.documents.items()}, "samples": records,
        "schedule": dataclasses.asdict(sdtp.active_schedule),
    } | evaluation | summarize(records, evaluation)
    results["verdict"] = verdict(results)
    data = {"meta": run_meta(args.command_line), "results": results}
    write_results(name, data["meta"], results, directory)  # kept even if the lm-eval part fails
    if args.lm_eval:
        from .suite_lm_eval import lm_eval_section

        prompts = args.prompts if args.lm_eval_prompts is None else args.lm_eval_prompts
        folder = directory / f"suite-lm-eval-{model_label(args.model)}"
        results["lm_eval"] = lm_eval_section(sdtp, tokenizer, pool, lengths, prompts, args.seed, folder)
        results["verdict"] = verdict(results)
        write_results(name, data["meta"], results, directory)
    journal.remove()  # everything is written: a rerun generates afresh
    return data
