"""``sdtp bench plan-speed``: predicted against measured prefill speedup of schedules planned for targets.

    sdtp bench plan-speed                                    # SmolLM2-135M, 4K and 8K tokens, targets 1.5x and 2x
    sdtp bench plan-speed --scorer recency --num-stages 8    # training-free scorer on a planned grid

For every prompt length and target speedup the planner (``planning``) chooses a schedule; the prefill of
the unpruned base and of every planned schedule at that length are then timed in interleaved rounds,
as ``sdtp bench speed`` times its prefill column (``greedy_timing.greedy_run`` without decode steps, in
``timing.interleaved``). The prediction is the analytic FLOPs bound (``bench.flops``). One untimed
prefill per schedule afterwards gives the K/V bytes cached (against the plan's KV model) and the tokens
entering each layer (against the plan's).

Scorers: ``trained`` plans over the adapter's own stages, as ``SDTPModel.use_schedule(speedup=...)``
does, and ranks with the trained modules; ``recency`` / ``norm`` plan over a fresh stage grid of
``SDTPConfig`` (``--num-stages``, ``--first-layer``, the adapter's protected tokens) and rank with that
training-free scorer (``use_scorer``), taken as free in the FLOPs: trained modules exist only at the
adapter's stages. The speed of a schedule does not depend on which tokens it keeps.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from ..compat import cache_of
from ..config import SDTPConfig
from ..model import SDTPModel
from ..planning import Plan, plan_for_adapter, plan_schedule
from ..pruning.cache import kv_bytes
from ..pruning.scorers import norm_scorer, recency_scorer
from ..timing import interleaved
from ..zoo import MODELS
from .common import add_model_arguments, add_text_arguments, read_user_text
from .flops import prefill_call
from .meta import results_dir, run_meta, write_results
from .greedy_timing import greedy_run, summary
from .speed import DTYPES, MIB
from .speed_inputs import load_inputs

SCORERS = {"trained": None, "recency": recency_scorer, "norm": norm_scorer}
TOLERANCE = 0.10  # the target: measured within 10% of predicted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_text_arguments(parser)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192], help="prompt lengths in tokens")
    parser.add_argument("--speedups", type=float, nargs="+", default=[1.5, 2.0], help="target speedups to plan for")
    parser.add_argument("--scorer", default="trained", choices=sorted(SCORERS),
                        help="trained: the adapter's stages and modules; recency/norm: a fresh grid, training-free scorer")
    parser.add_argument("--num-stages", type=int, default=SDTPConfig.num_stages, help="stage grid for --scorer recency/norm")
    parser.add_argument("--first-layer", type=int, default=SDTPConfig.first_layer, help="first stage for --scorer recency/norm")
    parser.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds per length")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights and activations dtype")
    parser.add_argument("--random-init", action="store_true",
                        help=f"random weights and tokens from a shape ({', '.join(sorted(MODELS))}...), as in `sdtp bench speed`")
    parser.add_argument("--shape-config", default=None, metavar="PATH",
                        help="with --random-init: build from this transformers config.json (fresh modules)")


def plan_for(sdtp: SDTPModel, scorer: str, target: float, length: int, grid: SDTPConfig) -> Plan:
    """The schedule ``scorer`` runs for ``target`` at ``length`` tokens (see the module docstring)."""
    if SCORERS[scorer] is None:
        return plan_for_adapter(sdtp, prompt_length=length, speedup=target)
    return plan_schedule(sdtp.base_model, prompt_length=length, speedup=target, config=grid, pruner_hidden_size=0,
                         kv_dtype=sdtp.base_model.dtype)


def activate(sdtp: SDTPModel, scorer: str, plan: Plan | None) -> contextlib.ExitStack:
    """Context: ``plan``'s schedule under ``scorer`` (``None``: pruning disabled, the base)."""
    stack = contextlib.ExitStack()
    if plan is None:
        stack.enter_context(sdtp.disable_pruning())
        return stack
    if SCORERS[scorer] is not None:
        stack.enter_context(sdtp.use_scorer(SCORERS[scorer]))
    stack.enter_context(sdtp.use_schedule(plan.layers, plan.keep_ratio, plan.schedule.local_window_ratio))
    return stack


def measure_length(sdtp: SDTPModel, ids: torch.Tensor, targets: list[float], scorer: str, grid: SDTPConfig,
                   repeats: int, warmup: int) -> list[dict]:
    """One row per target for the prompt ``ids [1, N]``: predicted and measured speedup, KV, kept tokens."""
    length = ids.shape[1]
    plans = {f"{t:g}x": plan_for(sdtp, scorer, t, length, grid) for t in targets}
    prefill: dict[str, list[float]] = {"base": [], **{name: [] for name in plans}}

    def run(name: str, plan: Plan | None):
        def go():
            with activate(sdtp, scorer, plan):
                times, _ = greedy_run(sdtp, ids, decode_tokens=0)
            prefill[name].append(times.prefill_s)

        return go

    interleaved({"base": run("base", None), **{name: run(name, plan) for name, plan in plans.items()}}, repeats, warmup)
    base_kv = kv_bytes(cache_of(prefill_call(sdtp, ids, prune=False)()))
    base = summary(prefill["base"][warmup:])
    rows = []
    for (name, plan), target in zip(plans.items(), targets):
        with activate(sdtp, scorer, plan):
            kv = kv_bytes(cache_of(prefill_call(sdtp, ids, prune=True)()))
            kept = sdtp.last_pruning.kept_counts(len(plan.tokens_per_layer))
        timed = summary(prefill[name][warmup:])
        measured = base["median"] / timed["median"]
        rows.append({
            "tokens": length, "target": target, "placement": plan.placement, "layers": list(plan.layers),
            "keep_ratio": plan.keep_ratio, "tokens_per_stage": list(plan.tokens_per_stage),
            "predicted_speedup": plan.speedup, "measured_speedup": measured,
            "measured_over_predicted": measured / plan.speedup,
            "within_tolerance": abs(measured / plan.speedup - 1) <= TOLERANCE,
            "prefill_s": {"base": base, "planned": timed},
            "kv_mib": {"predicted": plan.kv_bytes / MIB, "measured": kv / MIB,
                       "base_predicted": plan.base_kv_bytes / MIB, "base_measured": base_kv / MIB},
            "kv_fraction": {"predicted": plan.kv_fraction, "measured": kv / base_kv},
            "kept_as_planned": kept == list(plan.tokens_per_layer),
        })
    return rows


