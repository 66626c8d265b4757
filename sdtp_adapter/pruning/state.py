"""Per-forward pruning state and the record a forward leaves behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .cache import SDTPCache
from .gather import gather_mask, gather_tokens

PRUNE = "prune"  # a fresh prompt: stages really drop tokens
PASS = "pass"  # a chunk on top of an existing cache: every token goes through, masks follow the cache


@dataclass
class ForwardState:
    """What one decoder forward knows while it runs.

    Attributes:
        mode: ``"prune"`` or ``"pass"``.
        length: ``N``, tokens in this chunk.
        past: original positions already in the cache.
        cache: the cache being filled, if it is an ``SDTPCache``.
        index: ``[B, k]`` chunk indices (= original positions minus ``past``) still present; None
            until the first stage has run.
        kept: ``{layer: [B, k_layer]}`` original positions entering each layer at or after the first stage.
        exited: ``(index [B, m], hidden [B, m, d])`` of the tokens dropped at each stage.
    """

    mode: str
    length: int
    past: int
    cache: SDTPCache | None
    index: torch.Tensor | None = None
    kept: dict[int, torch.Tensor] = field(default_factory=dict)
    exited: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    _memo: dict[int, Any] = field(default_factory=dict)

    def set_index(self, index: torch.Tensor) -> None:
        self.index = index
        self._memo.clear()

    def gathered(self, obj: Any, as_mask: bool = False) -> Any:
        """``obj`` reduced to the present tokens, computed once per object and stage."""
        if obj is None:
            return None
        key = id(obj)
        if key not in self._memo:
            if as_mask:
                self._memo[key] = gather_mask(obj, self.index, self.index)
            else:
                self._memo[key] = gather_tokens(obj, self.index)
        return self._memo[key]

    def layer_columns(self, layer: int, batch: int, device: torch.device) -> torch.Tensor | None:
        """Original positions of the keys layer ``layer`` attends to in a ``pass`` chunk, or None if all."""
        if self.cache is None or layer not in self.cache.layer_positions:
            return None
        new = torch.arange(self.past, self.past + self.length, device=device).expand(batch, -1)
        return torch.cat([self.cache.layer_positions[layer].to(device), new], dim=1)


@dataclass
class PruningRecord:
    """Which tokens each layer saw in the last pruned prefill.

    Attributes:
        length: ``N``, prompt length.
        kept_positions: ``{layer: [B, k_layer] long}`` original positions entering each decoder layer
            (layers before the first stage see all ``N``).
        exited: ``[B, N]`` bool, True where a position was dropped at some stage; its logits are
            early-exit logits from the last hidden state it had.
    """

    length: int
    kept_positions: dict[int, torch.Tensor]
    exited: torch.Tensor

    def kept_counts(self, num_layers: int) -> list[int]:
        """Tokens entering every layer (first row of the batch)."""
        return [int(self.kept_positions[l].shape[1]) if l in self.kept_positions else self.length for l in range(num_layers)]
