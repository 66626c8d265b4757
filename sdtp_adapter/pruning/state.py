"""Per-forward pruning state and the record a forward leaves behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..schedule import StageSchedule
from .cache import SDTPCache
from .gather import gather_mask, gather_tokens

PRUNE = "prune"  # a fresh prompt: stages really drop tokens
PASS = "pass"  # a chunk on top of an existing cache: every token goes through, masks follow the cache


@dataclass
class ForwardState:
    """What one decoder forward knows while it runs.

    Attributes:
        mode: ``"prune"`` or ``"pass"``.
        length: ``N``, slots in this chunk (padding included).
        past: original positions already in the cache.
        cache: the cache being filled, if it is an ``SDTPCache``.
        batch, device: of the chunk's tokens.
        pad: ``[B]`` left-padding slots per row; ``lengths``: real tokens per row (host ints).
        real: ``[B, N]`` bool, False on padding.
        index: ``[B, k]`` chunk slot each present token came from; None until the first stage.
        valid: ``[B, k]`` bool, False for padding and for filler slots (rows whose budget is smaller
            than the batch's largest are filled with masked slots).
        last_hidden: ``[B, N, d]`` each slot's latest hidden state, for early-exit logits.
        kept: ``{layer: [B, k_layer]}`` positions entering each layer at or after the first stage
            (``-1`` for fillers).
        schedule, scorer: the settings this forward prunes by, read once when it starts.
        nan_scores: ``[]`` bool on the device, True once any stage's scores held a NaN.
    """

    mode: str
    length: int
    past: int
    cache: SDTPCache | None
    batch: int = 1
    device: torch.device | None = None
    pad: torch.Tensor | None = None
    lengths: list[int] = field(default_factory=list)
    real: torch.Tensor | None = None
    index: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    last_hidden: torch.Tensor | None = None
    kept: dict[int, torch.Tensor] = field(default_factory=dict)
    schedule: StageSchedule | None = None
    scorer: Any = None
    nan_scores: torch.Tensor | None = None
    _memo: dict[int, Any] = field(default_factory=dict)
    _fillers: bool = False

    def set_padding(self, pad: torch.Tensor) -> None:
        self.pad = pad
        self.lengths = [self.length - int(p) for p in pad.tolist()]
        self.real = torch.arange(self.length, device=pad.device)[None] >= pad[:, None]
        self._fillers = bool(pad.any())

    def stage_of(self, layer: int) -> int | None:
        """Index of ``layer`` among the schedule's stages, or None if it does not prune."""
        layers = self.schedule.layers
        return layers.index(layer) if layer in layers else None

    def set_index(self, index: torch.Tensor, valid: torch.Tensor) -> None:
        self.index, self.valid = index, valid
        self._memo.clear()

    def kept_positions(self) -> torch.Tensor:
        """``index`` with ``-1`` on filler and padding slots."""
        return self.index if not self._fillers else torch.where(self.valid, self.index, -1)

    def write_slots(self) -> torch.Tensor:
        """``index`` with filler and padding slots sent to slot 0 (padding in any row that has fillers), so
        scattering results back never overwrites the slot a filler was copied from."""
        return self.index if not self._fillers else torch.where(self.valid, self.index, 0)

    def gathered(self, obj: Any, as_mask: bool = False, layer: int | None = None) -> Any:
        """``obj`` reduced to the present tokens, computed once per object and stage (and per layer for
        masks of a chunk on top of a cache, whose key columns differ between layers)."""
        if obj is None:
            return None
        key = (id(obj), layer if as_mask and self.past else None)
        if key not in self._memo:
            if not as_mask:
                self._memo[key] = gather_tokens(obj, self.index)
            else:
                cols = self.index + self.past
                before = self.cached_positions(layer, cols.shape[0], cols.device) if self.past else None
                if before is not None:
                    cols = torch.cat([before, cols], dim=1)
                mask = gather_mask(obj, self.index, cols)
                if self._fillers and mask is not None:
                    blocked = False if mask.dtype == torch.bool else torch.finfo(mask.dtype).min
                    mask = mask.masked_fill(~self.valid[:, None, None, :], blocked)
                self._memo[key] = mask
        return self._memo[key]

    def cached_positions(self, layer: int, batch: int, device: torch.device) -> torch.Tensor | None:
        """``[B, past]`` original positions already in layer ``layer``'s cache, or None when empty."""
        if not self.past:
            return None
        if self.cache is not None and layer in self.cache.layer_positions:
            return self.cache.layer_positions[layer].to(device)
        return torch.arange(self.past, device=device).expand(batch, -1)

    def layer_columns(self, layer: int, batch: int, device: torch.device) -> torch.Tensor | None:
        """Original positions of the keys layer ``layer`` attends to in a ``pass`` chunk, or None if all."""
        if self.cache is None or layer not in self.cache.layer_positions:
            return None
        new = torch.arange(self.past, self.past + self.length, device=device).expand(batch, -1)
        return torch.cat([self.cached_positions(layer, batch, device), new], dim=1)


@dataclass
class PruningRecord:
    """Which tokens each layer saw in the last pruned prefill.

    Attributes:
        length: ``N``, prompt length.
        kept_positions: ``{layer: [B, k_layer] long}`` positions (slots of the input) entering each
            decoder layer at or after the first stage; ``-1`` marks masked filler slots of padded rows.
        exited: ``[B, N]`` bool, True where a position was dropped at some stage; its logits are
            early-exit logits from the last hidden state it had.
    """

    length: int
    kept_positions: dict[int, torch.Tensor]
    exited: torch.Tensor
    lengths: list[int] = field(default_factory=list)

    def kept_counts(self, num_layers: int, row: int = 0) -> list[int]:
        """Real tokens entering every layer for one row of the batch (padding excluded)."""
        return [
            int((self.kept_positions[layer][row] >= 0).sum()) if layer in self.kept_positions else self.lengths[row]
            for layer in range(num_layers)
        ]
