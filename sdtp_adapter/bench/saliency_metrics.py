"""Saliency metrics behind the paper's two observations: per-layer sparsity and cross-layer transitivity.

Inputs are ``[L, N]`` saliency maps (one row per layer input, one score per token) from
``layer_saliency``; ``candidates [N]`` marks the tokens a stage may prune. Used by ``observations``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..architectures import decoder_layers
from ..training.saliency import token_saliency

IMPORTANT_FRACTION = 0.1  # the paper's "important": saliency above 10% of the layer's maximum
TOP_SHARE = 0.1  # saliency mass held by the top 10% of tokens
LOW_SHARE = 0.5  # "unimportant" for transitivity: the bottom half by rank (random overlap = 0.5)


# --------------------------------------------------------------------------- saliency
def layer_saliency(model: nn.Module, input_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Saliency at the input of every decoder layer, from one forward and one backward pass.

    Args:
        input_ids: ``[1, N]``.
        target_mask: ``[1, N]`` bool, the tokens whose log-likelihood is differentiated.
    Returns:
        ``[L, N]`` float32 raw saliency, row ``l`` at the input of layer ``l``.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected [1, N]")
    layers = list(range(len(decoder_layers(model))))
    saliency = token_saliency(model, input_ids, target_mask, layers)
    return torch.stack([saliency[layer][0] for layer in layers])


# --------------------------------------------------------------------------- per-layer metrics
def important_share(saliency: torch.Tensor, fraction: float = IMPORTANT_FRACTION) -> torch.Tensor:
    """Share of tokens whose saliency exceeds ``fraction`` of their layer's maximum.

    Args:
        saliency: ``[L, n]`` non-negative.
    Returns:
        ``[L]``.
    """
    top = saliency.amax(dim=-1, keepdim=True)
    return (saliency > fraction * top).float().mean(dim=-1)


def top_mass_share(saliency: torch.Tensor, share: float = TOP_SHARE) -> torch.Tensor:
    """Share of each layer's total saliency held by its ``ceil(share * n)`` most salient tokens.

    Args:
        saliency: ``[L, n]`` non-negative.
    Returns:
        ``[L]`` (0 for a layer whose saliency is all zero).
    """
    k = max(1, math.ceil(share * saliency.shape[-1] - 1e-9))
    total = saliency.sum(dim=-1)
    return saliency.topk(k, dim=-1).values.sum(dim=-1) / total.clamp_min(1e-30)


# --------------------------------------------------------------------------- layer-pair metrics
def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """0-based ranks along the last dim, ties sharing their mean rank (as Spearman's rho needs).

    Args:
        values: ``[L, n]``.
    Returns:
        ``[L, n]`` float64.
    """
    sorted_values, order = values.sort(dim=-1, stable=True)
    ranks = torch.empty(values.shape, dtype=torch.float64)
    for row in range(values.shape[0]):
        _, counts = torch.unique_consecutive(sorted_values[row], return_counts=True)
        ends = counts.cumsum(0).double()
        mean_rank = ends - (counts.double() + 1) / 2  # mean of the 0-based positions start .. end - 1
        ranks[row, order[row]] = mean_rank.repeat_interleave(counts)
    return ranks


def spearman_matrix(saliency: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of token saliency between every pair of layers.

    Args:
        saliency: ``[L, n]``.
    Returns:
        ``[L, L]`` float64; a layer with constant saliency has no defined correlation (NaN).
    """
    ranks = average_ranks(saliency)
    centred = ranks - ranks.mean(dim=-1, keepdim=True)
    norms = centred.norm(dim=-1)
    return (centred @ centred.T) / (norms[:, None] * norms[None, :])


def low_mask(saliency: torch.Tensor, share: float = LOW_SHARE) -> torch.Tensor:
    """The ``floor(share * n)`` least salient tokens of each layer (ties: the earlier position is lower).

    Args:
        saliency: ``[L, n]``.
    Returns:
        ``[L, n]`` bool with the same number of True values in every row.
    """
    n = saliency.shape[-1]
    order = saliency.argsort(dim=-1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand_as(order))
    return rank < int(share * n)


def stays_low_matrix(saliency: torch.Tensor, share: float = LOW_SHARE) -> torch.Tensor:
    """Entry ``[s, t]``: of the tokens in layer s's bottom ``share``, the share also in layer t's.

    Both bottom sets have the same size, so the matrix is symmetric; a random ranking gives ``share``.

    Args:
        saliency: ``[L, n]``.
    Returns:
        ``[L, L]`` float64.
    """
    low = low_mask(saliency, share).double()
    size = low.sum(dim=-1).clamp_min(1)
    return (low @ low.T) / size[:, None]


# --------------------------------------------------------------------------- one sample, many samples
def sample_metrics(saliency: torch.Tensor, candidates: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric of one sequence.

    Args:
        saliency: ``[L, N]`` raw saliency.
        candidates: ``[N]`` bool, the tokens a stage may prune.
    Returns:
        ``important_share``, ``important_share_all``, ``top_mass`` (``[L]`` each), ``spearman`` and
        ``stays_low`` (``[L, L]`` each); all but ``important_share_all`` over the candidates only.
    """
    if int(candidates.sum()) < 2:
        raise ValueError(f"candidates selects {int(candidates.sum())} tokens; the metrics need at least 2")
    chosen = saliency[:, candidates]
    return {
        "important_share": important_share(chosen),
        "important_share_all": important_share(saliency),
        "top_mass": top_mass_share(chosen),
        "spearman": spearman_matrix(chosen),
        "stays_low": stays_low_matrix(chosen),
    }


def mean_metrics(per_sample: list[dict[str, torch.Tensor]]) -> dict:
    """Mean of every metric over samples, as nested lists (JSON-ready, 5 decimals), plus the sample count."""
    if not per_sample:
        raise ValueError("per_sample is empty; at least one sample is needed")
    out: dict = {"samples": len(per_sample)}
    for key in per_sample[0]:
        out[key] = torch.stack([m[key].double() for m in per_sample]).mean(dim=0).round(decimals=5).tolist()
    return out
