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


def select_indices(scores: torch.Tensor, protected: torch.Tensor, budget: int, finite: bool = False) -> torch.Tensor:
    """The slots ``select_mask`` keeps when every row has the same ``budget`` and every token is a
    candidate, as indices in increasing order (two sorts instead of a mask and its bookkeeping).

    Args:
        scores: ``[B, n]`` higher = more important.
        protected: ``[B, n]`` bool.
        budget: tokens to keep per row, in ``[1, n]``.
        finite: the caller guarantees finite scores (skips the NaN/inf handling).
    Returns:
        ``[B, budget]`` long, sorted.
    """
    n = scores.shape[1]
    if not 0 < budget <= n:
        raise ValueError(f"budget={budget} must be in [1, {n}] for {n} tokens")
    return _ranked(scores, protected, finite).argsort(dim=-1, descending=True, stable=True)[:, :budget].sort(dim=-1).values


def select_padded(
    scores: torch.Tensor,
    protected: torch.Tensor,
    candidates: torch.Tensor,
    budgets: torch.Tensor,
    width: int,
    finite: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``select_mask`` for rows with their own budgets, as the slots to gather: ``width`` per row, the
    kept ones in increasing order on the right, filler slots (``width - budgets[b]`` of them) on the left.

    Args:
        scores, protected, candidates: ``[B, n]`` as for ``select_mask``.
        budgets: ``[B]`` long on the device, each at most the row's candidates; ``width`` = their maximum.
        finite: the caller guarantees finite scores (skips the NaN/inf handling).
    Returns:
        order: ``[B, width]`` slots (fillers point at slot 0); valid: ``[B, width]`` bool, False on fillers.
    """
    ranked = _ranked(scores, protected, finite).masked_fill(~candidates, float("-inf"))
    best = ranked.argsort(dim=-1, descending=True, stable=True)[:, :width]
    kept = torch.arange(width, device=scores.device)[None] < budgets[:, None]
    key = torch.where(kept, best, -1).sort(dim=-1).values  # fillers (-1) first, then the kept slots in order
    return key.clamp(min=0), key >= 0


def _ranked(scores: torch.Tensor, protected: torch.Tensor, finite: bool = False) -> torch.Tensor:
    """Scores as ranking keys: protected first (``+inf``), NaN last, ``+inf`` scores just below protected."""
    if not finite:
        limits = torch.finfo(torch.float32)
        scores = torch.nan_to_num(scores.float(), nan=limits.min, posinf=limits.max, neginf=limits.min)
    return scores.float().masked_fill(protected, float("inf"))
