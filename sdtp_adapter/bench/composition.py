"""``sdtp bench compose``: SDTP alone, KV-cache presses alone (H2O, SnapKV) and both together, at one KV budget.

The budget is SDTP's own: the share ``b`` of the prompt that the adapter's schedule keeps in the KV
cache at ``--prefix`` tokens (the mean over layers). Each press keeps ``b`` of the positions seen in
every full-attention layer (``compression_ratio = 1 - b``), after the prefill and after every decode
step, so a press alone holds the same KV as SDTP after the prefill and stays at that share while
decoding; with SDTP underneath, each layer holds the smaller of the two. Rows:

- base (unpruned); SDTP (trained);
- H2O / SnapKV alone (``disable_pruning()`` + the press): every layer prefills every token;
- SDTP + H2O / SDTP + SnapKV: the pruned prefill, then eviction on top.

Columns: prefill token share and measured prefill speedup (alternating with the unpruned prefill window
by window, as ``compare``; the presses' scoring is included), continuation fidelity (dNLL, top-1, KL
of the next ``--continuation`` tokens fed on top of the cache in one chunk), KV MiB right after the
prefill and after ``--decode-tokens`` greedy decode steps (first window), and accuracy on the
synthetic long-context suite. Results: ``<--out DIR>/compose-<model>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from ..compat import cache_kwarg, cache_of
from ..compression import H2OPress, KVPress, SnapKVPress
from ..model import SDTPModel
from ..pruning.cache import kv_bytes
from . import longcontext
from .common import adapter_source, add_model_arguments, add_text_arguments, describe_text, filler_texts, load_sdtp
from .common import model_label, prose_windows, read_user_text
from .compare import kept_share
from .fidelity import compare_methods
from .meta import results_dir, run_meta, write_results
from .methods import BASE, TRAINED as SDTP, Method

PRESSES = {"h2o": ("H2O", H2OPress), "snapkv": ("SnapKV", SnapKVPress)}
MIB = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_text_arguments(parser)
    parser.add_argument("--presses", nargs="+", default=list(PRESSES), choices=list(PRESSES), help="KV presses to run")
    parser.add_argument("--windows", type=int, default=8, help="held-out prose windows for fidelity")
    parser.add_argument("--prefix", type=int, default=2048, help="prompt tokens of each window (sets SDTP's KV share)")
    parser.add_argument("--continuation", type=int, default=128, help="tokens after the prompt scored against the unpruned model")
    parser.add_argument("--decode-tokens", type=int, default=512, help="greedy steps after the prefill before the KV is measured again")
    parser.add_argument("--sink", type=int, default=4, help="first cached entries every press keeps (attention sinks)")
    parser.add_argument("--recent", type=int, default=64, help="H2O's recent window and SnapKV's observation window")
    parser.add_argument("--no-tasks", action="store_true", help="skip the synthetic long-context suite")
    longcontext.add_suite_arguments(parser)


@dataclass
class PressMethod(Method):
    """A ``Method`` with a KV press on top; ``press_alone`` prefills unpruned (``disable_pruning()``).

    ``prune`` stays True for every row, so that ``fidelity.compare_methods`` measures it instead of
    taking it for the unpruned reference; the prefill token share is set from ``press_alone``.
    """

    press: KVPress | None = None
    press_alone: bool = False

    @contextlib.contextmanager
    def activate(self, sdtp: SDTPModel) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(sdtp.disable_pruning() if self.press_alone else super().activate(sdtp))
            if self.press is not None:
                stack.enter_context(self.press(sdtp))
            yield


def composition_methods(presses: list[str], share: float, sink: int, recent: int) -> list[PressMethod]:
    """SDTP, then each press alone and on top of SDTP, all keeping ``share`` of the positions seen."""
    methods = [PressMethod(SDTP)]
    for key in presses:
        label, kind = PRESSES[key]
        window = {"recent_tokens": recent} if kind is H2OPress else {"window_size": recent}
        press = kind(compression_ratio=1 - share, sink_tokens=sink, **window)
        methods += [PressMethod(label, press=press, press_alone=True), PressMethod(f"SDTP + {label}", press=press)]
    return methods


def kind_of(method: Method) -> str:
    if not isinstance(method, PressMethod):
        return "base"
    return "press" if method.press_alone else ("pruning + press" if method.press is not None else "pruning")


def decode_kv_mib(sdtp: SDTPModel, method: Method, window: torch.Tensor, steps: int) -> float:
    """KV MiB after a prefill of ``window [1, n]`` and ``steps`` greedy single-token steps under ``method``."""
    with torch.inference_mode(), method.activate(sdtp):
        out = sdtp(window, use_cache=True, logits_to_keep=1)
        for _ in range(steps):
            out = sdtp(out.logits[:, -1:].argmax(-1), **cache_kwarg(cache_of(out)), use_cache=True)
    return kv_bytes(cache_of(out)) / MIB


def run(args: argparse.Namespace) -> dict:
    """Run the section; writes ``compose-<model>.json`` to ``args.out``."""
    directory = results_dir(args)
    adapter_source(args.model, args.adapter)  # a missing --adapter fails before the model loads
    text = read_user_text(args)
    for name in ("windows", "prefix", "continuation", "recent"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)} is invalid; allowed: an integer >= 1")
    if args.decode_tokens < 0 or args.sink < 0:
        raise ValueError(f"--decode-tokens {args.decode_tokens} / --sink {args.sink}: allowed: integers >= 0")
    sdtp, tokenizer = load_sdtp(args.model, args.adapter, getattr(args, "revision", None))
    share = kept_share(sdtp, args.prefix)
    base = Method(BASE, prune=False)
    methods = composition_methods(args.presses, share, args.sink, args.recent)
    windows = prose_windows(tokenizer, args.windows, args.prefix + args.continuation, text)
    print(f"compose: {len(windows)} windows x {len(methods)} methods, KV share {share:.3f}", flush=True)
    fidelity = compare_methods(sdtp, windows, args.prefix, methods)
    first = windows[0][:, : args.prefix]
    rows = []
    for method in [base, *methods]:
        print(f"compose: {method.name}: {args.decode_tokens} decode steps", flush=True)
        f = fidelity.get(method.name)
        row = {"method": method.name, "kind": kind_of(method),
               "kept_share": 1.0 if not method.prune or getattr(method, "press_alone", False) else share,
               "kv_mib_decode": decode_kv_mib(sdtp, method, first, args.decode_tokens)}
        if f is None:
            any_f = next(iter(fidelity.values()))
            row |= {"prefill_speedup": 1.0, "delta_nll_pct": 0.0, "top1": 1.0, "kl": 0.0, "kv_mib_prefill": any_f.base_kv_mib}
        else:
            row |= {"prefill_speedup": f.base_prefill_s / f.prefill_s, "delta_nll_pct": f.delta_nll_pct, "top1": f.top1,
                    "kl": f.kl, "kv_mib_prefill": f.kv_mib}
        rows.append(row)
    tasks = None
    if not args.no_tasks:
        samples = longcontext.suite_from_args(tokenizer, args, filler_texts(tokenizer, max(args.lengths), text))
        print(f"compose: tasks: {len(samples)} samples x {len(methods) + 1} methods", flush=True)
        tasks = longcontext.evaluate_tasks(sdtp, tokenizer, samples, [base, *methods])
        for row in rows:
            accuracy = tasks["accuracy"][row["method"]]
            row["tasks"] = {"overall": accuracy["overall"], "per_task": accuracy["per_task"]}
    results = {
        "model": model_label(args.model), "adapter": args.adapter, "prefix": args.prefix,
        "continuation": args.continuation, "windows": args.windows, "text": describe_text(text), "decode_tokens": args.decode_tokens,
        "kv_share": share, "base_nll": next(iter(fidelity.values())).base_nll, "rows": rows,
        "presses": {m.name: repr(m.press) for m in methods if m.press_alone},  # the same press runs under SDTP
        "tasks": None if tasks is None else {"tasks": tasks["tasks"], "lengths": tasks["lengths"], "chance": tasks["chance"]},
    }
    meta = run_meta(args.command_line)
    write_results(f"compose-{results['model']}", meta, results, directory)
    return {"meta": meta, "results": results}


def render(data: dict) -> list[str]:
    res = data["results"]
    task_names = (res.get("tasks") or {}).get("tasks", [])
    lines = [
        "## SDTP with KV-cache compression (H2O, SnapKV) at the same KV budget",
        "",
        f"{res['model']}, {res.get('adapter') or 'shipped adapter'}. Budget: the share of the prompt SDTP's schedule keeps in "
        f"the KV cache at {res['prefix']} tokens ({res['kv_share']:.3f}); every press keeps that share of the positions seen "
        "in each full-attention layer, after the prefill and after every decode step (per key/value head; sinks and a recent "
        "window always kept). Press rows prefill unpruned; SDTP + press rows evict on top of the pruned prefill, so each layer "
        f"holds the smaller of both. Fidelity: {res['windows']} windows of {res['text']}, next {res['continuation']} tokens fed on top "
        f"in one chunk (unpruned NLL {res['base_nll']:.3f}). Prefill speedups alternate with the unpruned prefill window by "
        f"window and include the presses' scoring. KV after {res['decode_tokens']} greedy decode steps: first window.",
        "",
        "| method | kind | prefill token share | prefill speedup | dNLL | top-1 | KL | KV MiB after prefill "
        f"| KV MiB after {res['decode_tokens']} tokens |" + "".join(f" {t} |" for t in task_names)
        + (" tasks mean |" if task_names else ""),
        "|---" * (9 + len(task_names) + (1 if task_names else 0)) + "|",
    ]
    for r in res["rows"]:
        cells = [r["method"], r["kind"], f"{r['kept_share']:.2f}", f"{r['prefill_speedup']:.2f}x", f"{r['delta_nll_pct']:+.2f}%",
                 f"{r['top1']:.3f}", f"{r['kl']:.3f}", f"{r['kv_mib_prefill']:.1f}", f"{r['kv_mib_decode']:.1f}"]
        if task_names:
            per = r.get("tasks", {}).get("per_task", {})
            cells += [f"{per[t]:.2f}" if t in per else "-" for t in task_names]
            cells.append(f"{r['tasks']['overall']:.2f}" if "tasks" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Presses (the same under SDTP): " + "; ".join(f"{name} `{press}`" for name, press in res["presses"].items()) + "."]
    return lines
