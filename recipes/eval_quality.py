"""Fidelity of the shipped SmolLM2 adapter on held-out text, against training-free scorers.

    python recipes/eval_quality.py                     # 12 windows, 2K prefix + 128 tokens
    python recipes/eval_quality.py --write-card        # also refresh the adapter's model card

Held-out plays (Hamlet, Macbeth, The Tempest, Twelfth Night, Julius Caesar) are never trained on.
Every scorer runs on the same schedule and budget; only the ranking of tokens differs.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch

from sdtp_adapter import SDTPModel
from sdtp_adapter.baselines import norm_scorer, random_scorer, recency_scorer
from sdtp_adapter.cli import SHIPPED_ADAPTERS
from sdtp_adapter.data.corpora import shakespeare_texts
from sdtp_adapter.evaluation import compare_scorers, text_windows
from sdtp_adapter.hub import write_model_card
from sdtp_adapter.zoo import MODELS, SMOLLM2_135M, load_model


LIMITS = (
    "The trained modules beat the random and hidden-norm scorers clearly but not the recency scorer on prose "
    "continuation, where a small model uses far context weakly; see docs/training.md for the training ablation. "
    "The adapter was trained on 640-token samples (Shakespeare windows and passkey / key-value / needle chats) and "
    "evaluated at 2,048 tokens."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=SMOLLM2_135M.name, choices=sorted(MODELS))
    parser.add_argument("--adapter", default=None, help="default: the shipped adapter of --model")
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--prefix", type=int, default=2048)
    parser.add_argument("--continuation", type=int, default=128)
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    args.adapter = args.adapter or str(SHIPPED_ADAPTERS / args.model)
    model, tokenizer = load_model(args.model)
    sdtp = SDTPModel.from_pretrained(model, args.adapter)
    windows = text_windows(tokenizer, list(shakespeare_texts("heldout").values()), args.windows, args.prefix + args.continuation, seed=0)
    scorers = {"SDTP (trained)": None, "random": random_scorer(0), "recency": recency_scorer, "hidden norm": norm_scorer}
    results = compare_scorers(sdtp, windows, args.prefix, scorers)
    counts = sdtp.schedule.tokens_per_layer(args.prefix, sdtp.config.num_hidden_layers)
    table = [
        f"Held-out Shakespeare, {args.windows} windows: {args.prefix}-token prefix prefilled with pruning "
        f"({counts[-1]} tokens reach the last layer), next {args.continuation} tokens fed on top of the pruned cache. "
        f"Unpruned continuation NLL {results['SDTP (trained)'].base_nll:.3f}.",
        "",
        "| scorer (same schedule) | continuation NLL | dNLL | top-1 agreement | KL (nats) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        table.append(f"| {name} | {r.nll:.3f} | {r.delta_nll_pct:+.2f}% | {r.top1:.3f} | {r.kl:.4f} |")
    table.insert(0, f"Model: {MODELS[args.model].upstream}.\n")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    table += ["", f"Measured {stamp} with `python recipes/eval_quality.py --model {args.model} --windows {args.windows} --prefix {args.prefix} --continuation {args.continuation}`."]
    markdown = "\n".join(table)
    print(markdown)
    print(json.dumps({k: v.as_dict() for k, v in results.items()}, indent=1))
    if args.write_card:
        name = "benchmarks.md" if args.model == SMOLLM2_135M.name else f"benchmarks-{args.model}.md"
        bench = Path(__file__).resolve().parents[1] / "docs" / name
        speed = bench.read_text().split("\n", 2)[2].split("\n\nReading:")[0] if bench.is_file() else "Run `python recipes/bench_prefill.py`."
        card_results = markdown + "\n\n" + LIMITS + "\n\n### Prefill speed (2-core CPU)\n\n" + speed.replace("# ", "#### ")
        write_model_card(
            args.adapter,
            sdtp.sdtp_config,
            card_results,
            f"`python recipes/train.py --model {args.model}` (see docs/training.md for the settings used), then "
            f"`python recipes/eval_quality.py --model {args.model} --write-card` and "
            f"`python recipes/bench_prefill.py --model {args.model}`.",
        )
        (Path(args.adapter) / "eval_results.json").write_text(json.dumps({k: v.as_dict() for k, v in results.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
