"""The keep rule shared by inference and training: protected tokens plus the top-scored rest."""

from __future__ import annotations

import torch

from ..schedule import StageSchedule


def protected_mask(positions: torch.Tensor, lengths: int | list[int], schedule: StageSchedule) -> torch.Tensor:
    """Which tokens may never be pruned.

    Args:
        positions: ``[B, n]`` real-token positions (0-based; negative for padding).
        lengths: real length of the prompt, one int for all rows or one per row.
    Returns:
        ``[B, n]`` bool, True for the first ``protected_first`` and the last ``local_window`` real positions.
    """
    rows = positions.shape[0]
    lengths = [lengths] * rows if isinstance(lengths, int) else list(lengths)
    length = torch.tensor(lengths, device=positions.device)[:, None]
    window = torch.tensor([schedule.local_window(n) for n in lengths], device=positions.device)[:, None]
    real = positions >= 0
    return real & ((positions < schedule.protected_first) | (positions >= length - window))


def select_mask(
    scores: torch.Tensor,
    protected: torch.Tensor,
    budgets: int | list[int],
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which tokens to keep: every protected token, then the highest-scored candidates.

    Protected tokens count inside the budget and are kept whatever the scores: ``+inf`` scores rank
    just below them, NaN scores rank lowest (with ``-inf``) among the candidates. Non-candidates
    (padding, tokens already pruned in training) are never chosen.

    Args:
        scores: ``[B, n]`` higher = more important.
        protected: ``[B, n]`` bool (a subset of the candidates).
        budgets: tokens to keep, one int for all rows or one per row; each at most the row's candidates.
        candidates: ``[B, n]`` bool or None (every token is a candidate).
    Returns:
        ``[B, n]`` bool with exactly ``budgets[b]`` True values in row ``b``.
    """
    rows, n = scores.shape
    budgets = [budgets] * rows if isinstance(budgets, int) else list(budgets)
    if any(not 0 < b <= n for b in budgets):
        raise ValueError(f"budgets={budgets} must each be in [1, {n}] for {n} tokens")
    finite = torch.finfo(torch.float32)
    ranked = torch.nan_to_num(scores.detach().float(), nan=finite.min, posinf=finite.max, neginf=finite.min)
    ranked = ranked.masked_fill(protected, float("inf"))
    if candidates is not None:
        ranked = ranked.masked_fill(~candidates, float("-inf"))
    order = ranked.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=scores.device).expand(rows, n))
    return rank < torch.tensor(budgets, device=scores.device)[:, None]
