"""``SDTPModel``: a causal LM with pruning modules attached, behaving like the base model."""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
import weakref
from typing import ContextManager, Sequence

import torch
from torch import nn

from .architectures import model_dims
from .config import SDTPConfig
from .files import CorruptedFileError
from .hub import DEFAULT_COMMIT_MESSAGE, push_to_hub, resolve_adapter
from .persistence import load_adapter, save_adapter
from .quantization import disable_cpu_repacking
from .pruning.controller import PruningController, Simulation
from .pruning.pruner import ModuleScorer, TokenPruner
from .pruning.scorers import Scorer
from .pruning.state import PruningRecord


class SDTPModel(nn.Module):
    """A frozen ``*ForCausalLM`` plus one ``TokenPruner`` per stage layer.

    ``forward`` and ``generate`` are the base model's own (same signatures); pruning happens through
    hooks on the base model's decoder. Unknown attributes (``config``, ``device``, ``dtype``...) are
    looked up on the base model, as PEFT does.

    One model may serve several threads at once: each call gets exactly the result it would get alone,
    and the context managers (``disable_pruning``, ``use_scorer``, ``use_schedule``, ``simulate``) act
    on the calling thread only. A base model carries at most one adapter: attaching a second one
    detaches the first (with a warning), and ``unload()`` (or deleting the wrapper) removes the hooks.

    Attributes:
        base_model: the wrapped model; its parameters are frozen.
        sdtp_config: the ``SDTPConfig`` (a copy of the one given, layer count and hidden size filled in).
        pruners: ``ModuleDict`` keyed by the stage layer index as a string (``pruner(layer)`` reads one).
    """

    def __init__(self, model: nn.Module, config: SDTPConfig, scorer: Scorer | None = None):
        super().__init__()
        if isinstance(model, SDTPModel):
            raise TypeError(
                "model is already an SDTPModel; attach the adapter to its base model instead "
                "(base = sdtp_model.unload())"
            )
        if not isinstance(config, SDTPConfig):
            raise TypeError(f"config must be an SDTPConfig, got {type(config).__name__}")
        if scorer is not None and not callable(scorer):
            raise TypeError(f"scorer must be callable (layer, hidden [B, n, d], positions [B, n]) -> [B, n]; got {scorer!r}")
        dims = model_dims(model)
        config = copy.deepcopy(config)  # attaching never changes the caller's config (one config, many models)
        config.validate()
        for name, actual in (("num_hidden_layers", dims.num_layers), ("hidden_size", dims.hidden_size)):
            expected = getattr(config, name)
            if expected is not None and expected != actual:
                base = getattr(model.config, "_name_or_path", None) or "unnamed"
                raise ValueError(
                    f"SDTPConfig.{name}={expected} does not match the base model ({actual}): this adapter was made "
                    f"for another model ({config.base_model_name_or_path or 'unnamed'}, {name}={expected}), not for "
                    f"{base!r} ({name}={actual})"
                )
            setattr(config, name, actual)
        config.check_model(dims.num_layers, dims.hidden_size)
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = getattr(model.config, "_name_or_path", None) or None
        self.base_model = model
        self.sdtp_config = config
        self.schedule = config.schedule(dims.num_layers)
        device = _execution_device(model)
        self.pruners = nn.ModuleDict(
            {str(layer): TokenPruner(dims.hidden_size, config.pruner_hidden_size) for layer in self.schedule.layers}
        ).to(device)
        for param in model.parameters():
            param.requires_grad_(False)
        disable_cpu_repacking(model)  # the saliency and training passes backpropagate through the base
        _detach_previous(model)
        controller = PruningController(model, self.schedule, scorer or ModuleScorer(self.pruners), config.prune_later_chunks)
        self.__dict__["controller"] = controller  # not a submodule: keeps it out of state_dict and repr
        _ATTACHED[model] = weakref.ref(self)
        # deleting the wrapper removes its hooks: nothing on the base model refers back to the wrapper
        self._finalizer = weakref.finalize(self, controller.remove)

    # ------------------------------------------------------------------ behaviour of the base model
    def forward(self, *args, **kwargs):
        self._check_attached("forward")
        return self.base_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        self._check_attached("generate")
        # the hooks refuse an empty prompt at the first forward, but transformers 5.1-5.2's generate indexes the
        # prompt before any forward (an IndexError): refuse it here, with the same message on every release
        prompt = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs"))
        if isinstance(prompt, torch.Tensor) and prompt.shape[-1] == 0:
            raise ValueError(f"input_ids is empty (shape {list(prompt.shape)}): generate needs at least one prompt token")
        return self.base_model.generate(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "controller"):
                raise
            return getattr(self.base_model, name)

    def _check_attached(self, what: str) -> None:
        if not self.controller.attached:
            raise RuntimeError(
                f"{what}() on an SDTPModel whose adapter was unloaded (unload(), or another adapter attached to the "
                "same base model): call the base model returned by unload() directly, or attach the adapter again"
            )

    def pruner(self, layer: int) -> TokenPruner:
        """The pruning module of stage ``layer``."""
        if str(layer) not in self.pruners:
            raise ValueError(f"layer {layer} has no pruning module; the adapter's stage layers are {list(self.schedule.layers)}")
        return self.pruners[str(layer)]

    @property
    def active_schedule(self):
        """The ``StageSchedule`` this thread's next pruned forward uses (``schedule`` unless ``use_schedule`` is active)."""
        return self.controller.schedule.value

    @property
    def last_pruning(self) -> PruningRecord | None:
        """Kept positions per layer and early-exit positions of this thread's last pruned prefill."""
        return self.controller.last_record

    def disable_pruning(self) -> ContextManager[None]:
        """Run the base model untouched inside this block, in this thread (prompts are not pruned)."""
        self._check_attached("disable_pruning")
        return self.controller.enabled.override(False)

    def use_scorer(self, scorer: Scorer) -> ContextManager[None]:
        """Rank tokens with ``scorer`` instead of the trained modules (baselines on the same schedule), in this thread.

        ``scorer(layer, hidden [B, n, d], positions [B, n]) -> [B, n]`` floating scores, higher = keep.
        """
        self._check_attached("use_scorer")
        if not callable(scorer):
            raise TypeError(f"use_scorer needs a callable (layer, hidden, positions) -> scores [B, n]; got {scorer!r}")
        return self.controller.scorer.override(scorer)

    def use_schedule(
        self,
        layers: Sequence[int] | None = None,
        keep_ratio: float | None = None,
        local_window_ratio: float | None = None,
        *,
        speedup: float | None = None,
        prompt_length: int | None = None,
        max_kv_fraction: float | None = None,
        max_flops_fraction: float | None = None,
    ) -> ContextManager[None]:
        """Prune with other stage ``layers``, per-stage ``keep_ratio`` and/or ``local_window_ratio`` inside
        this block, in this thread.

        Sweeps and the 5-stage "SDTP-low" variant use this; with the trained modules the layers must be
        a subset of the adapter's stages (a training-free scorer from ``use_scorer`` can use any layer).

        Or give a target instead of ``keep_ratio``: ``speedup`` (predicted prefill speedup, at least),
        ``max_kv_fraction`` and/or ``max_flops_fraction`` (shares of the unpruned prefill's, at most), for a
        prompt of ``prompt_length`` tokens (required: budgets depend on it; pass ``input_ids.shape[1]``).
        The keep ratio, stricter or looser than trained, and the stages (a subset of the adapter's, or
        exactly ``layers``) are planned by ``planning.plan_for_adapter``; a ``ValueError`` says the best
        the adapter's stages reach when they cannot meet the target.
        """
        self._check_attached("use_schedule")
        num_layers = model_dims(self.base_model).num_layers
        if isinstance(layers, (str, bytes)) or (layers is not None and not isinstance(layers, Sequence)):
            raise TypeError(f"layers={layers!r} is invalid: expected a sequence of layer indices such as (4, 6, 8)")
        targets = {"speedup": speedup, "max_kv_fraction": max_kv_fraction, "max_flops_fraction": max_flops_fraction}
        if prompt_length is not None or any(v is not None for v in targets.values()):
            given = {k: v for k, v in targets.items() if v is not None}
            if keep_ratio is not None:
                raise ValueError(f"keep_ratio={keep_ratio} conflicts with the target {given}: give a keep ratio or a target")
            if prompt_length is None:
                raise ValueError(f"prompt_length is required with the target {given}: budgets depend on the prompt's "
                                 "length (pass its token count, e.g. input_ids.shape[1])")
            from .planning import plan_for_adapter

            plan = plan_for_adapter(self, prompt_length=prompt_length, layers=layers,
                                    local_window_ratio=local_window_ratio, **targets)
            layers, keep_ratio = plan.layers, plan.keep_ratio
        new = dataclasses.replace(
            self.schedule,
            layers=self.schedule.layers if layers is None else tuple(layers),
            keep_ratio=self.schedule.keep_ratio if keep_ratio is None else keep_ratio,
            local_window_ratio=self.schedule.local_window_ratio if local_window_ratio is None else local_window_ratio,
        )  # StageSchedule checks each value
        if new.layers[-1] >= num_layers:
            raise ValueError(f"layers={list(new.layers)} is invalid: the model has {num_layers} layers (allowed: 1 <= layer < {num_layers})")
        return self.controller.schedule.override(new)

    def simulate(self, simulation: Simulation) -> ContextManager[None]:
        """Inside this block (this thread), forwards simulate pruning with ``simulation`` (training) instead of
        dropping tokens."""
        self._check_attached("simulate")
        return self.controller.simulation.override(simulation)

    def explain(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, tokenizer=None):
        """One pruned prefill of one prompt ``input_ids`` ``[1, N]``, recorded stage by stage: an
        ``explain.Explanation`` (kept positions and scores per stage, protected tokens, the last layer each
        token reached; ``tokenizer`` adds each token's text). Uses this thread's ``use_schedule``/``use_scorer``."""
        self._check_attached("explain")
        from .explain.run import explain

        return explain(self, input_ids, attention_mask, tokenizer)

    def unload(self) -> nn.Module:
        """Remove every hook and return the base model (its parameters stay frozen).

        The wrapper refuses ``forward``, ``generate`` and the context managers afterwards.
        """
        self.controller.remove()
        if _ATTACHED.get(self.base_model, lambda: None)() is self:
            del _ATTACHED[self.base_model]
        return self.base_model

    # ------------------------------------------------------------------ copies
    def __deepcopy__(self, memo: dict) -> "SDTPModel":
        """A copy with its own base model and modules that prunes like the original."""
        self._check_attached("copy.deepcopy")
        self.controller.remove()  # the hooks hold thread-local state that cannot be copied
        try:
            base = copy.deepcopy(self.base_model, memo)
        finally:
            self.controller.attach()
        scorer = self.controller.scorer.default
        clone = type(self)(base, self.sdtp_config, None if isinstance(scorer, ModuleScorer) else scorer)
        clone.pruners.load_state_dict(self.pruners.state_dict())
        clone.controller.set_schedule(self.controller.schedule.default)
        return clone

    def __reduce_ex__(self, protocol):
        raise TypeError(
            "an SDTPModel cannot be pickled (torch.save(model) pickles it): save the adapter with "
            "save_pretrained(folder) and load it with SDTPModel.from_pretrained(base_model, folder)"
        )

    # ------------------------------------------------------------------ parameters
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write only the adapter (config + pruning-module weights) to ``directory``."""
        save_adapter(directory, self.sdtp_config, self.pruners.state_dict())

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        commit_message: str = DEFAULT_COMMIT_MESSAGE,
        token: str | None = None,
    ) -> str:
        """Upload the adapter (config, weights, model card ``README.md``) to the Hub repo ``repo_id``
        (created if needed); returns the commit (or pull request) URL. See ``hub.push_to_hub``."""
        return push_to_hub(self, repo_id, private=private, revision=revision, create_pr=create_pr,
                           commit_message=commit_message, token=token)

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | os.PathLike,
        revision: str | None = None,
        subfolder: str | None = None,
        token: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
    ) -> "SDTPModel":
        """Attach the adapter at ``model_id`` to ``model``, like ``PeftModel.from_pretrained``.

        ``model_id`` is an existing folder (``subfolder`` applies inside it), a shipped adapter name, or
        a Hub repo id ``owner/name``, downloaded with ``huggingface_hub.snapshot_download`` (``revision``,
        ``token``, ``cache_dir``, ``local_files_only``, ``force_download`` are passed on; ``HF_HUB_OFFLINE=1``
        reads the cache only). A missing local-looking path never reaches the Hub.
        """
        directory = resolve_adapter(  # local folder, else shipped adapter name, else Hub id
            model_id, revision=revision, subfolder=subfolder, token=token, cache_dir=cache_dir,
            local_files_only=local_files_only, force_download=force_download,
        )
        config, weights = load_adapter(directory)
        sdtp = cls(model, config)
        try:
            sdtp.load_pruner_weights(weights, f"adapter weights in {str(directory)!r} do not match its config")
        except CorruptedFileError:
            sdtp.unload()
            raise
        _warn_if_other_base(config.base_model_name_or_path, getattr(model.config, "_name_or_path", None))
        return sdtp

    def load_pruner_weights(self, weights: dict[str, torch.Tensor], mismatch: str = "pruner weights do not match the modules") -> None:
        """Copy ``weights`` (a saved adapter's state dict) into the pruning modules, after checking every
        name and shape; ``mismatch`` starts the error message.

        Raises:
            CorruptedFileError: a module is missing or unexpected, or has another shape (the message lists them).
        """
        expected = {key: tuple(value.shape) for key, value in self.pruners.state_dict().items()}
        found = {key: tuple(value.shape) for key, value in weights.items()}
        if found != expected:
            wrong = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
            raise CorruptedFileError(
                f"{mismatch}: missing {sorted(set(expected) - set(found))}, unexpected {sorted(set(found) - set(expected))}, "
                f"wrong shape {[f'{k}: {list(found[k])} (config expects {list(expected[k])})' for k in wrong]}"
            )
        self.pruners.load_state_dict(weights)


# base model -> the wrapper whose hooks it carries (weak both ways: neither keeps the other alive)
_ATTACHED: "weakref.WeakKeyDictionary[nn.Module, weakref.ref]" = weakref.WeakKeyDictionary()


def _execution_device(model: nn.Module) -> torch.device:
    """Where the base model computes: an ``accelerate`` hook's execution device (a model loaded with a
    ``device_map`` that offloads to CPU or disk keeps such weights on ``meta`` or CPU), else the first
    parameter that is not on ``meta``, else the CPU."""
    for module in model.modules():
        device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device)
    return next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))


def _detach_previous(model: nn.Module) -> None:
    previous = _ATTACHED.get(model, lambda: None)()
    if previous is not None and previous.controller.attached:
        warnings.warn(
            "this base model already had an SDTP adapter attached; its hooks were removed and the earlier SDTPModel "
            "wrapper is now unloaded (call unload() on a wrapper before attaching another to silence this)",
            stacklevel=4,
        )
        previous.unload()


def _warn_if_other_base(trained_for: str | None, base: str | None) -> None:
    """Same shapes but another model's name: the adapter may still work, but the user should know."""
    if trained_for and base and trained_for != base and not os.path.exists(base):
        warnings.warn(
            f"this adapter was trained for {trained_for!r} but is attached to {base!r}; the shapes match, "
            "so it runs, but its scores were learned on another model's hidden states",
            stacklevel=3,
        )


def get_sdtp_model(model: nn.Module, config: SDTPConfig | None = None) -> SDTPModel:
    """Attach fresh (untrained) pruning modules to ``model`` as described by ``config``."""
    return SDTPModel(model, config or SDTPConfig())
