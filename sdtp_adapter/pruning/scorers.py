"""Token scorers: the ``Scorer`` type and the training-free scorers for the same stage schedule
(``SDTPModel.use_scorer``), the yardsticks a trained adapter must beat. Each maps
``(layer, hidden [B, n, d], positions [B, n]) -> [B, n]``; the trained one is ``pruner.ModuleScorer``."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..architectures import attention_scaling, decoder_layers, rotated_query_key

Scorer = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(layer, hidden [B, n, d], positions [B, n]) -> scores [B, n]``; higher is kept first."""


def random_scorer(seed: int = 0):
    """Uniform random scores (a fixed generator, so runs are repeatable)."""
    generator = torch.Generator().manual_seed(seed)

    def score(layer: int, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return torch.rand(positions.shape, generator=generator).to(hidden.device)

    return score


def recency_scorer(layer: int, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Most recent tokens first (StreamingLLM-like: sinks + a recent window)."""
    return positions.float()


def norm_scorer(layer: int, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Hidden-state L2 norm."""
    return hidden.float().norm(dim=-1)


def last_query_attention_scorer(model: nn.Module):
    """LazyLLM-like: the attention each token receives from the last prompt token at the stage layer.

    Computed with layer ``L``'s own attention on the hidden states entering it (input norm -> q/k
    projections (+ per-head q/k norms) -> RoPE at the real positions -> ``softmax(q_last . k * scale)``),
    averaged over the query heads; grouped key/value heads are shared by their query heads as in the
    model. Padding and filler slots (position ``-1``) receive no attention and score 0.

    The row is the full-attention one even on a sliding-window layer: there the real row is zero
    outside the window, which would make this scorer a recency rule.

    Args:
        model: the ``*ForCausalLM`` the adapter is attached to (``SDTPModel.base_model``).

    Returns:
        a scorer ``(layer, hidden [B, n, d], positions [B, n]) -> [B, n]`` (float32, rows sum to 1).
    """
    num_layers = len(decoder_layers(model))

    def score(layer: int, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if not 0 <= layer < num_layers:
            raise ValueError(f"layer={layer} is invalid; allowed: 0..{num_layers - 1}")
        q, k = rotated_query_key(model, layer, hidden, positions)  # [B, H, n, hd], [B, KV, n, hd]
        # the last query is the real token with the largest position (the last slot in practice)
        last = positions.argmax(dim=1)
        q_last = q[torch.arange(q.shape[0], device=q.device), :, last]  # [B, H, hd]
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # GQA: query head h reads kv head h // groups
        logits = torch.einsum("bhd,bhnd->bhn", q_last.float(), k.float()) * attention_scaling(model, layer)
        logits = logits.masked_fill((positions < 0)[:, None, :], float("-inf"))
        return logits.softmax(dim=-1).mean(dim=1)

    return score


# the training-free scorers' names in the benchmark tables, and their command-line ids (--methods, --scorers)
RANDOM, RECENCY, NORM, LAST_QUERY = "random", "recency (StreamingLLM-like)", "hidden-state norm", "last-query attention (LazyLLM-like)"
SCORER_IDS = {"random": RANDOM, "recency": RECENCY, "norm": NORM, "last-query": LAST_QUERY}


def scorers_for(model) -> dict:
    """Every training-free scorer, named as in the benchmark tables, for ``model`` (a ``*ForCausalLM``)."""
    return {
        RANDOM: random_scorer(),
        RECENCY: recency_scorer,
        NORM: norm_scorer,
        LAST_QUERY: last_query_attention_scorer(model),
    }
