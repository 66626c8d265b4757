"""Gathering the per-token pieces a decoder layer receives down to the tokens that survive."""

from __future__ import annotations

from typing import Any

import torch


def gather_tokens(obj: Any, index: torch.Tensor) -> Any:
    """Keep the tokens ``index`` of every tensor in ``obj`` along the token axis (dim 1).

    Works on tensors ``[b, n, ...]`` (``b`` is 1 or ``B``; a 1 is broadcast), and on tuples, lists and
    dicts of them (RoPE ``(cos, sin)``, per-layer-type dicts). ``None`` passes through.

    Args:
        index: ``[B, k]`` long indices into the ``n`` axis.
    """
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor):
        batch, k = index.shape
        if obj.shape[0] == 1:
            if batch == 1:  # one row: a plain index_select, no index broadcasting
                return obj.index_select(1, index[0])
            return obj[0][index]  # shared rows (RoPE cos/sin): one indexing op gives [B, k, ...]
        if obj.dim() == 2:  # position ids
            return obj.gather(1, index)
        idx = index.view(batch, k, *([1] * (obj.dim() - 2))).expand(batch, k, *obj.shape[2:])
        return obj.gather(1, idx)
    if isinstance(obj, (tuple, list)):
        return type(obj)(gather_tokens(o, index) for o in obj)
    if isinstance(obj, dict):
        return {key: gather_tokens(value, index) for key, value in obj.items()}
    raise TypeError(f"cannot gather tokens from {type(obj).__name__}")


def gather_mask(mask: Any, rows: torch.Tensor | None, cols: torch.Tensor) -> Any:
    """Select query rows and key columns of a 4-D attention mask ``[b, 1, q, kv]``.

    Args:
        rows: ``[B, q']`` indices into ``q`` or None to keep all rows.
        cols: ``[B, kv']`` indices into ``kv``.
    Returns:
        ``[B, 1, q', kv']`` in the mask's dtype; ``None`` stays ``None`` (sdpa's causal fast path,
        valid because the kept tokens stay in their original order).
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise TypeError(
            f"sdtp_adapter can only prune with 4-D tensor attention masks (sdpa, eager); got {type(mask).__name__}"
        )
    batch = cols.shape[0]
    if mask.shape[0] == 1 and batch > 1:
        mask = mask.expand(batch, *mask.shape[1:])
    if rows is not None:
        mask = mask.gather(2, rows[:, None, :, None].expand(batch, mask.shape[1], rows.shape[1], mask.shape[3]))
    return mask.gather(3, cols[:, None, None, :].expand(batch, mask.shape[1], mask.shape[2], cols.shape[1]))
