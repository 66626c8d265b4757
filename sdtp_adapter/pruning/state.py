"""Per-forward pruning state and the record a forward leaves behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..schedule import StageSchedule
from .cache import SDTPCache
from .gather import check_mask, gather_mask, gather_mask_columns, gather_tokens
from .selection import filler_masks, ranking_bias

PRUNE = "prune"  # a fresh prompt: stages really drop tokens
PASS = "pass"  # a chunk on top of an existing cache: every token goes through, masks follow the cache


@dataclass
class ForwardState:
    """What one decoder forward knows while it runs.

    Every derived tensor is computed once per stage (or once per forward) and shared by the layers
    that need it: on a GPU each extra op is a kernel launch, so the layers between two stages add
    nothing but the gathers a position-dependent input needs.

    Attributes:
        mode: ``"prune"`` or ``"pass"``.
        length: ``N``, slots in this chunk (padding included).
        past: original positions already in the cache.
        cache: the cache being filled, if it is an ``SDTPCache``.
        batch, device: of the chunk's tokens.
        pad: ``[B]`` left-padding slots per row; ``lengths``: real tokens per row (host ints).
        padded: True when some row has padding (so later stages may need filler slots); False lets
            every row share one budget and skips the masking of fillers.
        real: ``[B, N]`` bool, False on padding.
        early_exit: give dropped positions early-exit hidden states (False when the caller asked for
            the last position's logits only: ``logits_to_keep=1``).
        index: ``[B, k]`` chunk slot each present token came from; None until the first stage. Filler
            slots (rows whose budget is smaller than the batch's largest) point at slot 0, which is
            padding in every row that has fillers: its mask column is blocked for every query, its
            position is ``-1``, and scattering back to it touches no real token.
        valid: ``[B, k]`` bool, False for padding and for filler slots.
        slot_positions: ``[B, N]`` real-token position of each slot (padded batches; ``-1`` on padding).
        rows: ``[B, 1]`` batch row numbers, to index ``[B, N, ...]`` tensors with ``[B, k]`` slots in one op.
        bias: ``[1 or B, N]`` ranking bias: ``+inf`` on protected slots (first tokens, local window),
            ``-inf`` on padding (which filler slots point at), 0 elsewhere; see ``selection``.
        fillers: per stage ``(drop, valid)`` filler masks of a padded batch (``selection.filler_masks``).
        last_hidden: ``[B, N, d]`` each slot's latest hidden state, for early-exit logits.
        kept: ``{layer: (index, valid or None)}`` of each layer at or after the first stage (layers of
            one stage share the tensors; ``PruningRecord`` turns them into positions on demand).
        schedule, scorer: the settings this forward prunes by, read once when it starts.
        press: the KV press (``compression.KVPress``) evicting from the cache after each layer, or None.
        check_nan: look for NaN scores (custom scorers; the trained modules' weights are checked at load).
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
    padded: bool = False
    real: torch.Tensor | None = None
    early_exit: bool = True
    index: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    slot_positions: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    fillers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    last_hidden: torch.Tensor | None = None
    kept: dict[int, tuple] = field(default_factory=dict)
    schedule: StageSchedule | None = None
    scorer: Any = None
    press: Any = None
    check_nan: bool = False
    nan_scores: torch.Tensor | None = None
    _memo: dict[Any, tuple] = field(default_factory=dict)  # per stage (cleared by set_index)
    _forward_memo: dict[Any, tuple] = field(default_factory=dict)  # per forward

    def set_padding(self, pad: torch.Tensor, pads: list[int]) -> None:
        """``pad`` ``[B]`` on the device and the same counts on the host (read once, by ``inspect_prompt``)."""
        self.pad = pad
        self.lengths = [self.length - p for p in pads]
        self.padded = any(pads)

    def start(self, hidden: torch.Tensor) -> None:
        """Set up at the first stage: every slot present, the ranking bias of protected and padding
        slots, and (padded batches) every stage's filler masks, with one host-to-device copy."""
        device, schedule = hidden.device, self.schedule
        slots = torch.arange(self.length, device=device)
        self.rows = torch.arange(self.batch, device=device)[:, None]
        if self.early_exit:
            self.last_hidden = hidden.clone()
        if not self.padded:  # one rule for every row: [1, N] broadcast
            self.real = torch.ones(self.batch, self.length, dtype=torch.bool, device=device)
            window = schedule.local_window(self.length)
            protected = (slots < schedule.protected_first) | (slots >= self.length - window)
            self.bias = ranking_bias(protected[None])
            self.set_index(slots.expand(self.batch, -1), None)
            return
        self.slot_positions = (slots - self.pad[:, None]).clamp(min=-1)  # [B, N], -1 on padding
        self.real = self.slot_positions >= 0
        tail = torch.tensor([[n - schedule.local_window(n)] for n in self.lengths], device=device)
        protected = (self.slot_positions < schedule.protected_first) | (self.slot_positions >= tail)
        self.bias = ranking_bias(protected, candidates=self.real)  # padding (and fillers, at slot 0): never chosen
        budgets = list(zip(*(schedule.budgets(n) for n in self.lengths)))  # [stages][B] on the host
        self.fillers = filler_masks(budgets, device)
        self.set_index(slots.expand(self.batch, -1), self.real)

    def stage_of(self, layer: int) -> int | None:
        """Index of ``layer`` among the schedule's stages, or None if it does not prune."""
        layers = self.schedule.layers
        return layers.index(layer) if layer in layers else None

    def set_index(self, index: torch.Tensor, valid: torch.Tensor) -> None:
        self.index, self.valid = index, valid
        self._memo.clear()

    def _once(self, memo: dict, key: Any, keep_alive: tuple, compute):
        """``compute()`` once per ``key``; the entry holds ``keep_alive`` so an ``id()`` in the key is never reused."""
        entry = memo.get(key)
        if entry is None:
            entry = memo[key] = (compute(), keep_alive)
        return entry[0]

    def positions(self) -> torch.Tensor:
        """``[B, k]`` real-token positions of the present slots (``-1`` for padding and fillers)."""
        if not self.padded:
            return self.index
        return self._once(self._memo, "positions", (), lambda: self.take(self.slot_positions, self.index))

    def take(self, obj: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``obj [b, N, ...]`` (``b`` is 1 or ``B``) at the slots ``index [B, k]``: ``[B, k, ...]``, one indexing op."""
        if self.batch == 1:  # one row: index_select is several times faster than advanced indexing on a CPU
            return obj.index_select(1, self._only_row(index))
        return obj[self._rows_for(obj), index]

    def put(self, obj: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
        """``obj [B, N, ...]`` at the slots ``index [B, k]`` set to ``values [B, k, ...]`` in place (the inverse of ``take``)."""
        if self.batch == 1:
            obj.index_copy_(1, self._only_row(index), values)
        else:
            obj[self.rows, index] = values

    def _only_row(self, index: torch.Tensor) -> torch.Tensor:
        """``index[0]`` of a one-row batch, once per index tensor and stage."""
        return self._once(self._memo, ("row", id(index)), (index,), lambda: index[0])

    def _rows_for(self, obj: torch.Tensor) -> torch.Tensor:
        """``[B, 1]`` batch rows to index ``obj`` with, or ``[1, 1]`` zeros for an ``obj`` shared by every row."""
        if obj.shape[0] == self.batch:
            return self.rows
        return self._once(self._forward_memo, "row0", (), lambda: torch.zeros(1, 1, dtype=torch.long, device=obj.device))

    def record_layer(self, layer: int) -> None:
        """Note the slots entering ``layer`` (shared by the layers of one stage)."""
        self.kept[layer] = (self.index, self.valid if self.padded else None)

    def gathered(self, obj: Any, as_mask: bool = False, layer: int | None = None) -> Any:
        """``obj`` reduced to the present tokens, computed once per object and stage (and per set of key
        columns for masks of a chunk on top of a cache, which may differ between layers)."""
        if obj is None:
            return None
        if not as_mask:
            return self._once(self._memo, ("tokens", id(obj)), (obj,), lambda: gather_tokens(obj, self.index, self.take))
        cols = self.cache_positions(self.index)
        if self.past:
            before = self.cached_positions(layer)
            cols = cols if before is None else self.concat(before, cols)
        # fillers' column is slot 0, padding in their rows: the padding mask already blocks it
        check_mask(obj)
        return self._once(self._memo, ("mask", id(obj), id(cols)), (obj, cols), lambda: gather_mask(obj, self._rows_for(obj), self.index, cols))

    def cache_positions(self, index: torch.Tensor) -> torch.Tensor:
        """Original positions a pruned layer caches for this chunk: ``index`` shifted by ``past``; fillers
        (padded prompts only, so ``past == 0``) point at slot 0, a padding column later masks block."""
        if not self.past:
            return index
        return self._once(self._memo, ("cached", id(index)), (index,), lambda: index + self.past)

    def chunk_positions(self) -> torch.Tensor:
        """``[B, N]`` original positions of this chunk's slots, once per forward."""
        return self._once(
            self._forward_memo,
            "chunk",
            (),
            lambda: torch.arange(self.past, self.past + self.length, device=self.device).expand(self.batch, -1),
        )

    def concat(self, before: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """``cat([before, new], 1)``, once per pair: layers that cached the same positions share the result."""
        return self._once(self._forward_memo, ("cat", id(before), id(new)), (before, new), lambda: torch.cat([before, new], dim=1))

    def cached_positions(self, layer: int) -> torch.Tensor | None:
        """``[B, past]`` original positions already in layer ``layer``'s cache, or None when empty."""
        if not self.past:
            return None
        if self.cache is not None and layer in self.cache.layer_positions:
            return self.cache.layer_positions[layer]
        return self._once(
            self._forward_memo, "past", (), lambda: torch.arange(self.past, device=self.device).expand(self.batch, -1)
        )

    def pass_mask(self, mask: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The key columns ``cols`` of a ``pass`` chunk's mask, once per (mask, columns) pair: layers that
        cached the same positions share the result."""
        return self._once(self._forward_memo, ("pass-mask", id(mask), id(cols)), (mask, cols), lambda: gather_mask_columns(mask, cols))

    def layer_columns(self, layer: int) -> torch.Tensor | None:
        """Original positions of the keys layer ``layer`` attends to in a ``pass`` chunk, or None if all."""
        if self.cache is None or layer not in self.cache.layer_positions:
            return None
        return self.concat(self.cached_positions(layer), self.chunk_positions())


class PruningRecord:
    """Which tokens each layer saw in the last pruned prefill.

    Attributes:
        length: ``N``, prompt length.
        kept_positions: ``{layer: [B, k_layer] long}`` positions (slots of the input) entering each
            decoder layer at or after the first stage; ``-1`` marks masked filler slots of padded rows
            (built on first access: a forward only keeps the slots and their validity).
        exited: ``[B, N]`` bool, True where a position was dropped at some stage; its logits are
            early-exit logits from the last hidden state it had.
        lengths: real tokens per row.
    """

    def __init__(self, length: int, slots: dict[int, tuple[torch.Tensor, torch.Tensor | None]], exited: torch.Tensor, lengths: list[int]):
        self.length, self.exited, self.lengths = length, exited, lengths
        self._slots = slots
        self._kept: dict[int, torch.Tensor] | None = None

    @property
    def kept_positions(self) -> dict[int, torch.Tensor]:
        if self._kept is None:
            converted: dict[int, torch.Tensor] = {}  # layers of one stage share one tensor
            self._kept = {}
            for layer, (index, valid) in self._slots.items():
                key = id(index)
                if key not in converted:
                    converted[key] = index if valid is None else torch.where(valid, index, -1)
                self._kept[layer] = converted[key]
        return self._kept

    def kept_counts(self, num_layers: int, row: int = 0) -> list[int]:
        """Real tokens entering every layer for one row of the batch (padding excluded)."""
        kept = self.kept_positions
        return [int((kept[layer][row] >= 0).sum()) if layer in kept else self.lengths[row] for layer in range(num_layers)]
