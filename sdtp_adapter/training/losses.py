"""The SDTP losses: MSE to saliency and the exact pairwise ranking loss (memory-bounded)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..pruning.pruner import keep_margin, keep_probability


def mse_loss(keep_prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between keep probabilities ``[n]`` and normalised saliency ``[n]``."""
    return F.mse_loss(keep_prob.float(), target.float())


class _PairwiseRanking(torch.autograd.Function):
    """Mean over untied pairs i < j of ``softplus(-(s_i - s_j) * sign(t_i - t_j))``, chunked by rows
    so that forward and backward hold ``chunk x n`` values at a time instead of ``n x n``."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        work = torch.promote_types(scores.dtype, torch.float32)  # low precision sums drift
        s, t = scores.detach().to(work), targets.detach().to(work)
        n = s.shape[0]
        total = s.new_zeros(())
        count = 0
        columns = torch.arange(n, device=s.device)
        for start in range(0, n, chunk):
            rows = columns[start : start + chunk]
            d, y, upper = _pair_block(s, t, rows, columns)
            total += F.softplus(-d * y).masked_fill(~upper, 0).sum()
            count += int(upper.sum())
        ctx.save_for_backward(s, t)
        ctx.chunk, ctx.count, ctx.dtype = chunk, count, scores.dtype
        return total / max(count, 1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        s, t = ctx.saved_tensors
        n = s.shape[0]
        grad = torch.zeros_like(s)
        columns = torch.arange(n, device=s.device)
        for start in range(0, n, ctx.chunk):
            rows = columns[start : start + ctx.chunk]
            d, y, upper = _pair_block(s, t, rows, columns)
            w = (-y * torch.sigmoid(-d * y)).masked_fill(~upper, 0)  # d(loss_ij)/d(s_i); d/d(s_j) = -w
            grad[rows] += w.sum(dim=1)
            grad -= w.sum(dim=0)
        scale = grad_out / max(ctx.count, 1)
        return (grad * scale).to(ctx.dtype), None, None


def _pair_block(s, t, rows, columns):
    """Score differences, target signs and the "untied, j > i" mask for a block of rows."""
    d = s[rows, None] - s[None, :]
    y = torch.sign(t[rows, None] - t[None, :])
    upper = (columns[None, :] > rows[:, None]) & (y != 0)
    return d, y, upper


def ranking_loss(scores: torch.Tensor, targets: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """The paper's pairwise ranking loss on one sequence, normalised by the number of pairs.

    ``L = mean_{i<j, t_i != t_j} log(1 + exp(-(s_i - s_j) * sign(t_i - t_j)))``. Pairs with equal
    targets are skipped (in the paper's sum they add the constant ``log 2`` and no gradient).
    Exact; memory is ``O(chunk * n)`` in forward and backward.

    Args:
        scores: ``[n]`` predicted scores (keep-minus-drop margins).
        targets: ``[n]`` saliency.
    Returns:
        scalar; 0 when every target is tied.
    """
    if scores.shape != targets.shape or scores.dim() != 1:
        raise ValueError(f"scores and targets must be 1-D of equal length; got {tuple(scores.shape)} and {tuple(targets.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    return _PairwiseRanking.apply(scores, targets, chunk)


def saliency_losses(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_mse, L_rank)`` of one stage on one sequence.

    Args:
        logits: ``[n, 2]`` module output for the tokens the stage may prune.
        target: ``[n]`` normalised saliency of those tokens.
    """
    return mse_loss(keep_probability(logits), target), ranking_loss(keep_margin(logits), target)


def weighted_saliency_loss(mse: torch.Tensor, rank: torch.Tensor, config) -> torch.Tensor:
    """``w_mse * L_mse + w_rank * L_rank`` with the weights of ``config`` (an ``SDTPConfig``): the
    saliency part of the joint objective and the whole warm-start loss, so the two cannot drift."""
    return config.mse_loss_weight * mse + config.rank_loss_weight * rank


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens (row t predicts token t + 1)."""
    mask = target_mask[:, 1:]
    if not bool(mask.any()):
        raise ValueError("target_mask selects no target token after position 0")
    return F.cross_entropy(logits[:, :-1][mask].float(), input_ids[:, 1:][mask])


def distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the target tokens of ``KL(p_teacher || p_student)`` between next-token distributions.

    Beyond the paper: the pruned model is pulled towards what the unpruned model predicts at each
    target position (all of its distribution), not only towards the one observed next token.

    Args:
        logits: ``[B, n, V]`` student (simulated pruning); row t predicts token t + 1.
        teacher_logits: ``[B, n, V]`` the unpruned model on the same inputs (no gradient).
        target_mask: ``[B, n]`` bool; position t counts when token t + 1 is a target.
    """
    if logits.shape != teacher_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and teacher_logits {tuple(teacher_logits.shape)} differ in shape")
    mask = target_mask[:, 1:]
    if not bool(mask.any()):
        raise ValueError("target_mask selects no target token after position 0")
    student = torch.log_softmax(logits[:, :-1][mask].float(), dim=-1)
    teacher = torch.log_softmax(teacher_logits[:, :-1][mask].float(), dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean")
