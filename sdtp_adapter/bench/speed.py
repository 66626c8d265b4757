"""``sdtp bench speed``: what SDTP changes for a user, base vs SDTP interleaved in one process.

    sdtp bench speed                                     # SmolLM2-135M, 1K-8K held-out tokens
    sdtp bench speed --model gemma3-270m                 # 1K-16K
    sdtp bench speed --model ./my-model --adapter ./my-adapter --text-file notes.txt --lengths 1024 2048
    sdtp bench speed --model Qwen/Qwen2.5-0.5B-Instruct --adapter owner/sdtp-qwen --dataset wikitext \
        --dataset-config wikitext-103-raw-v1 --split 'train[:2000]'
    sdtp bench speed --device cuda --dtype bfloat16      # section speed-<model>-cuda
    sdtp bench speed --random-init --lengths 1024 2048   # no weights needed: shapes decide speed
    sdtp bench speed --random-init --model llama3.1-8b --device cuda --dtype bfloat16 --out DIR
    python -m sdtp_adapter.bench.speed ...               # the same, without regenerating the page

Per prompt length: prefill latency (``logits_to_keep=1``), time to first token (prefill plus picking
the greedy token on the host), greedy decode tokens/s on the prefilled cache, peak memory during
prefill (see ``memory``), KV-cache bytes after prefill, and the analytic FLOPs of base and SDTP with
their ratio (the FLOPs bound). Once per run, at the smallest length, the analytic FLOPs are checked
against ``FlopCounterMode`` (see ``flops``). Every round runs one greedy generation of the base and
one of SDTP back to back (``timing.interleaved``); medians and min-max over ``--repeats`` rounds.

``--model`` is a packaged name, a local transformers folder or a Hub id (any other than a packaged
model needs ``--adapter``); the prompts are the held-out Shakespeare plays from their start, or the
user's ``--text-file`` / ``--dataset`` (``bench.common``).

Results: ``<--out DIR, default ./sdtp-bench>/speed-<model>[-cuda].json`` (``<model>``: the packaged
name, else the folder's or Hub id's last component, ``common.model_label``) and four PNGs next to it,
rewritten after every length so a run that is cut short keeps its finished rows. ``--random-init``
shapes (``bench.shapes``) include the Llama-3.2-1B and Llama-3.1-8B shapes, which ``recipes/gpu_bench.sh``
measures with SmolLM2 on one GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..architectures import model_dims
from ..compat import cache_of
from ..model import SDTPModel
from ..pruning.cache import kv_bytes
from ..timing import interleaved
from ..zoo import DEFAULT_MODEL, MODELS
from .common import add_revision_argument, add_text_arguments, read_user_text
from .components import component_costs
from .flops import flops_check, flops_speedup_bound, prefill_call, prefill_flops, pruned_prefill_flops
from .greedy_timing import GreedyTimes, greedy_run, summary
from .memory import cpu_method, peak_memory
from .meta import add_out_argument, results_dir, run_meta, write_results
from .shapes import SHAPES, check_finite
from .speed_inputs import default_lengths, load_inputs
from .speed_render import METHODS, plot, render  # noqa: F401 - render: this section's markdown

DTYPES = ("float32", "bfloat16", "float16")
MIB = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH",
        help=f"base model: a packaged name ({', '.join(sorted(MODELS))}), a local transformers folder or a Hub id; "
        f"with --random-init a shape: {', '.join(sorted(SHAPES))}",
    )
    add_revision_argument(parser)
    parser.add_argument(
        "--adapter", default=None, metavar="NAME_OR_PATH",
        help="adapter folder, shipped adapter name or Hub id (default: the shipped adapter of a packaged --model; "
        "required for any other --model)",
    )
    add_text_arguments(parser)
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=None,
        help="prompt lengths in tokens (default: 1K-8K SmolLM2 and other models, 1K-16K Gemma, 1K-32K the Llama shapes)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds per length")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    parser.add_argument("--decode-tokens", type=int, default=32, help="greedy tokens decoded after the first one")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (cuda writes section speed-<model>-cuda)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights and activations dtype")
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="random weights from recipes/configs/<model>.json and random tokens (speed only: timings depend on "
        "shapes, not weights; for machines without the model)",
    )
    parser.add_argument(
        "--shape-config", default=None, metavar="PATH",
        help="with --random-init: build from this transformers config.json instead (tests, other shapes); "
        "pruning modules are then fresh from SDTPConfig() unless --adapter",
    )
    parser.add_argument(
        "--no-flops-check", dest="flops_check", action="store_false",
        help="skip the FlopCounterMode check at the smallest length (the analytic bound is still computed)",
    )


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class SpeedSettings:
    """How each length is measured.

    Attributes:
        lengths: prompt lengths in tokens, measured in this order.
        repeats: timed interleaved rounds per length (>= 1).
        warmup: untimed rounds before them (>= 0).
        decode_tokens: greedy decode steps after the first token (>= 1).
        device: where the model runs.
        flops_check: check the analytic FLOPs against ``FlopCounterMode`` once, at the smallest length.
    """

    lengths: tuple[int, ...]
    repeats: int = 3
    warmup: int = 1
    decode_tokens: int = 32
    device: str = "cpu"
    flops_check: bool = True

    def __post_init__(self) -> None:
        if not self.lengths or any(n < 1 for n in self.lengths):
            raise ValueError(f"lengths={list(self.lengths)} must be a non-empty list of token counts >= 1")
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats} must be >= 1")
        if self.warmup < 0:
            raise ValueError(f"warmup={self.warmup} must be >= 0")
        if self.decode_tokens < 1:
            raise ValueError(f"decode_tokens={self.decode_tokens} must be >= 1")
        if torch.device(self.device).type not in ("cpu", "cuda"):
            raise ValueError(f"device={self.device!r} is not supported; allowed: 'cpu', 'cuda[:i]'")


def section_name(model: str, device: str) -> str:
    """``speed-<model>``, with ``-cuda`` for GPU runs (their own JSON and section on the page)."""
    return f"speed-{model}" + ("-cuda" if torch.device(device).type == "cuda" else "")


# ---------------------------------------------------------------------------------------------- measuring
def measure_length(
    sdtp: SDTPModel, ids: torch.Tensor, repeats: int, warmup: int, decode_tokens: int, device: str = "cpu"
) -> dict:
    """One row of the speed table for the prompt ``ids [1, N]`` (already on ``device``).

    Timed: ``warmup`` + ``repeats`` interleaved rounds of one base and one SDTP greedy generation.
    Untimed afterwards: one prefill per method under the peak-memory probe, whose cache gives the
    KV bytes and whose pruning record gives the tokens entering each layer.
    """
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"ids has shape {tuple(ids.shape)}; the speed benchmark needs one row, shape [1, N]")
    dims = model_dims(sdtp.base_model)
    length = ids.shape[1]
    records: dict[str, list[GreedyTimes]] = {name: [] for name in METHODS}

    def generation(name: str, prune: bool):
        def go():
            with contextlib.nullcontext() if prune else sdtp.disable_pruning():
                times, _ = greedy_run(sdtp, ids, decode_tokens)
            records[name].append(times)

        return go

    interleaved({name: generation(name, name == "sdtp") for name in METHODS}, repeats, warmup)
    timed = {name: records[name][warmup:] for name in METHODS}

    peak_mib, kv_mib = {}, {}
    for name in METHODS:
        out, peak = peak_memory(prefill_call(sdtp, ids, prune=name == "sdtp"), device)
        peak_mib[name], kv_mib[name] = peak / MIB, kv_bytes(cache_of(out)) / MIB
        del out
    per_layer = sdtp.last_pruning.kept_counts(dims.num_layers)  # the SDTP prefill just above
    components = component_costs(sdtp, ids)

    schedule, hidden = sdtp.active_schedule, sdtp.sdtp_config.pruner_hidden_size
    prefill = {name: summary([t.prefill_s for t in timed[name]]) for name in METHODS}
    return {
        "tokens": length,
        "prefill_s": prefill,
        "ttft_s": {name: summary([t.ttft_s for t in timed[name]]) for name in METHODS},
        "decode_tok_s": {name: summary([decode_tokens / t.decode_s for t in timed[name]]) for name in METHODS},
        "speedup": prefill["base"]["median"] / prefill["sdtp"]["median"],
        "flops": {
            "base": prefill_flops(dims, [length] * dims.num_layers),
            "sdtp": pruned_prefill_flops(dims, schedule, length, hidden),
            "bound": flops_speedup_bound(dims, schedule, length, hidden),
        },
        "peak_mib": peak_mib,
        "kv_mib": kv_mib,
        "tokens_per_layer": per_layer,
        "last_layer_tokens": per_layer[-1],
        "components": components,
    }


def benchmark(
    sdtp: SDTPModel,
    all_ids: list[int],
    settings: SpeedSettings,
    section: str,
    meta: dict,
    description: dict,
    directory: Path,
) -> dict:
    """Measure every length of ``settings`` on prompts cut from ``all_ids``; write JSON and plots after each.

    ``description`` (model, dtype, weights, input...) is stored as is. Returns the results dict.
    """
    too_long = [n for n in settings.lengths if n > len(all_ids)]
    if too_long:
        raise ValueError(f"lengths {too_long} exceed the {len(all_ids)} input tokens available")
    device = torch.device(settings.device)
    schedule = sdtp.active_schedule

    def prompt(length: int) -> torch.Tensor:
        return torch.tensor([all_ids[:length]], device=device)

    results = {
        **description,
        "device": settings.device,
        "stages": list(schedule.layers),
        "keep_ratio": schedule.keep_ratio,
        "pruner_hidden_size": sdtp.sdtp_config.pruner_hidden_size,
        "repeats": settings.repeats,
        "warmup": settings.warmup,
        "decode_tokens": settings.decode_tokens,
        "memory": cpu_method() if device.type == "cpu" else "torch.cuda.max_memory_allocated minus allocated before the call",
        "flops_check": flops_check(sdtp, prompt(min(settings.lengths))) if settings.flops_check else None,
        "rows": [],
        "plots": [],
    }
    for length in settings.lengths:
        row = measure_length(sdtp, prompt(length), settings.repeats, settings.warmup, settings.decode_tokens, settings.device)
        results["rows"].append(row)
        print(_progress(row), flush=True)
        results["plots"] = plot(results["rows"], section, results.get("model", ""), directory)
        write_results(section, meta, results, directory)  # after every length: a cut-short run keeps its rows
    return results


def _progress(row: dict) -> str:
    p, t, d = row["prefill_s"], row["ttft_s"], row["decode_tok_s"]
    return (
        f"{row['tokens']} tokens: prefill {1000 * p['base']['median']:.0f} / {1000 * p['sdtp']['median']:.0f} ms "
        f"({row['speedup']:.2f}x, bound {row['flops']['bound']:.2f}x), TTFT {1000 * t['base']['median']:.0f} / "
        f"{1000 * t['sdtp']['median']:.0f} ms, decode {d['base']['median']:.1f} / {d['sdtp']['median']:.1f} tok/s, "
        f"peak {row['peak_mib']['base']:.0f} / {row['peak_mib']['sdtp']:.0f} MiB, "
        f"KV {row['kv_mib']['base']:.1f} / {row['kv_mib']['sdtp']:.1f} MiB"
    )


# ---------------------------------------------------------------------------------------------- entry points
def run(args: argparse.Namespace) -> dict:
    """Run the section from parsed ``sdtp bench speed`` arguments; results go to ``args.out``."""
    settings = SpeedSettings(
        lengths=tuple(args.lengths or default_lengths(args.model)),
        repeats=args.repeats,
        warmup=args.warmup,
        decode_tokens=args.decode_tokens,
        device=args.device,
        flops_check=getattr(args, "flops_check", True),
    )
    text = read_user_text(args)  # before the model: a missing file fails at once
    sdtp, all_ids, description = load_inputs(
        args.model, args.adapter, getattr(torch, args.dtype), args.device, args.random_init, max(settings.lengths),
        getattr(args, "shape_config", None), getattr(args, "revision", None), text,
    )
    if args.random_init:  # random values must not send a kernel down a NaN/inf path
        check_finite(sdtp, torch.tensor([all_ids[: min(settings.lengths)]], device=args.device))
    section = section_name(description["model"], args.device)
    meta = run_meta(getattr(args, "command_line", "sdtp bench speed"), device=args.device)
    return benchmark(sdtp, all_ids, settings, section, meta, description, results_dir(args))


def main(argv: list[str] | None = None) -> dict:
    """``python -m sdtp_adapter.bench.speed [options]``: this section alone; no page is regenerated."""
    parser = argparse.ArgumentParser(prog="python -m sdtp_adapter.bench.speed", description=__doc__.splitlines()[0])
    add_arguments(parser)
    add_out_argument(parser, page=False)  # this entry point regenerates no page
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command_line = "python -m sdtp_adapter.bench.speed " + " ".join(shlex.quote(a) for a in argv)
    return run(args)


if __name__ == "__main__":
    main()
