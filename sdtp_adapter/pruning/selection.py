"""The keep rule shared by inference and training: protected tokens plus the top-scored rest."""

from __future__ import annotations

import torch

from ..schedule import StageSchedule


def protected_mask(positions: torch.Tensor, length: int, schedule: StageSchedule) -> torch.Tensor:
    """Which tokens may never be pruned.

    Args:
        positions: ``[B, n]`` original positions (0-based) of the tokens present.
        length: number of real tokens in the prompt.
    Returns:
        ``[B, n]`` bool, True for the first ``protected_first`` and the last ``local_window`` positions.
    """
    head = positions < schedule.protected_first
    tail = positions >= length - schedule.local_window(length)
    return head | tail


def select_tokens(
    scores: torch.Tensor,
    protected: torch.Tensor,
    budget: int,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices of the tokens to keep, in their original order.

    Protected tokens are always chosen and count inside ``budget``; the remaining slots go to the
    highest-scored candidates. Non-candidates (tokens already pruned, in training) are never chosen.

    Args:
        scores: ``[B, n]`` higher = more important.
        protected: ``[B, n]`` bool.
        budget: number of tokens to keep per row (``<=`` number of candidates).
        candidates: ``[B, n]`` bool or None (all tokens are candidates).
    Returns:
        ``[B, budget]`` long indices into the ``n`` axis, sorted ascending.
    """
    n = scores.shape[-1]
    if not 0 < budget <= n:
        raise ValueError(f"budget={budget} must be in [1, {n}] for {n} tokens")
    ranked = scores.detach().float().masked_fill(protected, float("inf"))
    if candidates is not None:
        ranked = ranked.masked_fill(~candidates, float("-inf"))
    index = torch.topk(ranked, budget, dim=-1, sorted=False).indices
    return index.sort(dim=-1).values
