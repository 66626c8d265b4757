"""Training-free scorers for the same stage schedule (``SDTPModel.use_scorer``): the yardsticks a
trained adapter must beat. Each maps ``(layer, hidden [B, n, d], positions [B, n]) -> [B, n]``."""

from __future__ import annotations

import torch


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


SCORERS = {"random": random_scorer(), "recency": recency_scorer, "norm": norm_scorer}


def scorers_for(model) -> dict:
    """Every training-free scorer, named as in the benchmark tables, for ``model`` (a ``*ForCausalLM``)."""
    return {
        "random": random_scorer(),
        "recency (StreamingLLM-like)": recency_scorer,
        "hidden-state norm": norm_scorer,
    }
