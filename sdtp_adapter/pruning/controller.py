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

Thread safety: the hooks are shared by every thread that calls the model, so everything a forward
knows (its ``ForwardState``, the record it leaves) lives in thread-local storage, and the settings
that context managers change are per-thread overrides (``scoped.ScopedSetting``).
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Protocol

import torch
from torch import nn
from transformers import DynamicCache

from ..architectures import decoder_layers, decoder_of, final_norm
from ..compression.eviction import compress_layer, start_forward
from ..schedule import StageSchedule
from .cache import SDTPCache
from .inputs import check_attention, check_scores, inspect_prompt, refuse_unaligned_outputs
from .scoped import ScopedSetting
from .profiling import component
from .pruner import ModuleScorer
from .scorers import Scorer
from .selection import ranking_keys, top_slots, top_slots_padded
from .state import PASS, PRUNE, ForwardState, PruningRecord


class Simulation(Protocol):
    """Training-time stand-in for real pruning (see ``training.simulation``).

    Attributes:
        schedule: the stages it simulates; layers before the first one are left alone.
        budgets: ``{stage layer: tokens kept}``.
    """

    schedule: StageSchedule
    budgets: dict[int, int]

    def on_stage(self, layer: int, hidden: torch.Tensor) -> None: ...

    def attention_bias(self, hidden: torch.Tensor, layer_mask: torch.Tensor | None) -> torch.Tensor: ...