def run(args: argparse.Namespace) -> dict:
    """Plan and measure every (length, target); writes ``plan-speed-<model>[-<scorer>][-cuda].json`` to ``args.out``
    (no scorer suffix for ``trained``)."""
    if not args.lengths or min(args.lengths) < 1:
        raise ValueError(f"--lengths {args.lengths} is invalid: expected token counts >= 1")
    if not args.speedups or min(args.speedups) <= 0:
        raise ValueError(f"--speedups {args.speedups} is invalid: expected target speedups > 0")
    if args.repeats < 1 or args.warmup < 0:
        raise ValueError(f"--repeats {args.repeats} / --warmup {args.warmup} is invalid: expected >= 1 / >= 0")
    text = read_user_text(args)
    sdtp, all_ids, description = load_inputs(
        args.model, args.adapter, getattr(torch, args.dtype), args.device, args.random_init, max(args.lengths),
        args.shape_config, getattr(args, "revision", None), text,
    )
    if max(args.lengths) > len(all_ids):
        raise ValueError(f"--lengths {args.lengths} exceed the {len(all_ids)} input tokens available")
    schedule = sdtp.schedule
    grid = SDTPConfig(num_stages=args.num_stages, first_layer=args.first_layer, protected_first=schedule.protected_first,
                      local_window_ratio=schedule.local_window_ratio)
    section = (f"plan-speed-{description['model']}" + ("" if args.scorer == "trained" else f"-{args.scorer}")
               + ("-cuda" if torch.device(args.device).type == "cuda" else ""))
    meta = run_meta(getattr(args, "command_line", "sdtp bench plan-speed"), device=args.device)
    results = {**description, "device": args.device, "scorer": args.scorer, "adapter_stages": list(schedule.layers),
               "grid": None if args.scorer == "trained" else {"num_stages": args.num_stages, "first_layer": args.first_layer},
               "repeats": args.repeats, "warmup": args.warmup, "tolerance": TOLERANCE, "rows": []}
    for length in args.lengths:
        ids = torch.tensor([all_ids[:length]], device=args.device)
        for row in measure_length(sdtp, ids, args.speedups, args.scorer, grid, args.repeats, args.warmup):
            results["rows"].append(row)
            print(f"{length} tokens, target {row['target']:g}x: {row['placement']} r={row['keep_ratio']}: predicted "
                  f"{row['predicted_speedup']:.2f}x, measured {row['measured_speedup']:.2f}x "
                  f"({100 * (row['measured_over_predicted'] - 1):+.1f}%), KV {row['kv_mib']['measured']:.1f} MiB "
                  f"(predicted {row['kv_mib']['predicted']:.1f})", flush=True)
        write_results(section, meta, results, results_dir(args))  # after every length: a cut-short run keeps its rows
    return results


def render(data: dict) -> list[str]:
    res = data["results"]
    rows = res["rows"]
    within = sum(r["within_tolerance"] for r in rows)
    scorer = ("the adapter's trained modules on subsets of its stages " + str(res["adapter_stages"])
              if res["scorer"] == "trained" else
              f"the training-free {res['scorer']} scorer on a grid of {res['grid']['num_stages']} stages from layer "
              f"{res['grid']['first_layer']}")
    lines = [
        f"## Planned schedules: predicted vs measured speedup, {res['model']}"
        + ("" if res["scorer"] == "trained" else f", {res['scorer']} scorer"),
        "",
        f"Schedules from the planner (`sdtp plan`, `use_schedule(speedup=...)`) for each target, ranked by {scorer}. "
        f"Predicted: the analytic FLOPs bound; measured: median prefill of {res['repeats']} interleaved rounds "
        f"against the base ({res['dtype']}, {res['device']}, {res['weights']}; {res['input']}). "
        f"Measured within {100 * res['tolerance']:.0f}% of predicted: **{within} of {len(rows)}**.",
        "",
        "| tokens | target | placement | r | tokens after each stage | predicted | measured | measured / predicted "
        "| KV MiB predicted / measured (base) | kept as planned |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kv = r["kv_mib"]
        lines.append(
            f"| {r['tokens']} | {r['target']:g}x | {r['placement']} | {r['keep_ratio']} | "
            f"{', '.join(map(str, r['tokens_per_stage']))} | {r['predicted_speedup']:.2f}x | {r['measured_speedup']:.2f}x | "
            f"{r['measured_over_predicted']:.3f} | {kv['predicted']:.1f} / {kv['measured']:.1f} ({kv['base_measured']:.1f}) | "
            f"{'yes' if r['kept_as_planned'] else '**no**'} |"
        )
    return lines
