"""Prefill benchmark: base vs SDTP interleaved in one process; writes docs/benchmarks.md.

    python recipes/bench_prefill.py                       # 1K/2K/4K/8K, shipped adapter
    python recipes/bench_prefill.py --lengths 1024 2048 --repeats 3

Inputs are real held-out text (Hamlet, Macbeth...). Each round runs the base prefill and the SDTP
prefill back to back; the table reports medians (and min/max) of wall-clock time, the speedup, the
schedule's analytic FLOPs bound and the KV-cache bytes after prefill.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

from sdtp_adapter import SDTPModel
from sdtp_adapter.architectures import model_dims
from sdtp_adapter.cli import SHIPPED_ADAPTERS
from sdtp_adapter.data.corpora import shakespeare_texts
from sdtp_adapter.pruning.cache import kv_bytes
from sdtp_adapter.schedule import flops_speedup_bound
from sdtp_adapter.timing import interleaved, median
from sdtp_adapter.zoo import MODELS, SMOLLM2_135M, load_model

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONFIGS = Path(__file__).resolve().parent / "configs"


def cache_of(output):
    return getattr(output, "cache", None) or output.past_key_values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=SMOLLM2_135M.name, choices=sorted(MODELS))
    parser.add_argument("--adapter", default=None, help="default: the shipped adapter of --model")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="default: 1K-8K (SmolLM2), 1K-16K (Gemma)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    parser.add_argument("--output", default=None, help="default: docs/benchmarks.md (SmolLM2), docs/benchmarks-<model>.md")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="speed only: random weights from recipes/configs/<model>.json and random tokens "
        "(for machines without the model; timings depend on shapes, not weights)",
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    smol = args.model == SMOLLM2_135M.name
    args.adapter = args.adapter or str(SHIPPED_ADAPTERS / args.model)
    args.lengths = args.lengths or ([1024, 2048, 4096, 8192] if smol else [1024, 2048, 4096, 8192, 16384])
    args.output = args.output or str(DOCS / ("benchmarks.md" if smol else f"benchmarks-{args.model}.md"))
    dtype = getattr(torch, args.dtype)
    if args.random_init:
        config = AutoConfig.from_pretrained(CONFIGS / f"{args.model}.json")
        config.max_position_embeddings = max(config.max_position_embeddings, max(args.lengths))
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
        all_ids = torch.randint(10, config.vocab_size, (max(args.lengths),)).tolist()
    else:
        model, tokenizer = load_model(args.model, dtype=dtype)
        text = "\n\n".join(shakespeare_texts("heldout").values())
        all_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    model.to(args.device)
    sdtp = SDTPModel.from_pretrained(model, args.adapter)
    dims = model_dims(model)
    rows = []
    for length in args.lengths:
        if length > len(all_ids):
            raise ValueError(f"--lengths {length}: the held-out text has only {len(all_ids)} tokens")
        ids = torch.tensor([all_ids[:length]], device=args.device)

        def run(enabled: bool):
            def go():
                with torch.inference_mode(), (contextlib.nullcontext() if enabled else sdtp.disable_pruning()):
                    out = sdtp(ids, use_cache=True, logits_to_keep=1)
                if args.device != "cpu":
                    torch.cuda.synchronize()
                return out

            return go

        times = interleaved({"base": run(False), "sdtp": run(True)}, args.repeats, args.warmup)
        base_kv, sdtp_kv = kv_bytes(cache_of(run(False)())), kv_bytes(cache_of(run(True)()))
        counts = sdtp.last_pruning.kept_counts(dims.num_layers)
        row = {
            "tokens": length,
            "base_s": median(times["base"]),
            "sdtp_s": median(times["sdtp"]),
            "base_minmax": [min(times["base"]), max(times["base"])],
            "sdtp_minmax": [min(times["sdtp"]), max(times["sdtp"])],
            "speedup": median(times["base"]) / median(times["sdtp"]),
            "flops_bound": flops_speedup_bound(dims, sdtp.schedule, length, sdtp.sdtp_config.pruner_hidden_size),
            "kv_base_mb": base_kv / 2**20,
            "kv_sdtp_mb": sdtp_kv / 2**20,
            "last_layer_tokens": counts[-1],
        }
        rows.append(row)
        print(json.dumps(row))
        write_report(rows, args, sdtp)  # after every length, so a long run that is cut short keeps its rows


def table(rows: list[dict]) -> list[str]:
    """Markdown table of benchmark rows (times in milliseconds)."""
    lines = [
        "| tokens | base ms | SDTP ms | speedup | FLOPs bound | KV base MiB | KV SDTP MiB | tokens at last layer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base, sdtp = [1000 * x for x in r["base_minmax"]], [1000 * x for x in r["sdtp_minmax"]]
        lines.append(
            f"| {r['tokens']} | {1000 * r['base_s']:.1f} [{base[0]:.1f}-{base[1]:.1f}] "
            f"| {1000 * r['sdtp_s']:.1f} [{sdtp[0]:.1f}-{sdtp[1]:.1f}] | {r['speedup']:.2f}x "
            f"| {r['flops_bound']:.2f}x | {r['kv_base_mb']:.1f} | {r['kv_sdtp_mb']:.1f} | {r['last_layer_tokens']} |"
        )
    return lines


def write_report(rows: list[dict], args, sdtp: SDTPModel) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    weights = "random weights (speed only)" if args.random_init else "real weights"
    data = "random tokens" if args.random_init else "held-out Shakespeare text"
    device = torch.cuda.get_device_name() if args.device != "cpu" else f"CPU, {torch.get_num_threads()} torch threads"
    flags = f" --warmup {args.warmup} --device {args.device} --dtype {args.dtype}" + (" --random-init" if args.random_init else "")
    lines = [
        "# Prefill benchmark",
        "",
        f"{MODELS[args.model].upstream} ({args.dtype}, sdpa, {weights}) with the shipped adapter, stages "
        f"{list(sdtp.schedule.layers)}, keep ratio {sdtp.schedule.keep_ratio} per stage. Input: {data}.",
        "",
        f"- date: {stamp}",
        f"- machine: {device}; {platform.machine()}, {platform.platform()}",
        f"- versions: torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}",
        f"- command: `python recipes/bench_prefill.py --model {args.model} --lengths {' '.join(map(str, args.lengths))} --repeats {args.repeats}{flags}`",
        f"- method: base and SDTP prefill (`logits_to_keep=1`, DynamicCache) alternate in one process, "
        f"{args.repeats} timed rounds after {args.warmup} warm-up round(s); medians, min-max in brackets.",
        "",
    ] + table(rows)
    Path(args.output).write_text("\n".join(lines) + "\n")
    Path(args.output).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