class PruningController:
    """Owns the hooks; keeps every per-forward value in thread-local storage.

    The settings (``enabled``, ``scorer``, ``schedule``, ``simulation``) are ``ScopedSetting``s: a
    process-wide default plus per-thread overrides, so one model can serve several threads at once.
    A forward reads them once, when it starts, and keeps them in its ``ForwardState``.
    """

    def __init__(self, model: nn.Module, schedule: StageSchedule, scorer: Scorer, prune_later_chunks: bool = False):
        self.schedule = ScopedSetting(schedule)
        self.scorer = ScopedSetting(scorer)
        self.enabled = ScopedSetting(True)
        self.simulation: ScopedSetting[Simulation | None] = ScopedSetting(None)
        self.press = ScopedSetting(None)  # a compression.KVPress evicting from the cache (``with press(sdtp):``)
        self.prune_later_chunks = prune_later_chunks
        self._local = threading.local()  # .state, .exited, .record: one set per thread
        self._warned_nan = False
        self._model = model
        self._decoder = decoder_of(model)
        check_attention(self._decoder.config)
        self._norm = final_norm(model)
        self._handles: list = []
        self.attach()

    def attach(self) -> None:
        """Register the hooks on the model (done at construction; again after ``remove``)."""
        if self._handles:
            return
        self._handles = [
            self._decoder.register_forward_pre_hook(self._before_decoder, with_kwargs=True),
            self._decoder.register_forward_hook(self._after_decoder, with_kwargs=True),
            self._model.register_forward_pre_hook(self._before_model, with_kwargs=True),
            self._model.register_forward_hook(self._after_model),
        ]
        for idx, layer in enumerate(decoder_layers(self._model)):
            self._handles.append(layer.register_forward_pre_hook(functools.partial(self._before_layer, idx), with_kwargs=True))
            self._handles.append(layer.register_forward_hook(functools.partial(self._after_layer, idx), with_kwargs=True))

    @property
    def attached(self) -> bool:
        """False once ``remove`` has run."""
        return bool(self._handles)

    @property
    def last_record(self) -> PruningRecord | None:
        """The record of this thread's last pruned prefill."""
        return getattr(self._local, "record", None)

    def _in_forward(self) -> bool:
        """True while this thread runs a forward through these hooks."""
        return bool(self._handles) and getattr(self._local, "state", None) is not None

    def set_schedule(self, schedule: StageSchedule) -> None:
        """Make ``schedule`` the process-wide default from the next forward on."""
        self.schedule.default = schedule

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __deepcopy__(self, memo):
        raise TypeError(
            "cannot deep-copy a model with SDTP hooks attached: deep-copy the SDTPModel wrapper "
            "(copy.deepcopy(sdtp_model)) or call unload() first"
        )

    def __reduce_ex__(self, protocol):
        raise TypeError(
            "a model with SDTP hooks attached cannot be pickled: save the adapter with "
            "sdtp_model.save_pretrained(folder) and the base model with its own save_pretrained"
        )

    # ------------------------------------------------------------------ decoder
    def _before_model(self, module, args, kwargs):
        # logits_to_keep=1 (generate's prefill, scoring the next token) reads only the last position,
        # which is always kept: the early-exit hidden states of dropped positions would be thrown away
        self._local.last_row_only = isinstance(kwargs.get("logits_to_keep"), int) and kwargs["logits_to_keep"] == 1
        return None

    def _before_decoder(self, module, args, kwargs):
        local = self._local
        last_row_only, local.last_row_only = getattr(local, "last_row_only", False), False
        local.state, local.exited, local.simulation = None, None, self.simulation.value
        press = self.press.value  # a KV press also runs under disable_pruning(): it needs the PASS-mode masks
        if local.simulation is not None or not (self.enabled.value or press is not None):
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        tokens = ids if ids is not None else kwargs["inputs_embeds"]
        batch, length = tokens.shape[0], tokens.shape[1]
        if length == 0:
            raise ValueError(f"input_ids is empty (shape {list(tokens.shape)}): a forward needs at least one token")
        cache_key = "past_key_values" if "past_key_values" in kwargs else "cache"
        cache = kwargs.get(cache_key)
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = getattr(module.config, "use_cache", True)
        past = cache.get_seq_length() if cache is not None else 0
        if press is not None:
            if past == 0 and use_cache and (cache is None or type(cache) is DynamicCache):
                cache = kwargs[cache_key] = SDTPCache(config=module.config)  # evictions are recorded per layer
            start_forward(press, cache, batch, past, use_cache, kwargs.get("attention_mask"))
        if not self.enabled.value or not (past == 0 or (self.prune_later_chunks and length > 1)):
            if isinstance(cache, SDTPCache):
                cache.in_pruning_forward = self._in_forward
            local.state = ForwardState(PASS, length, past, cache if isinstance(cache, SDTPCache) else None, batch, tokens.device)
            local.state.press = press
            return args, kwargs

        check_attention(module.config)
        refuse_unaligned_outputs(module.config, kwargs)
        pad, pads = inspect_prompt(ids, kwargs.get("attention_mask"), batch, length, past, module.config.vocab_size, tokens.device)
        if past and any(pads):
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
            cache.in_pruning_forward = self._in_forward
        state = ForwardState(PRUNE, length, past, cache, batch, tokens.device, early_exit=not last_row_only)
        state.schedule, state.scorer, state.press = self.schedule.value, self.scorer.value, press
        state.check_nan = not isinstance(state.scorer, ModuleScorer)
        state.set_padding(pad, pads)
        local.state = state
        return args, kwargs

    def _after_decoder(self, module, args, kwargs, output):
        state, self._local.state = getattr(self._local, "state", None), None
        if state is None:
            return None
        if state.cache is not None:
            state.cache.virtual_length = state.past + state.length
        if state.mode != PRUNE or state.index is None:
            return None
        hidden = output.last_hidden_state  # [B, k, d], already through the final norm
        slots = state.index
        if state.early_exit:
            # every position gets the last hidden state it had (early exit), then the survivors' final ones
            with component("sdtp.early_exit"):
                full = self._norm(state.last_hidden).to(hidden.dtype)
                state.put(full, slots, hidden)
            output.last_hidden_state = full
        # else: [B, k, d] stays; its last row is the last position's (the local window is always kept)
        # fillers point at slot 0, padding in their rows, which `real` already marks False
        exited = state.real.index_put((state.rows, slots), torch.zeros((), dtype=torch.bool, device=slots.device))
        self._local.record = PruningRecord(state.length, state.kept, exited, state.lengths)
        self._local.exited = exited
        if state.nan_scores is not None and not self._warned_nan and bool(state.nan_scores):
            self._warned_nan = True
            warnings.warn(
                "the scorer returned NaN scores; NaN-scored tokens were ranked lowest (protected tokens are "
                "kept whatever the scores). A diverged or corrupted adapter, or a custom scorer bug?",
                RuntimeWarning,
                stacklevel=2,
            )
        return output

    def _after_model(self, module, args, output):
        exited, self._local.exited = getattr(self._local, "exited", None), None
        if exited is not None and hasattr(output, "logits"):
            output.pruned_positions = exited  # attribute only: tuple/index access to the output is unchanged
        return None

    # ------------------------------------------------------------------ layers
    def _before_layer(self, layer: int, module, args, kwargs):
        simulation = getattr(self._local, "simulation", None)
        if simulation is not None:
            return _simulate(simulation, layer, args, kwargs)
        state = getattr(self._local, "state", None)
        if state is None:
            return None
        if state.mode == PASS or layer < state.schedule.layers[0]:
            # every token of the chunk is here: the mask needs only the columns of this layer's cache (a
            # sliding or evicted layer holds fewer positions than the chunk's pruned layers see)
            cols = state.layer_columns(layer)
            mask = kwargs.get("attention_mask")
            if cols is not None and mask is not None:
                kwargs["attention_mask"] = state.pass_mask(mask, cols)
            return args, kwargs
        args, kwargs = _with_hidden(args, kwargs, self._prune(layer, _hidden_of(args, kwargs), state))
        with component("sdtp.gather"):
            for name in ("position_embeddings", "position_ids"):
                if name in kwargs:
                    kwargs[name] = state.gathered(kwargs[name])
            if "attention_mask" in kwargs:
                kwargs["attention_mask"] = state.gathered(kwargs["attention_mask"], as_mask=True, layer=layer)
        state.record_layer(layer)
        return args, kwargs

    def _after_layer(self, layer: int, module, args, kwargs, output):
        state = getattr(self._local, "state", None)
        if state is not None and state.cache is not None:
            _record_positions(state, layer)
            if state.press is not None:  # after the positions: eviction keeps them in step with the entries
                compress_layer(self._model, state.cache, layer, _hidden_of(args, kwargs), _new_positions(state, layer),
                               state.past + state.length)
        return None

    def _prune(self, layer: int, hidden: torch.Tensor, state: ForwardState) -> torch.Tensor:
        """Drop tokens before a stage layer; other layers pass ``hidden`` through. Always gathers at a
        stage, even when the budget keeps everything, so keep-all runs exercise the same path.

        Row b keeps its own budget from its real length; rows with a smaller budget than the batch's
        largest are filled on the left with masked filler slots, so the batch stays rectangular and
        left-padded."""
        if state.index is None:
            state.start(hidden)
        stage = state.stage_of(layer)
        if stage is None:
            return hidden
        if state.last_hidden is not None:
            with component("sdtp.early_exit"):
                state.put(state.last_hidden, state.index, hidden)
        with torch.no_grad(), component("sdtp.score"):
            scores = check_scores(state.scorer(layer, hidden, state.positions()), state.scorer, layer, hidden)
        with component("sdtp.select"):
            return self._select(stage, hidden, scores, state)

    def _select(self, stage: int, hidden: torch.Tensor, scores: torch.Tensor, state: ForwardState) -> torch.Tensor:
        """Keep the protected and the top-scored tokens of one stage; returns the gathered hidden states."""
        if state.check_nan:
            nan = torch.isnan(scores).any()
            state.nan_scores = nan if state.nan_scores is None else state.nan_scores | nan
        # the trained modules' weights are checked finite at load: skip the NaN handling for them
        keys = ranking_keys(scores, state.take(state.bias, state.index), finite=not state.check_nan)
        if not state.padded:  # one budget for every row: the kept slots, in order
            order = top_slots(keys, state.schedule.budgets(state.length)[stage])
            state.set_index(state.take(state.index, order), None)
        else:
            drop, valid = state.fillers[stage]
            order = top_slots_padded(keys, drop)
            state.set_index(state.take(state.index, order) * valid, valid)  # fillers: slot 0
        return state.take(hidden, order)


