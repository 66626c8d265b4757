"""``sdtp plan``: the schedule that reaches a speedup / FLOPs / KV target at a prompt length, with its costs.

Light at import (argparse only): the planner, which imports torch and transformers, loads when the
command runs, so ``sdtp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

LENGTH = re.compile(r"^\s*(\d+)\s*([kK]?)\s*$")
DTYPES = ("float32", "bfloat16", "float16")
MIB = 2**20


def parse_length(text: str) -> int:
    """argparse type: a token count, ``8192`` or with a K suffix (``8K`` = ``8k`` = 8192)."""
    match = LENGTH.match(text)
    if not match or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a prompt length; allowed: an integer >= 1, optionally with a "
                                         "K suffix (8K = 8192 tokens)")
    return int(match.group(1)) * (1024 if match.group(2) else 1)


def add_parser(sub) -> None:
    """Add ``plan`` to the ``sdtp`` subparsers ``sub``."""
    from .zoo import DEFAULT_MODEL, MODELS

    p = sub.add_parser(
        "plan", help="choose stages and keep ratio for a speedup / FLOPs / KV target at a prompt length",
        description="Solve for the stage placement and per-stage keep ratio that reach every given target at "
        "--length tokens, from the analytic prefill FLOPs and KV-cache model (no weights are loaded, only the "
        "model's config); prints the schedule, its predicted FLOPs, KV cache and speedup. Placements are tried "
        "in the order the sweep found best for quality; within one, the loosest keep ratio wins.",
    )
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH",
                   help=f"base model: a packaged name ({', '.join(sorted(MODELS))}), a local transformers folder or a Hub id")
    p.add_argument("--length", type=parse_length, required=True, metavar="N",
                   help="prompt length in tokens the targets are for: 8192, 8K or 4k (required)")
    p.add_argument("--speedup", type=float, default=None, metavar="X", help="predicted prefill speedup, at least")
    p.add_argument("--max-kv-fraction", type=float, default=None, metavar="F",
                   help="K/V cache after the prefill over the unpruned one, at most (0 < F <= 1)")
    p.add_argument("--max-flops-fraction", type=float, default=None, metavar="F",
                   help="prefill FLOPs over the unpruned ones, at most (0 < F <= 1)")
    p.add_argument("--adapter", default=None, metavar="NAME_OR_PATH",
                   help="plan over this adapter's own stages and protected tokens, as use_schedule(speedup=...) does "
                   "(default: a new adapter's stage grid from SDTPConfig and the options below)")
    p.add_argument("--num-stages", type=int, default=None, metavar="S",
                   help="stage grid of S stages (default: SDTPConfig's 10, or the adapter's)")
    p.add_argument("--local-window-ratio", type=float, default=None, metavar="R",
                   help="share of the most recent tokens never pruned (default: SDTPConfig's 0.1, or the adapter's)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="element type the KV bytes are counted in")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")


def run(args: argparse.Namespace) -> None:
    from .config import SDTPConfig
    from .planning import plan_schedule

    if args.adapter:
        from .hub import resolve_adapter

        config = SDTPConfig.from_pretrained(resolve_adapter(args.adapter))
    else:
        config = SDTPConfig()
    if args.local_window_ratio is not None:
        config = dataclasses.replace(config, local_window_ratio=args.local_window_ratio)
    plan = plan_schedule(args.model, prompt_length=args.length, speedup=args.speedup,
                         max_kv_fraction=args.max_kv_fraction, max_flops_fraction=args.max_flops_fraction,
                         num_stages=args.num_stages, config=config, kv_dtype=args.dtype)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else "\n".join(describe(plan)))


def describe(plan) -> list[str]:
    """The plan in a few lines, for people."""
    s = plan.schedule
    n = plan.prompt_length
    targets = ", ".join(f"speedup >= {v}" if k == "speedup" else f"{k.removeprefix('max_')} <= {v}"
                        for k, v in plan.targets.items())
    protected = s.protected_count(n)
    lines = [
        f"Plan for {plan.model or 'the model'} at {n} tokens ({targets})",
        f"  placement:       {plan.placement}",
        f"  stage layers:    {', '.join(map(str, plan.layers))}",
        f"  keep ratio:      {plan.keep_ratio} per stage; {protected} tokens always kept (first {s.protected_first} "
        f"+ local window {s.local_window_ratio:g} of the prompt)",
        f"  tokens kept:     {' -> '.join(map(str, (n, *plan.tokens_per_stage)))} (prompt, then after each stage)",
        f"  prefill FLOPs:   {plan.flops / 1e12:.3f} T of {plan.base_flops / 1e12:.3f} T unpruned "
        f"({100 * plan.flops_fraction:.1f}%, scoring modules of width {plan.pruner_hidden_size} included)",
        f"  speedup bound:   {plan.speedup:.3f}x (analytic FLOPs, causal attention)",
        f"  KV cache:        {plan.kv_bytes / MIB:.1f} MiB of {plan.base_kv_bytes / MIB:.1f} MiB unpruned "
        f"({100 * plan.kv_fraction:.1f}%, {plan.kv_dtype}, batch 1)",
    ]
    others = [a for a in plan.alternatives if a["placement"] != plan.placement]
    if others:
        lines.append("  other placements (in preference order): " + "; ".join(
            f"{a['placement']} r={a['keep_ratio']}" if a["keep_ratio"] is not None
            else f"{a['placement']} cannot (best {a['speedup']:.2f}x, KV {100 * a['kv_fraction']:.1f}%)" for a in others))
    lines.append(f"  config:          SDTPConfig(prune_layers={list(plan.layers)}, keep_ratio={plan.keep_ratio}, "
                 f"protected_first={s.protected_first}, local_window_ratio={s.local_window_ratio:g})")
    return lines
