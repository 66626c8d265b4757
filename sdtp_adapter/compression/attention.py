"""Attention weights a press scores with, computed from queries and cached keys (sdpa never returns them).

The weights are the softmax the model itself computes on a full-attention layer of a batch-1, unpadded
sequence: ``q . k * scaling`` over every cached key whose original position is not after the query's.
That is all the mask holds there, so the presses work under ``sdpa`` and ``eager`` alike. Queries come
from ``architectures.rotated_query_key`` (the layer's own norm, projections and RoPE), the same helper
the last-query-attention scorer uses.
"""

from __future__ import annotations

import torch

QUERY_BLOCK = 256  # query rows per block: an H2O prefill never holds more than [B, H, 256, n] weights


def attention_weights(
    queries: torch.Tensor,
    query_positions: torch.Tensor,
    keys: torch.Tensor,
    key_positions: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Causal softmax attention of ``m`` queries onto ``n`` cached keys, per query head (float32).

    Grouped key/value heads (GQA) are shared by their query heads as in the model: query head ``h``
    reads key head ``h // (H // H_kv)``.

    Args:
        queries: ``[B, H, m, d]`` RoPE-rotated queries.
        query_positions: ``[B, m]`` original positions of the queries.
        keys: ``[B, H_kv, n, d]`` cached (already rotated) keys.
        key_positions: ``[B, H_kv, n]`` original position of every cached key of every head.
        scaling: the layer's factor on ``q . k`` (``architectures.attention_scaling``).

    Returns:
        ``[B, H, m, n]`` float32; each row sums to 1 over the keys at or before the query's position.
    """
    groups = queries.shape[1] // keys.shape[1]
    k = keys.float().repeat_interleave(groups, dim=1)  # [B, H, n, d]
    logits = torch.einsum("bhmd,bhnd->bhmn", queries.float(), k) * scaling
    visible = key_positions.repeat_interleave(groups, dim=1)[:, :, None, :] <= query_positions[:, None, :, None]
    return logits.masked_fill(~visible, float("-inf")).softmax(dim=-1)


def attention_received(
    queries: torch.Tensor,
    query_positions: torch.Tensor,
    keys: torch.Tensor,
    key_positions: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """``attention_weights(...).sum(dim=2)``: the attention each key receives from all ``m`` queries,
    ``[B, H, n]``, computed ``QUERY_BLOCK`` query rows at a time (a 4K-token prefill would otherwise hold
    ``H x 4K x 4K`` floats)."""
    total = None
    for start in range(0, queries.shape[2], QUERY_BLOCK):
        block = slice(start, start + QUERY_BLOCK)
        part = attention_weights(queries[:, :, block], query_positions[:, block], keys, key_positions, scaling).sum(dim=2)
        total = part if total is None else total + part
    return total


def per_kv_head(scores: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """``[B, H, n]`` per query head -> ``[B, H_kv, n]``: the mean over each key head's query heads
    (kvpress's rule for grouped heads; the ranking equals the sum's)."""
    batch, heads, n = scores.shape
    return scores.view(batch, kv_heads, heads // kv_heads, n).mean(dim=2)
