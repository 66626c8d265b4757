"""Forward hooks that make an unmodified transformers decoder drop tokens between layers.

No library code is patched: hooks are registered on the model's own module instances and removed
by ``PruningController.remove``. Per decoder forward:

1. decoder pre-hook: choose the mode (prune a fresh prompt, or pass a chunk over an existing cache),
   make sure the cache can record per-layer positions;
2. layer pre-hooks: at a stage layer score and gather the hidden states; at every later layer hand it
   RoPE embeddings, position ids and mask gathered to the surviving tokens (``pass`` mode: the mask
   columns of that layer's cache);
3. layer post-hooks: record which original positions each layer cached;
4. decoder post-hook: give dropped positions early-exit hidden states so the output keeps one row per
   input position, advance the cache's virtual length, store a ``PruningRecord``.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn
from transformers import DynamicCache

from ..architectures import decoder_layers, decoder_of, final_norm
from ..schedule import StageSchedule
from .cache import SDTPCache
from .gather import gather_mask
from .selection import protected_mask, select_mask
from .state import PASS, PRUNE, ForwardState, PruningRecord

# (layer, hidden [B, n, d], original positions [B, n]) -> scores [B, n], higher = keep
Scorer = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


class Simulation(Protocol):
    """Training-time stand-in for real pruning (see ``training.masking``)."""

    def on_stage(self, layer: int, hidden: torch.Tensor) -> None: ...

    def attention_bias(self, hidden: torch.Tensor, layer_mask: torch.Tensor | None) -> torch.Tensor: ...


class PruningController:
    """Owns the hooks, the per-forward state and the record of the last pruned prefill."""

    def __init__(self, model: nn.Module, schedule: StageSchedule, scorer: Scorer, prune_later_chunks: bool = False):
        self.set_schedule(schedule)
        self.prune_later_chunks = prune_later_chunks
        self.scorer = scorer
        self.enabled = True
        self.simulation: Simulation | None = None
        self.last_record: PruningRecord | None = None
        self._state: ForwardState | None = None
        self._pending_exited: torch.Tensor | None = None
        self._decoder = decoder_of(model)
        check_attention(self._decoder.config)
        self._norm = final_norm(model)
        self._handles = [
            self._decoder.register_forward_pre_hook(self._before_decoder, with_kwargs=True),
            self._decoder.register_forward_hook(self._after_decoder, with_kwargs=True),
            model.register_forward_hook(self._after_model),
        ]
        for idx, layer in enumerate(decoder_layers(model)):
            self._handles.append(layer.register_forward_pre_hook(self._layer_pre_hook(idx), with_kwargs=True))
            self._handles.append(layer.register_forward_hook(self._layer_post_hook(idx)))

    def set_schedule(self, schedule: StageSchedule) -> None:
        """Prune by ``schedule`` from the next forward on (stage layers and budgets)."""
        self.schedule = schedule
        self._stage_index = {layer: s for s, layer in enumerate(schedule.layers)}
        self._first_stage = schedule.layers[0]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # ------------------------------------------------------------------ decoder
    def _before_decoder(self, module, args, kwargs):
        self._state = None
        if self.simulation is not None:
            return None
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs["inputs_embeds"]
        length = tokens.shape[1]
        cache_key = "past_key_values" if "past_key_values" in kwargs else "cache"
        cache = kwargs.get(cache_key)
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = getattr(module.config, "use_cache", True)
        past = cache.get_seq_length() if cache is not None else 0

        if self.enabled and (past == 0 or (self.prune_later_chunks and length > 1)):
            check_attention(module.config)
            mask2d = kwargs.get("attention_mask")
            chunk_mask = mask2d[:, -length:] if isinstance(mask2d, torch.Tensor) and mask2d.dim() == 2 else None
            pad = _left_padding(chunk_mask, tokens.shape[0], length, tokens.device)
            if past and bool(pad.any()):
                raise ValueError("a chunk sent on top of a cache cannot contain padding")
            if cache is None and use_cache:
                cache = SDTPCache(config=module.config)
            elif type(cache) is DynamicCache and past == 0:
                cache = SDTPCache(config=module.config)  # empty: swap in one that records positions
            elif cache is not None and not isinstance(cache, SDTPCache):
                raise ValueError(
                    f"cache of type {type(cache).__name__} cannot hold a pruned prefill; pass a DynamicCache, "
                    "an SDTPCache or none (a later chunk needs the SDTPCache returned by the first prefill)"
                )
            if cache is not None:
                kwargs[cache_key] = cache
            mode = PRUNE
        else:
            mode = PASS
        state = ForwardState(mode, length, past, cache if isinstance(cache, SDTPCache) else None, tokens.shape[0], tokens.device)
        if mode == PRUNE:
            state.set_padding(pad)
        self._state = state
        return args, kwargs

    def _after_decoder(self, module, args, kwargs, output):
        state, self._state = self._state, None
        if state is None:
            return None
        if state.cache is not None:
            state.cache.virtual_length = state.past + state.length
        if state.mode != PRUNE or state.index is None:
            return None
        hidden = output.last_hidden_state  # [B, k, d], already through the final norm
        width = hidden.shape[-1]
        # every position gets the last hidden state it had (early exit), then the survivors' final ones
        full = self._norm(state.last_hidden).to(hidden.dtype)
        slots = state.write_slots()
        full.scatter_(1, slots[..., None].expand(-1, -1, width), hidden)
        survived = torch.zeros_like(state.real).scatter_(1, slots, state.valid)
        exited = state.real & ~survived
        output.last_hidden_state = full
        self.last_record = PruningRecord(state.length, state.kept, exited, state.lengths)
        self._pending_exited = exited
        return output

    def _after_model(self, module, args, output):
        exited = getattr(self, "_pending_exited", None)
        self._pending_exited = None
        if exited is not None and hasattr(output, "logits"):
            output.pruned_positions = exited  # attribute only: tuple/index access to the output is unchanged
        return None

    # ------------------------------------------------------------------ layers
    def _layer_pre_hook(self, layer: int):
        def hook(module, args, kwargs):
            if self.simulation is not None:
                return self._simulate(layer, args, kwargs)
            state = self._state
            if state is None:
                return None
            if state.mode == PASS:
                hidden = args[0] if args else kwargs["hidden_states"]
                cols = state.layer_columns(layer, hidden.shape[0], hidden.device)
                if cols is not None and kwargs.get("attention_mask") is not None:
                    kwargs["attention_mask"] = gather_mask(kwargs["attention_mask"], None, cols)
                return args, kwargs
            if layer < self._first_stage:
                return None
            args, kwargs = _with_hidden(args, kwargs, self._prune(layer, _hidden_of(args, kwargs), state))
            for name in ("position_embeddings", "position_ids"):
                if name in kwargs:
                    kwargs[name] = state.gathered(kwargs[name])
            if "attention_mask" in kwargs:
                kwargs["attention_mask"] = state.gathered(kwargs["attention_mask"], as_mask=True, layer=layer)
            state.kept[layer] = state.kept_positions()
            return args, kwargs

        return hook

    def _layer_post_hook(self, layer: int):
        def hook(module, args, output):
            state = self._state
            if state is not None and state.cache is not None:
                _record_positions(state, layer)
            return None

        return hook

    def _prune(self, layer: int, hidden: torch.Tensor, state: ForwardState) -> torch.Tensor:
        """Drop tokens before a stage layer; other layers pass ``hidden`` through. Always gathers at a
        stage, even when the budget keeps everything, so keep-all runs exercise the same path.

        Row b keeps its own budget from its real length; rows with a smaller budget than the batch's
        largest are filled on the left with masked filler slots, so the batch stays rectangular and
        left-padded."""
        if state.index is None:
            state.set_index(torch.arange(state.length, device=hidden.device).expand(hidden.shape[0], -1), state.real)
            state.last_hidden = hidden.clone()
        stage = self._stage_index.get(layer)
        if stage is None:
            return hidden
        n = hidden.shape[1]
        budgets = [self.schedule.budgets(length)[stage] for length in state.lengths]
        width = max(budgets)
        real_positions = torch.where(state.valid, state.index - state.pad[:, None], -1)
        state.last_hidden.scatter_(1, state.write_slots()[..., None].expand(-1, -1, hidden.shape[-1]), hidden)
        with torch.no_grad():
            scores = self.scorer(layer, hidden, real_positions)
        protected = protected_mask(real_positions, state.lengths, self.schedule)
        keep = select_mask(scores, protected, budgets, candidates=state.valid)
        # fillers (slots not kept) first, then the kept slots in order: the last `width` of this sort
        slots = torch.arange(n, device=hidden.device).expand_as(keep)
        order = torch.where(keep, slots + n, slots).argsort(dim=1)[:, n - width :]
        state.set_index(state.index.gather(1, order), keep.gather(1, order))
        return _gather_rows(hidden, order)

    def _simulate(self, layer: int, args, kwargs):
        if layer < self._first_stage:
            return None
        hidden = _hidden_of(args, kwargs)
        if layer in self._stage_index:
            self.simulation.on_stage(layer, hidden)
        kwargs["attention_mask"] = self.simulation.attention_bias(hidden, kwargs.get("attention_mask"))
        return args, kwargs


def _record_positions(state: ForwardState, layer: int) -> None:
    """Update ``cache.layer_positions[layer]`` after the layer cached this chunk.

    Full-attention layers that saw every position stay implicit (absent from the dict). A layer that
    pruned records its kept positions; a sliding-window layer always records, and like its cache keeps
    only the last ``window - 1`` entries (of the *kept* tokens, which may reach back further than the
    window: their columns of the position-built sliding mask block them).
    """
    cache = state.cache
    window = getattr(cache.layers[layer], "sliding_window", None) if layer < len(cache.layers) else None
    pruned = state.mode == PRUNE and layer in state.kept
    if not pruned and window is None and layer not in cache.layer_positions:
        return
    if pruned:
        # fillers (padded prompts only, so past == 0) point at slot 0, a padding column later masks block
        new = state.kept[layer].clamp(min=0) + state.past
    else:
        new = torch.arange(state.past, state.past + state.length, device=state.device).expand(state.batch, -1)
    before = state.cached_positions(layer, new.shape[0], new.device)
    positions = new if before is None else torch.cat([before, new], dim=1)
    cache.layer_positions[layer] = positions if window is None else positions[:, -(window - 1) :]


SUPPORTED_ATTENTION = ("sdpa", "eager")


def check_attention(config) -> None:
    """Refuse attention backends whose masks or position handling the gathers do not cover."""
    impl = getattr(config, "_attn_implementation", None)
    if impl not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"attn_implementation={impl!r} is not supported by SDTP pruning; allowed: {list(SUPPORTED_ATTENTION)} "
            "(flash-attention reads position ids with gaps as packed sequences)"
        )


def _left_padding(mask2d, batch: int, length: int, device) -> torch.Tensor:
    """``[B]`` count of left padding slots per row; refuses right or interior padding."""
    if not isinstance(mask2d, torch.Tensor) or mask2d.dim() != 2:
        return torch.zeros(batch, dtype=torch.long, device=device)
    mask2d = mask2d.to(device=device, dtype=torch.bool)
    pad = length - mask2d.sum(dim=1)
    slots = torch.arange(length, device=device)[None]
    if not torch.equal(mask2d, slots >= pad[:, None]):
        raise ValueError(
            "attention_mask is not left-padded: SDTP budgets each row from its real length and needs padding on "
            "the left (tokenizer.padding_side = 'left'); right or interior padding is not supported"
        )
    if bool((pad >= length).any()):
        raise ValueError("attention_mask has a row without any real token")
    return pad


def _hidden_of(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args, kwargs, hidden):
    if args:
        return (hidden, *args[1:]), kwargs
    kwargs["hidden_states"] = hidden
    return args, kwargs


def _gather_rows(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``[B, n, d]`` gathered to ``[B, k, d]`` by ``index [B, k]``."""
    return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
