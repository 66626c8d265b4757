"""A ``DynamicCache`` whose layers may hold different token sets after a pruned prefill.

Each pruned layer records the original positions of the tokens it caches, so later chunks (decode
steps, the next chat turn) can pick that layer's columns out of the full-length attention mask.
The cache reports the *virtual* length (original positions seen so far), which is what transformers
uses to build masks and position ids.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


class SDTPCache(DynamicCache):
    """``DynamicCache`` plus per-layer original positions.

    Attributes:
        layer_positions: ``{layer: [B, L_layer] long}`` for layers whose cache lacks pruned tokens;
            layers absent from the dict hold every position ``0 .. virtual_length - 1``.
        virtual_length: number of original positions processed so far.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_positions: dict[int, torch.Tensor] = {}
        self.virtual_length = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        if self.virtual_length:
            return self.virtual_length
        return super().get_seq_length(layer_idx)

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        if self.virtual_length:
            return self.virtual_length + query_length, 0
        return super().get_mask_sizes(query_length, layer_idx)

    def kv_bytes(self) -> int:
        """Bytes held by keys and values over all layers."""
        return kv_bytes(self)


def kv_bytes(cache) -> int:
    """Bytes held by the keys and values of any layered transformers cache."""
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total
