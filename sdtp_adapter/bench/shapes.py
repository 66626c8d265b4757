"""Model shapes for ``sdtp bench speed --random-init``: one table, name -> config file, default lengths.

Random weights and random tokens measure speed only: kernels, and so timings, depend on the shapes
(layers, widths, heads, vocabulary), not on the values. Packaged models keep their shipped adapter;
the Llama shapes have no adapter, so SDTP gets fresh, untrained pruning modules from ``SDTPConfig()``
(stage layers and budgets are fixed counts, so an untrained scorer prunes exactly as much).
The models are built directly on the target device in the target dtype: an 8B model built in fp32
on the CPU first would take minutes and 32 GB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import SDTPConfig
from ..model import SDTPModel, get_sdtp_model
from ..zoo import MODELS, SHIPPED_ADAPTERS, PackagedModel

CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "configs"
GPU_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)


@dataclass(frozen=True)
class Shape:
    """One random-init shape.

    Attributes:
        name: ``--model`` value (and the ``speed-<name>[-cuda]`` section name).
        config_file: transformers config under ``recipes/configs/``.
        lengths: default prompt lengths in tokens.
        upstream: what the shape copies, for the results.
        adapter: shipped adapter trained for this model; ``None`` = fresh modules from ``SDTPConfig()``.
    """

    name: str
    config_file: str
    lengths: tuple[int, ...]
    upstream: str
    adapter: Path | None = None

    @classmethod
    def packaged(cls, model: PackagedModel) -> Shape:
        """A packaged model's shape: ``recipes/configs/<name>.json``, its benchmark lengths, its shipped adapter."""
        return cls(model.name, f"{model.name}.json", model.bench_lengths, model.upstream, SHIPPED_ADAPTERS / model.name)


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        *(Shape.packaged(model) for model in MODELS.values()),
        Shape("llama3.2-1b", "llama3.2-1b.json", GPU_LENGTHS, "meta-llama/Llama-3.2-1B shape (config only)"),
        Shape("llama3.1-8b", "llama3.1-8b.json", GPU_LENGTHS, "meta-llama/Llama-3.1-8B shape (config only)"),
    )
}


def get_shape(name: str) -> Shape:
    if name not in SHAPES:
        raise ValueError(f"model={name!r} has no random-init shape; allowed: {sorted(SHAPES)}")
    return SHAPES[name]


def shape_config(name: str, config_file: str | Path | None = None, max_length: int = 0):
    """The transformers config of shape ``name`` (or of ``config_file``), positions raised to ``max_length``."""
    from transformers import AutoConfig

    path = Path(config_file) if config_file else CONFIG_DIR / get_shape(name).config_file
    if not path.is_file():
        raise ValueError(f"random-init config {path} is missing (a source checkout's recipes/configs, or --shape-config)")
    config = AutoConfig.from_pretrained(path)
    config.max_position_embeddings = max(config.max_position_embeddings, max_length)
    return config


def random_model(config, device: str, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """``*ForCausalLM`` of ``config`` with transformers' random init, allocated on ``device`` in ``dtype``.

    Values are normal(0, initializer_range) and ones for norms: finite, like a trained model's scale,
    so no kernel takes a NaN/inf path. ``seed`` fixes the values without touching the caller's global
    random state (transformers' init draws from it, so it runs inside ``torch.random.fork_rng``).
    """
    from transformers import AutoModelForCausalLM

    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the caller's generators are restored on exit
        torch.random.manual_seed(seed)
        with torch.device(device):  # allocate (and initialise) where it runs: no fp32 CPU copy of 8B
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def attach_pruning(model: torch.nn.Module, shape: Shape, adapter: str | None, fresh: bool) -> tuple[SDTPModel, str]:
    """``(SDTPModel, description of its pruning modules)``: ``adapter``, else the shape's shipped one, else fresh.

    ``fresh`` forces untrained modules from ``SDTPConfig()`` (a ``--shape-config`` model has other
    dimensions than the shipped adapter was trained for).
    """
    if adapter:
        return SDTPModel.from_pretrained(model, adapter), str(adapter)
    if shape.adapter is not None and not fresh:
        return SDTPModel.from_pretrained(model, shape.adapter), "shipped"
    return get_sdtp_model(model, SDTPConfig()), "fresh untrained modules from SDTPConfig() (speed only)"


def check_finite(sdtp: SDTPModel, ids: torch.Tensor) -> None:
    """Raise if base or SDTP prefill logits of ``ids [1, N]`` are not finite (would change kernels)."""
    from .flops import prefill_call

    for prune in (False, True):
        logits = prefill_call(sdtp, ids, prune)().logits  # [1, 1, vocab]
        if not torch.isfinite(logits).all():
            raise RuntimeError(f"random-init model gives non-finite logits (pruning={prune}) at {ids.shape[1]} tokens")