def _simulate(simulation: Simulation, layer: int, args, kwargs):
    if layer < simulation.schedule.layers[0]:
        return None
    hidden = _hidden_of(args, kwargs)
    if layer in simulation.budgets:
        simulation.on_stage(layer, hidden)
    kwargs["attention_mask"] = simulation.attention_bias(hidden, kwargs.get("attention_mask"))
    return args, kwargs


def _record_positions(state: ForwardState, layer: int) -> None:
    """Update ``cache.layer_positions[layer]`` after the layer cached this chunk.

    Full-attention layers that saw every position stay implicit (absent from the dict). A layer that
    pruned records its kept positions; a sliding-window layer always records, and like its cache keeps
    only the last ``window - 1`` entries (of the *kept* tokens, which may reach back further than the
    window: their columns of the position-built sliding mask block them). Layers of one stage share
    one positions tensor (``ForwardState.concat`` computes each once).
    """
    cache = state.cache
    window = getattr(cache.layers[layer], "sliding_window", None) if layer < len(cache.layers) else None
    pruned = state.mode == PRUNE and layer in state.kept
    if not pruned and window is None and layer not in cache.layer_positions:
        return
    new = _new_positions(state, layer)
    before = state.cached_positions(layer)
    positions = new if before is None else state.concat(before, new)
    cache.layer_positions[layer] = positions if window is None else positions[:, -(window - 1) :]


def _new_positions(state: ForwardState, layer: int) -> torch.Tensor:
    """``[B, k]`` original positions of the chunk's tokens that layer ``layer`` cached in this forward."""
    if state.mode == PRUNE and layer in state.kept:
        return state.cache_positions(state.kept[layer][0])
    return state.chunk_positions()


def _hidden_of(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args, kwargs, hidden):
    if args:
        return (hidden, *args[1:]), kwargs
    kwargs["hidden_states"] = hidden
    return args, kwargs
