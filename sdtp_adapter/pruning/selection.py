"""The keep rule shared by inference and training: protected tokens plus the top-scored rest.

Inference ranks tokens by ``scores + bias``, where the bias (computed once per forward and gathered
per stage) is ``+inf`` on protected tokens and ``-inf`` on slots that may not be chosen (padding,
filler slots), so one add replaces the masking a stage would otherwise repeat. ``select_mask`` is the
plain statement of the rule (training and the tests' reference).
"""

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


def ranking_bias(protected: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, n]`` float32: ``+inf`` on protected tokens, ``-inf`` on non-candidates, 0 elsewhere."""
    bias = torch.zeros(protected.shape, device=protected.device).masked_fill_(protected, float("inf"))
    if candidates is not None:
        bias.masked_fill_(~candidates, float("-inf"))
    return bias


def ranking_keys(scores: torch.Tensor, bias: torch.Tensor, finite: bool = False) -> torch.Tensor:
    """``[B, n]`` scores as float32 ranking keys plus ``bias``.

    Non-finite scores are mapped into the float32 range first (NaN and ``-inf`` to the lowest value,
    ``+inf`` to the highest), so a protected token always outranks them and a non-candidate always
    ranks below them; ``finite=True`` (the caller guarantees finite scores) skips that pass.
    """
    scores = scores.float()
    if not finite:
        limits = torch.finfo(torch.float32)
        scores = torch.nan_to_num(scores, nan=limits.min, posinf=limits.max, neginf=limits.min)
    return scores + bias


def top_slots(keys: torch.Tensor, budget: int) -> torch.Tensor:
    """``[B, budget]`` long: the ``budget`` highest keys of each row (ties to the earlier slot), in slot order."""
    n = keys.shape[1]
    if not 0 < budget <= n:
        raise ValueError(f"budget={budget} must be in [1, {n}] for {n} tokens")
    return keys.argsort(dim=-1, descending=True, stable=True)[:, :budget].sort(dim=-1).values


def filler_masks(stage_budgets: list[tuple[int, ...]], device=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per stage, which slots of a padded batch's selection are fillers, from the host budgets alone.

    Rows keep their own budgets ``b``; the batch keeps ``w = max(b)`` slots per row, so a row's
    ``w - b`` lowest-ranked picks become fillers and move to the left (see ``top_slots_padded``).
    All stages are built with one host-to-device copy.

    Args:
        stage_budgets: per stage, the budget of every row.
    Returns:
        per stage ``(drop, valid)``, each ``[B, w]`` bool: ``drop`` marks ranks ``>= b`` (in rank
        order), ``valid`` marks the last ``b`` slots (in slot order, after the fillers).
    """
    widths = [max(budgets) for budgets in stage_budgets]
    thresholds = torch.tensor([[budgets, [w - b for b in budgets]] for budgets, w in zip(stage_budgets, widths)], device=device)
    grid = torch.arange(max(widths), device=device) >= thresholds[..., None]  # [stages, 2, B, max w]
    return [tuple(stage[..., :w].unbind(0)) for stage, w in zip(grid.unbind(0), widths)]


def top_slots_padded(keys: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Slots to gather for rows with their own budgets: ``w`` per row, the kept ones in slot order on
    the right, fillers on the left pointing at slot 0.

    Args:
        keys: ``[B, n]`` ranking keys (non-candidates at ``-inf``).
        drop: ``[B, w]`` bool from ``filler_masks``; row ``b``'s budget is ``w - drop[b].sum()``.
    Returns:
        ``[B, w]`` long.
    """
    best = keys.argsort(dim=-1, descending=True, stable=True)[:, : drop.shape[1]]
    return best.masked_fill(drop, -1).sort(dim=-1).values.clamp(min=0)  # fillers (-1) sort first


def select_padded(
    scores: torch.Tensor, protected: torch.Tensor, candidates: torch.Tensor, budgets: list[int], finite: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``select_mask`` as gather slots for rows with their own budgets (``top_slots_padded`` on the
    keys of ``scores``); returns ``order [B, w]`` and ``valid [B, w]`` (False on fillers)."""
    (drop, valid), = filler_masks([tuple(budgets)], scores.device)
    keys = ranking_keys(scores.detach(), ranking_bias(protected, candidates), finite)
    return top_slots_padded(keys, drop), valid


def select_indices(scores: torch.Tensor, protected: torch.Tensor, budget: int, finite: bool = False) -> torch.Tensor:
    """The slots ``select_mask`` keeps when every row has the same ``budget`` and every token is a
    candidate, as ``[B, budget]`` indices in increasing order."""
    return top_slots(ranking_keys(scores.detach(), ranking_bias(protected), finite), budget)


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
    keys = ranking_keys(scores.detach(), ranking_bias(protected, candidates))
    order = keys.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=scores.device).expand(rows, n))
    return rank < torch.tensor(budgets, device=scores.device)[:, None]
