"""``SDTPModel``: a causal LM with pruning modules attached, behaving like the base model."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Iterator

import torch
from torch import nn

from .architectures import model_dims
from .config import SDTPConfig
from .hub import download_adapter, push_to_hub
from .persistence import load_adapter, save_adapter
from .quantization import disable_cpu_repacking
from .pruning.controller import PruningController, Scorer
from .pruning.module import TokenPruner, keep_margin
from .pruning.state import PruningRecord


class SDTPModel(nn.Module):
    """A frozen ``*ForCausalLM`` plus one ``TokenPruner`` per stage layer.

    ``forward`` and ``generate`` are the base model's own (same signatures); pruning happens through
    hooks on the base model's decoder. Unknown attributes (``config``, ``device``, ``dtype``...) are
    looked up on the base model, as PEFT does.

    Attributes:
        base_model: the wrapped model; its parameters are frozen.
        sdtp_config: the ``SDTPConfig`` (layer count and hidden size filled in).
        pruners: ``ModuleDict`` keyed by the stage layer index as a string.
    """

    def __init__(self, model: nn.Module, config: SDTPConfig, scorer: Scorer | None = None):
        super().__init__()
        dims = model_dims(model)
        for name, actual in (("num_hidden_layers", dims.num_layers), ("hidden_size", dims.hidden_size)):
            expected = getattr(config, name)
            if expected is not None and expected != actual:
                raise ValueError(f"SDTPConfig.{name}={expected} does not match the base model ({actual})")
            setattr(config, name, actual)
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = getattr(model.config, "_name_or_path", None) or None
        self.base_model = model
        self.sdtp_config = config
        self.schedule = config.schedule(dims.num_layers)
        device = next(model.parameters()).device
        self.pruners = nn.ModuleDict(
            {str(layer): TokenPruner(dims.hidden_size, config.pruner_hidden_size) for layer in self.schedule.layers}
        ).to(device)
        for param in model.parameters():
            param.requires_grad_(False)
        disable_cpu_repacking(model)  # the saliency and training passes backpropagate through the base
        self.controller = PruningController(model, self.schedule, scorer or self.score_tokens, config.prune_later_chunks)

    # ------------------------------------------------------------------ behaviour of the base model
    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.base_model.generate(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    def score_tokens(self, layer: int, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Keep-minus-drop margin of stage ``layer``'s module: ``[B, n, d] -> [B, n]``."""
        if str(layer) not in self.pruners:
            raise ValueError(
                f"layer {layer} has no trained pruning module; the adapter's stage layers are "
                f"{list(self.schedule.layers)} (use a subset of them, or use_scorer() with a training-free scorer)"
            )
        return keep_margin(self.pruners[str(layer)](hidden))

    @property
    def active_schedule(self):
        """The ``StageSchedule`` the next pruned forward uses (``schedule`` unless ``use_schedule`` is active)."""
        return self.controller.schedule

    @property
    def last_pruning(self) -> PruningRecord | None:
        """Kept positions per layer and early-exit positions of the last pruned prefill."""
        return self.controller.last_record

    @contextlib.contextmanager
    def disable_pruning(self) -> Iterator[None]:
        """Run the base model untouched inside this block (prompts are not pruned)."""
        previous, self.controller.enabled = self.controller.enabled, False
        try:
            yield
        finally:
            self.controller.enabled = previous

    @contextlib.contextmanager
    def use_scorer(self, scorer: Scorer) -> Iterator[None]:
        """Rank tokens with ``scorer`` instead of the trained modules (baselines on the same schedule)."""
        previous, self.controller.scorer = self.controller.scorer, scorer
        try:
            yield
        finally:
            self.controller.scorer = previous

    @contextlib.contextmanager
    def use_schedule(self, layers: tuple[int, ...] | None = None, keep_ratio: float | None = None) -> Iterator[None]:
        """Prune with other stage ``layers`` and/or per-stage ``keep_ratio`` inside this block.

        Sweeps and the 5-stage "SDTP-low" variant use this; with the trained modules the layers must be
        a subset of the adapter's stages (a training-free scorer from ``use_scorer`` can use any layer).
        """
        num_layers = model_dims(self.base_model).num_layers
        new = dataclasses.replace(
            self.schedule,
            layers=tuple(self.schedule.layers if layers is None else (int(x) for x in layers)),
            keep_ratio=self.schedule.keep_ratio if keep_ratio is None else float(keep_ratio),
        )
        if not new.layers or list(new.layers) != sorted(set(new.layers)) or not 0 <= new.layers[0] <= new.layers[-1] < num_layers:
            raise ValueError(f"layers={list(new.layers)} must be strictly increasing layer indices in [0, {num_layers})")
        if not 0.0 < new.keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio={new.keep_ratio} must be in (0, 1]")
        previous = self.controller.schedule
        self.controller.set_schedule(new)
        try:
            yield
        finally:
            self.controller.set_schedule(previous)

    def unload(self) -> nn.Module:
        """Remove every hook and return the base model (its parameters stay frozen)."""
        self.controller.remove()
        return self.base_model

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

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload the adapter (config, weights) to the Hub repo ``repo_id``; see ``hub.push_to_hub``."""
        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, model: nn.Module, directory: str | os.PathLike) -> "SDTPModel":
        """Attach the adapter saved in ``directory`` (a local folder or a Hub repo id) to ``model``."""
        if not os.path.isdir(directory) and str(directory).count("/") == 1 and not str(directory).startswith((".", "/")):
            directory = download_adapter(str(directory))
        config, weights = load_adapter(directory)
        sdtp = cls(model, config)
        expected = set(sdtp.pruners.state_dict())
        if set(weights) != expected:
            raise ValueError(
                f"adapter weights in {str(directory)!r} do not match its config: missing "
                f"{sorted(expected - set(weights))}, unexpected {sorted(set(weights) - expected)}"
            )
        sdtp.pruners.load_state_dict(weights)
        return sdtp


def get_sdtp_model(model: nn.Module, config: SDTPConfig | None = None) -> SDTPModel:
    """Attach fresh (untrained) pruning modules to ``model`` as described by ``config``."""
    return SDTPModel(model, config or SDTPConfig())
