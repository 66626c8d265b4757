"""``SDTPConfig``: every choice an SDTP adapter makes, validated, JSON round-trippable.

Follows PEFT's config style: a dataclass whose fields carry ``help`` metadata, saved as
``adapter_config.json`` next to the weights.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .files import atomic_write_bytes, read_json_object
from .schedule import StageSchedule, auto_layer_step, is_int, is_number

CONFIG_NAME = "adapter_config.json"
ADAPTER_TYPE = "SDTP"
FORMAT_VERSION = 1


def _package_version() -> str:
    from . import __version__

    return __version__


@dataclass
class SDTPConfig:
    """Configuration of a Saliency-driven Dynamic Token Pruning adapter.

    Stage placement is either an explicit ``prune_layers`` list or ``num_stages`` stages starting at
    ``first_layer`` every ``layer_step`` layers (``None`` = a step that ends at ~3/4 of the depth).
    After stage s the prompt keeps ``ceil(N * keep_ratio**s)`` tokens, the first ``protected_first``
    and the last ``local_window_ratio`` share of them included.

    Example::

        >>> config = SDTPConfig(keep_ratio=0.9, num_stages=10)
        >>> config.resolve_layers(30)
        [4, 6, 8, 10, 12, 14, 16, 18, 20, 22]
    """

    prune_layers: list[int] | None = field(
        default=None, metadata={"help": "Explicit stage layers (pruning happens before each). Overrides the three fields below."}
    )
    num_stages: int = field(default=10, metadata={"help": "Number of pruning stages when prune_layers is not given."})
    first_layer: int = field(default=4, metadata={"help": "Layer index of the first stage when prune_layers is not given."})
    layer_step: int | None = field(
        default=None, metadata={"help": "Layers between stages; None picks a step ending at ~3/4 of the depth."}
    )
    keep_ratio: float = field(default=0.9, metadata={"help": "Per-stage keep ratio r in (0, 1]; cumulative keep is r**s."})
    protected_first: int = field(default=4, metadata={"help": "Leading tokens (attention sinks) that are never pruned."})
    local_window_ratio: float = field(
        default=0.1, metadata={"help": "Share in [0, 1) of the most recent tokens that is never pruned (last token always kept)."}
    )
    prune_later_chunks: bool = field(
        default=False,
        metadata={
            "help": "Prune a multi-token chunk sent on top of an existing cache (the next chat turn) by the same "
            "rules as a fresh prompt; False passes such chunks through every layer unpruned (exact)."
        },
    )
    pruner_hidden_size: int = field(default=128, metadata={"help": "Hidden width of each two-layer pruning MLP."})
    gumbel_temperature: float = field(default=1.0, metadata={"help": "Gumbel-Softmax temperature used in training (> 0)."})
    lm_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the language-modelling loss under simulated pruning."})
    distill_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a distillation term beyond the paper: KL from the unpruned model's next-token "
            "distributions to the pruned model's, on the target tokens (0 = the paper's objective)."
        },
    )
    mse_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the MSE between keep probability and saliency."})
    rank_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the pairwise ranking loss against saliency."})
    saliency_tail_ratio: float = field(
        default=0.25,
        metadata={"help": "For plain text (no target mask), share in (0, 1) of the sequence whose log-likelihood is differentiated."},
    )
    base_model_name_or_path: str | None = field(default=None, metadata={"help": "Base model the adapter was trained for."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Depth of the base model (filled in when attached)."})
    hidden_size: int | None = field(default=None, metadata={"help": "Hidden size of the base model (filled in when attached)."})
    adapter_type: str = field(default=ADAPTER_TYPE, metadata={"help": "Always 'SDTP'; lets loaders recognise the folder."})
    format_version: int = field(default=FORMAT_VERSION, metadata={"help": "Version of the on-disk adapter format."})
    library_version: str = field(default_factory=_package_version, metadata={"help": "sdtp_adapter version that wrote it."})

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field, its value and what is allowed."""

        def bad(name: str, allowed: str) -> None:
            raise ValueError(f"SDTPConfig.{name}={getattr(self, name)!r} is invalid: {allowed}")

        if self.prune_layers is not None:
            layers = self.prune_layers
            if not isinstance(layers, (list, tuple)) or not layers or not all(is_int(x) for x in layers):
                bad("prune_layers", "expected a non-empty list of integer layer indices, or None")
            if any(x < 1 for x in layers):
                bad("prune_layers", "layer indices must be >= 1 (layer 0 always sees every token)")
            if list(layers) != sorted(set(layers)):
                bad("prune_layers", "layer indices must be strictly increasing")
            self.prune_layers = [int(x) for x in layers]
        for name in ("num_stages", "first_layer", "pruner_hidden_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                bad(name, "expected an integer >= 1")
        if self.layer_step is not None and (not is_int(self.layer_step) or self.layer_step < 1):
            bad("layer_step", "expected an integer >= 1 or None")
        if not is_number(self.keep_ratio) or not 0 < self.keep_ratio <= 1:
            bad("keep_ratio", "expected a number in (0, 1]")
        if not isinstance(self.prune_later_chunks, bool):
            bad("prune_later_chunks", "expected True or False")
        if not is_int(self.protected_first) or self.protected_first < 0:
            bad("protected_first", "expected an integer >= 0")
        if not is_number(self.local_window_ratio) or not 0 <= self.local_window_ratio < 1:
            bad("local_window_ratio", "expected a number in [0, 1)")
        if not is_number(self.gumbel_temperature) or not self.gumbel_temperature > 0:
            bad("gumbel_temperature", "expected a finite number > 0")
        for name in ("lm_loss_weight", "distill_loss_weight", "mse_loss_weight", "rank_loss_weight"):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                bad(name, "expected a finite number >= 0")
        if not is_number(self.saliency_tail_ratio) or not 0 < self.saliency_tail_ratio < 1:
            bad("saliency_tail_ratio", "expected a number in (0, 1)")
        for name in ("num_hidden_layers", "hidden_size"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                bad(name, "expected an integer >= 1 or None")
        if self.base_model_name_or_path is not None and not isinstance(self.base_model_name_or_path, str):
            bad("base_model_name_or_path", "expected a string (the base model's Hub id) or None")
        if not isinstance(self.library_version, str) or not self.library_version:
            bad("library_version", "expected a non-empty version string such as '0.1.0'")
        if self.adapter_type != ADAPTER_TYPE:
            bad("adapter_type", f"expected {ADAPTER_TYPE!r}")
        if not is_int(self.format_version):
            raise TypeError(
                f"SDTPConfig.format_version={self.format_version!r} is invalid: expected an integer "
                f"(this library writes {FORMAT_VERSION}), not {type(self.format_version).__name__}"
            )
        if self.format_version < 1:
            bad("format_version", "expected an integer >= 1")
        check_written_by(self.format_version, self.library_version)

    def check_model(self, num_layers: int, hidden_size: int) -> None:
        """Check the fields that depend on the model, before anything is allocated for it."""
        limit = max_pruner_hidden_size(hidden_size)
        if self.pruner_hidden_size > limit:
            raise ValueError(
                f"SDTPConfig.pruner_hidden_size={self.pruner_hidden_size} is invalid for a model of hidden size "
                f"{hidden_size}: expected 1 <= pruner_hidden_size <= {limit} (a pruning module is meant to be tiny)"
            )
        self.resolve_layers(num_layers)

    # ---------------------------------------------------------------- schedule
    def resolve_layers(self, num_layers: int) -> list[int]:
        """Stage layers for a model with ``num_layers`` decoder layers."""
        if self.prune_layers is not None:
            layers = list(self.prune_layers)
        elif self.num_stages > num_layers - 1:
            raise ValueError(
                f"SDTPConfig.num_stages={self.num_stages} is invalid for a {num_layers}-layer model: "
                f"expected 1 <= num_stages <= {num_layers - 1}"
            )
        else:
            step = self.layer_step or auto_layer_step(num_layers, self.num_stages, self.first_layer)
            layers = [self.first_layer + i * step for i in range(self.num_stages)]
        if layers[-1] >= num_layers:
            name = "prune_layers" if self.prune_layers is not None else "num_stages/first_layer/layer_step"
            raise ValueError(
                f"SDTPConfig.{name} places a stage at layer {layers[-1]}, but the model has only {num_layers} "
                f"layers (allowed: 1 <= layer <= {num_layers - 1}); stages resolved to {layers}"
            )
        return layers

    def schedule(self, num_layers: int) -> StageSchedule:
        """The ``StageSchedule`` this config describes on a model of ``num_layers`` layers."""
        return StageSchedule(
            layers=tuple(self.resolve_layers(num_layers)),
            keep_ratio=float(self.keep_ratio),
            protected_first=int(self.protected_first),
            local_window_ratio=float(self.local_window_ratio),
        )

    @classmethod
    def for_target(
        cls, model_or_config, speedup: float | None = 2.0, prompt_length: int = 8192,
        max_kv_fraction: float | None = None, max_flops_fraction: float | None = None, **config_kwargs,
    ) -> "SDTPConfig":
        """A config whose stages and ``keep_ratio`` reach every given target at ``prompt_length`` tokens.

        ``model_or_config``: a transformers model, a ``PretrainedConfig`` or a model name/path (its config
        is read). ``speedup``: predicted prefill speedup, at least (``None``: no speed target);
        ``max_kv_fraction`` / ``max_flops_fraction``: K/V bytes after the prefill / prefill FLOPs over the
        unpruned ones, at most. ``config_kwargs`` are other fields (``num_stages``, ``protected_first``...):
        the stage grid searched and the protected tokens. Returns them with the planned ``prune_layers`` and
        ``keep_ratio`` (``planning.plan_schedule``: the placement the sweep found best for quality, then the
        loosest ratio); raises ``ValueError`` naming the target out of reach and the best reachable value.

            >>> config = SDTPConfig.for_target("HuggingFaceTB/SmolLM2-135M-Instruct", speedup=2.0, prompt_length=8192)  # doctest: +SKIP
        """
        from .planning import config_for_target  # imports torch: only when asked

        return config_for_target(cls, model_or_config, prompt_length=prompt_length, speedup=speedup,
                                 max_kv_fraction=max_kv_fraction, max_flops_fraction=max_flops_fraction, **config_kwargs)

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SDTPConfig":
        known = {f.name for f in fields(cls)}
        if is_int(data.get("format_version", FORMAT_VERSION)) and isinstance(data.get("library_version", ""), str):
            check_written_by(data.get("format_version", FORMAT_VERSION), data.get("library_version", ""))  # before unknown fields
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SDTPConfig fields {unknown}; allowed fields: {sorted(known)}")
        return cls(**data)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Validate, then write ``adapter_config.json`` atomically into ``directory``."""
        self.validate()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / CONFIG_NAME, self.to_json().encode())

    def to_json(self) -> str:
        """The config as ``adapter_config.json`` holds it."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "SDTPConfig":
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {str(directory)!r}: not an SDTP adapter folder, or an incomplete one")
        return cls.from_dict(read_json_object(path, "adapter config"))


def max_pruner_hidden_size(hidden_size: int) -> int:
    """Largest ``pruner_hidden_size`` accepted for a model of ``hidden_size``."""
    return max(1024, 4 * hidden_size)


def major_version(version: str) -> int | None:
    """The leading integer of a version string (``'1.2.0'`` -> 1); None when it has none."""
    match = re.match(r"\s*v?(\d+)", version)
    return int(match.group(1)) if match else None


def check_written_by(format_version: int, library_version: str) -> None:
    """Refuse an adapter written by a newer release: a newer ``format_version`` than this release reads,
    or a ``library_version`` of a newer major version than this package.

    Raises:
        ValueError: naming the field, the version that wrote the adapter and this release's version.
    """
    mine = _package_version()
    if format_version > FORMAT_VERSION:
        raise ValueError(
            f"SDTPConfig.format_version={format_version!r} is invalid: this adapter was written by sdtp_adapter "
            f"{library_version} (library_version={library_version!r}), in a format newer than this release reads "
            f"(<= {FORMAT_VERSION}; this is sdtp_adapter {mine}); upgrade sdtp_adapter"
        )
    theirs, ours = major_version(library_version), major_version(mine)
    if theirs is not None and ours is not None and theirs > ours:
        raise ValueError(
            f"SDTPConfig.library_version={library_version!r} is invalid: this adapter was written by sdtp_adapter "
            f"{library_version}, a newer major version than this release ({mine}; allowed: major version <= {ours}); "
            "upgrade sdtp_adapter"
        )
