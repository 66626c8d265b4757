"""Inputs every quality section shares: the model with its shipped adapter and held-out text windows."""

from __future__ import annotations

import argparse

import torch

from ..data.corpora import shakespeare_texts
from ..model import SDTPModel
from ..zoo import DEFAULT_MODEL, MODELS, SHIPPED_ADAPTERS, load_model
from .fidelity import text_windows


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS), help="packaged base model")
    parser.add_argument(
        "--adapter", default=None, help="adapter folder, shipped adapter name or Hub id (default: the shipped adapter of --model)"
    )


def load_sdtp(model: str, adapter: str | None = None) -> tuple[SDTPModel, object]:
    """``(SDTPModel with the adapter attached, tokenizer)`` for a packaged model (fp32, sdpa)."""
    base, tokenizer = load_model(model)
    return SDTPModel.from_pretrained(base, adapter or SHIPPED_ADAPTERS / model), tokenizer


def heldout_windows(tokenizer, count: int, length: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` ``[1, length]`` windows of the held-out plays (never trained on); same for every section."""
    return text_windows(tokenizer, list(shakespeare_texts("heldout").values()), count, length, seed=seed)


def heldout_ids(tokenizer, length: int) -> torch.Tensor:
    """``[1, length]`` tokens of the held-out plays from their start (speed runs)."""
    ids = tokenizer("\n\n".join(shakespeare_texts("heldout").values()), add_special_tokens=False)["input_ids"]
    if length > len(ids):
        raise ValueError(f"length={length}: the held-out text has only {len(ids)} tokens")
    return torch.tensor([ids[:length]])
