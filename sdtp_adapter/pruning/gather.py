"""Gathering the per-token pieces a decoder layer receives down to the tokens that survive."""

from __future__ import annotations

from typing import Any, Callable

import torch


def gather_tokens(obj: Any, index: torch.Tensor, take: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Any:
    """Keep the tokens ``index`` of every tensor in ``obj`` along the token axis (dim 1).

    Works on tensors ``[b, n, ...]`` (``b`` is 1 or ``B``; a 1 is broadcast), and on tuples, lists and
    dicts of them (RoPE ``(cos, sin)``, per-layer-type dicts). ``None`` passes through.

    Args:
        index: ``[B, k]`` long indices into the ``n`` axis.
        take: ``(tensor [b, n, ...], index [B, k]) -> [B, k, ...]`` (``ForwardState.take``).
    """
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor):
        return take(obj, index)
    if isinstance(obj, (tuple, list)):
        return type(obj)(gather_tokens(o, index, take) for o in obj)
    if isinstance(obj, dict):
        return {key: gather_tokens(value, index, take) for key, value in obj.items()}
    raise TypeError(f"cannot gather tokens from {type(obj).__name__}")


def check_mask(mask: Any) -> None:
    """Only 4-D tensor masks (sdpa, eager) can be gathered to the surviving tokens."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise TypeError(
            f"sdtp_adapter can only prune with 4-D tensor attention masks (sdpa, eager); got {type(mask).__name__}"
        )


def gather_mask(mask: Any, rows: torch.Tensor, index: torch.Tensor, cols: torch.Tensor) -> Any:
    """Query rows ``index`` and key columns ``cols`` of a 4-D attention mask ``[b, 1, q, kv]``, one indexing op.

    Args:
        rows: ``[B, 1]`` batch row numbers, or ``[1, 1]`` zeros when ``b`` is 1 (shared by every row).
        index: ``[B, q']`` indices into ``q``.
        cols: ``[B, kv']`` indices into ``kv``.
    Returns:
        ``[B, 1, q', kv']`` in the mask's dtype; ``None`` stays ``None`` (sdpa's causal fast path,
        valid because the kept tokens stay in their original order).
    """
    if mask is None:
        return None
    check_mask(mask)
    batch, q = index.shape
    # advanced indices around the head slice put their broadcast shape first: [B, q', kv', 1]
    return mask[rows[:, :, None], :, index[:, :, None], cols[:, None, :]].view(batch, 1, q, cols.shape[1])


def gather_mask_columns(mask: Any, cols: torch.Tensor) -> Any:
    """Key columns ``cols [B, kv']`` of a 4-D attention mask ``[b, 1, q, kv]`` (every query row): ``[B, 1, q, kv']``."""
    if mask is None:
        return None
    check_mask(mask)
    batch = cols.shape[0]
    if mask.shape[0] == 1 and batch > 1:
        mask = mask.expand(batch, *mask.shape[1:])
    return mask.gather(3, cols[:, None, None, :].expand(batch, mask.shape[1], mask.shape[2], cols.shape[1]))
