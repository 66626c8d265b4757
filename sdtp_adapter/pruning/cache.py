"""A ``DynamicCache`` whose layers may hold different token sets after a pruned prefill.

Each pruned layer records the original positions of the tokens it caches, so later chunks (decode
steps, the next chat turn) can pick that layer's columns out of the full-length attention mask.
The cache reports the *virtual* length (original positions seen so far), which is what transformers
uses to build masks and position ids.
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import DynamicCache

from ..compat import mask_query_length


class SDTPCache(DynamicCache):
    """``DynamicCache`` plus per-layer original positions.

    Attributes:
        layer_positions: ``{layer: [B, L_layer] long}`` for layers whose cache lacks pruned tokens;
            layers absent from the dict hold every position ``0 .. virtual_length - 1``.
        virtual_length: number of original positions processed so far.
        compression: the KV press this cache is compressed by and its per-layer state
            (``compression.eviction.CacheCompression``), or None.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_positions: dict[int, torch.Tensor] = {}
        self.virtual_length = 0
        self.in_pruning_forward: Callable[[], bool] | None = None  # set by the controller that fills it
        self.compression = None  # set by a prefill under a KV press (compression.eviction.start_forward)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        # Layers of a pruned cache hold different positions; only the pruning hooks know each layer's
        # mask columns. A bare base model (after unload(), or under disable_pruning()) would crash deep
        # in attention or silently attend to the wrong keys.
        if self.layer_positions and not (self.in_pruning_forward and self.in_pruning_forward()):
            raise ValueError(
                "this SDTPCache holds a pruned prefill (its layers cache different tokens): continue it through the "
                "SDTPModel that filled it, with pruning enabled; for the base model alone, prefill the prompt again"
            )
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        if self.virtual_length:
            return self.virtual_length
        return super().get_seq_length(layer_idx)

    def get_mask_sizes(self, query_length: int | torch.Tensor, layer_idx: int) -> tuple[int, int]:
        if self.virtual_length:
            return self.virtual_length + mask_query_length(query_length), 0
        return super().get_mask_sizes(query_length, layer_idx)


def kv_bytes(cache) -> int:
    """Bytes held by the keys and values of any layered transformers cache."""
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total
