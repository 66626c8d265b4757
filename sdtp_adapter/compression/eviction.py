"""Eviction on an ``SDTPCache``: what the pruning controller runs when a press is active.

Per forward, ``start_forward`` checks the call and ties the cache to the press; then, after every
full-attention layer has cached the chunk (the prefill's surviving tokens, or a decode step), the
controller calls ``compress_layer``, which scores that layer's entries and keeps the best ones.

Positions stay right because nothing is renumbered: cached keys already carry their RoPE rotation,
new tokens get their original position from the cache's virtual length (``SDTPCache``), and the
mask columns of later chunks follow ``SDTPCache.layer_positions``, which eviction keeps in step with
the entries. Heads keep different positions; ``layer_positions`` then holds key head 0's. That is
exact for the masks because, in a batch of one without padding, every cached position precedes every
later query on a full-attention layer: each cached column is open, whichever position it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..architectures import attention_scaling, rotated_query_key
from ..pruning.selection import select_indices
from .press import AttentionStats, KVPress


@dataclass
class LayerCompression:
    """One layer's eviction state, kept in step with its cache entries.

    Attributes:
        positions: ``[B, H_kv, L]`` original position of each head's cached entries.
        scores: ``[B, H_kv, L]`` the press's scores of those entries (accumulating presses only).
        window_queries, window_positions: ``[B, H, w, d]`` / ``[B, w]`` the last queries the layer saw
            (presses with an observation window only).
    """

    positions: torch.Tensor
    scores: torch.Tensor | None = None
    window_queries: torch.Tensor | None = None
    window_positions: torch.Tensor | None = None


@dataclass
class CacheCompression:
    """The press a cache is compressed by and each layer's state (``SDTPCache.compression``)."""

    press: KVPress
    layers: dict[int, LayerCompression] = field(default_factory=dict)


def start_forward(press: KVPress, cache, batch: int, past: int, use_cache: bool, attention_mask) -> None:
    """Check a forward about to run under ``press`` and tie a fresh cache to it.

    Raises:
        ValueError: a batch of several rows, padding, no cache, or a cache filled without this press.
    """
    from ..pruning.cache import SDTPCache

    name = type(press).__name__
    if batch != 1:
        raise ValueError(f"{name} supports one sequence at a time; got a batch of {batch} (run the rows one by one)")
    if not use_cache or cache is None:
        raise ValueError(f"{name} compresses the KV cache: call the model with use_cache=True (got use_cache={use_cache})")
    if not isinstance(cache, SDTPCache):
        raise ValueError(
            f"{name} needs the SDTPCache that a prefill under the press created; got a {type(cache).__name__} "
            "holding a prefill made without it (prefill the prompt again inside the press's block)"
        )
    if past == 0:
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2 and not bool(attention_mask.all()):
            raise ValueError(f"{name}: attention_mask has padding; a press runs on one unpadded sequence")
        cache.compression = CacheCompression(press)
        return
    compression = getattr(cache, "compression", None)
    if compression is None:
        raise ValueError(f"{name}: this cache was prefilled without a press; prefill the prompt again inside the press's block")
    if compression.press != press:
        raise ValueError(
            f"this cache was compressed by {compression.press!r}; continue it under that press (a cache keeps one "
            f"eviction state), not {press!r}"
        )


@torch.no_grad()  # bookkeeping, never part of a gradient
def compress_layer(model: nn.Module, cache, layer: int, hidden: torch.Tensor, positions: torch.Tensor, seen: int) -> None:
    """Score layer ``layer``'s entries after it cached a chunk and evict down to the press's budget.

    Args:
        model: the ``*ForCausalLM`` (queries are computed with its own layer modules).
        cache: the ``SDTPCache`` (``cache.compression`` set by ``start_forward``).
        hidden: ``[B, c, d]`` the hidden states that entered the layer (the chunk's surviving tokens).
        positions: ``[B, c]`` their original positions.
        seen: original positions processed once this chunk is done (sets a ratio budget).
    """
    cache_layer = cache.layers[layer]
    if getattr(cache_layer, "sliding_window", None) is not None:
        return  # bounded by its window already; its mask is rebuilt from positions, per layer not per head
    compression, press = cache.compression, cache.compression.press
    keys, values = cache_layer.keys, cache_layer.values  # [B, H_kv, n, d]
    batch, kv_heads, n, _ = keys.shape
    state = compression.layers.get(layer)
    chunk = positions[:, None, :].expand(batch, kv_heads, -1)
    key_positions = chunk if state is None else torch.cat([state.positions, chunk], dim=2)
    if key_positions.shape[2] != n:
        raise ValueError(
            f"layer {layer} holds {n} cached entries but {type(press).__name__} tracked {key_positions.shape[2]}: the "
            "cache was continued outside the press's block; keep every call on this cache inside it"
        )

    queries: dict[int, torch.Tensor] = {}

    def queries_of(last: int) -> torch.Tensor:
        """``[B, H, last, d]`` rotated queries of the chunk's last tokens (computed once per length)."""
        if last not in queries:
            queries[last] = rotated_query_key(model, layer, hidden[:, -last:], positions[:, -last:])[0]
        return queries[last]

    window = press.observation_window
    window_queries = window_positions = None
    if window:
        new = min(window, positions.shape[1])
        window_queries, window_positions = queries_of(new), positions[:, -new:]
        if state is not None and state.window_queries is not None:
            window_queries = torch.cat([state.window_queries, window_queries], dim=2)[:, :, -window:]
            window_positions = torch.cat([state.window_positions, window_positions], dim=1)[:, -window:]
    stats = AttentionStats(
        layer, keys, key_positions, positions, attention_scaling(model, layer),
        previous=None if state is None else state.scores, queries_of=queries_of,
        window_queries=window_queries, window_positions=window_positions,
    )
    budget = press.budget(seen)
    scores = None
    if n > budget or press.accumulates:
        scores = _checked(press.score(layer, keys, values, stats), press, layer, (batch, kv_heads, n))
    if n > budget:
        kept = _kept_entries(scores, n, budget, press)  # [B, H_kv, budget]
        index = kept[..., None].expand(-1, -1, -1, keys.shape[-1])
        cache_layer.keys, cache_layer.values = keys.gather(2, index), values.gather(2, index)
        key_positions, scores = key_positions.gather(2, kept), scores.gather(2, kept)
        cache.layer_positions[layer] = key_positions[:, 0]  # mask columns: see the module docstring
    compression.layers[layer] = LayerCompression(
        key_positions, scores if press.accumulates else None, window_queries, window_positions
    )


def _kept_entries(scores: torch.Tensor, n: int, budget: int, press: KVPress) -> torch.Tensor:
    """``[B, H_kv, budget]`` entry indices each head keeps, in cache order: protected first, then by score."""
    batch, kv_heads, _ = scores.shape
    slots = torch.arange(n, device=scores.device)
    protected = ((slots < press.sink_tokens) | (slots >= n - press.recent_tokens)).expand(batch * kv_heads, n)
    return select_indices(scores.reshape(batch * kv_heads, n), protected, budget).view(batch, kv_heads, budget)


def _checked(scores, press: KVPress, layer: int, shape: tuple[int, int, int]) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != shape or not scores.is_floating_point():
        got = f"a {scores.dtype} tensor of shape {list(scores.shape)}" if isinstance(scores, torch.Tensor) else f"a {type(scores).__name__}"
        raise ValueError(
            f"{type(press).__name__}.score returned {got} at layer {layer}; expected a floating tensor of shape "
            f"[B, H_kv, n] = {list(shape)}"
        )
    return scores.float()
