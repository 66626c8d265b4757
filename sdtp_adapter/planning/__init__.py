"""Plan a stage schedule from a target: the stage placement and keep ratio that reach a prefill speedup, a
FLOPs fraction and/or a KV-cache fraction at a given prompt length (``SDTPConfig.for_target``, ``sdtp plan``,
``SDTPModel.use_schedule(speedup=...)``).

Cost model (docs/method.md "Planning a schedule"): FLOPs are ``bench.flops``' analytic prefill model (causal
attention, scoring modules included), so the predicted speedup *is* ``flops_speedup_bound``. The KV cache
after the prefill holds, per layer, the tokens entering it (``StageSchedule.tokens_per_layer``), at most
``window - 1`` on a sliding-window layer (``architectures.cache_windows``); its fraction is taken against
the unpruned prefill's cache.

Search (``search``): every metric is monotone in the keep ratio r (no budget grows as r falls), so within a
placement the ratios meeting the targets form ``(0, r*]``. r* is found by bisection on the grid
``k * RATIO_STEP``: the answer is the loosest grid ratio meeting every target (more tokens kept, better
quality). Candidate placements (``placements``) are subsets of a stage grid, tried in
``PLACEMENT_PREFERENCE`` order (best quality in the sweep first); the first that can meet the targets wins.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import torch

from ..architectures import cache_windows, config_dims, unwrap
from ..config import SDTPConfig
from ..schedule import is_int
from .placements import PLACEMENT_PREFERENCE, SUBSETS, candidates, placement_kind, placement_name, placements, quality_ranking
from .search import RATIO_STEP, TARGETS, CostModel, Plan, choose, loosest_ratio

__all__ = [
    "PLACEMENT_PREFERENCE", "RATIO_STEP", "SUBSETS", "TARGETS", "CostModel", "Plan", "candidates", "choose", "config_for_target",
    "loosest_ratio", "model_config", "placement_kind", "placement_name", "placements", "plan_for_adapter",
    "plan_schedule", "quality_ranking",
]


def dtype_bytes(dtype: str | torch.dtype) -> int:
    """Bytes per element of ``dtype`` (a torch dtype or its name such as ``"bfloat16"``)."""
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"kv_dtype={dtype!r} is invalid: expected a torch dtype or its name ('float32', 'bfloat16', 'float16')")
    return torch.empty((), dtype=resolved).element_size()


def model_config(model_or_config) -> tuple[object, str | None]:
    """``(transformers config, model name or None)`` of a model, a ``PretrainedConfig`` or a name/path (``AutoConfig``)."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config, getattr(model_or_config, "_name_or_path", None) or None
    if isinstance(model_or_config, (str, os.PathLike)):
        from ..loading import resolve_model

        source, recorded = resolve_model(str(model_or_config))
        try:
            return AutoConfig.from_pretrained(source), recorded
        except OSError as err:  # unknown or unreachable Hub id, unreadable folder
            raise FileNotFoundError(f"cannot read the config of model={str(model_or_config)!r}: {err}") from err
    config = getattr(unwrap(model_or_config), "config", None)
    if not isinstance(config, PretrainedConfig):
        raise TypeError(f"model_or_config={type(model_or_config).__name__} is invalid: expected a transformers model, "
                        "a PretrainedConfig, or a model name or path")
    return config, getattr(config, "_name_or_path", None) or None


def plan_schedule(
    model_or_config, *, prompt_length: int, speedup: float | None = None, max_flops_fraction: float | None = None,
    max_kv_fraction: float | None = None, num_stages: int | None = None, config: SDTPConfig | None = None,
    pruner_hidden_size: int | None = None, kv_dtype: str | torch.dtype = "float32",
) -> Plan:
    """The loosest schedule meeting every given target at ``prompt_length`` tokens.

    Args:
        model_or_config: a transformers model (PEFT and ``SDTPModel`` wrappers too), a ``PretrainedConfig``,
            or a model name/path as ``--model`` takes it (the config alone is read).
        prompt_length: N, the prompt length the targets are for (budgets, and so speedups, depend on it).
        speedup: predicted prefill speedup to reach, at least (``bench.flops.flops_speedup_bound``).
        max_flops_fraction: pruned prefill FLOPs over unpruned, at most.
        max_kv_fraction: K/V bytes cached after the prefill over unpruned, at most.
        num_stages: stage grid of this many stages (``SDTPConfig.num_stages``); default: ``config``'s.
        config: the stage grid (``prune_layers``, or ``num_stages``/``first_layer``/``layer_step``), protected
            tokens and scoring-module width; default ``SDTPConfig()``. The placements tried are ``candidates`` of its grid.
        pruner_hidden_size: scoring-module width counted in the FLOPs (0 for a training-free scorer);
            default: ``config``'s.
        kv_dtype: element type of the reported KV bytes.

    Raises:
        ValueError: no target, a bad value, or targets no placement reaches (the message says the best
            reachable value and what bounds it).
    """
    hf_config, name = model_config(model_or_config)
    config = config or SDTPConfig()
    if num_stages is not None:
        if config.prune_layers is not None:
            raise ValueError(f"num_stages={num_stages} conflicts with config.prune_layers={config.prune_layers}; give one of them")
        config = dataclasses.replace(config, num_stages=num_stages)
    if not is_int(prompt_length) or prompt_length < 1:
        raise ValueError(f"prompt_length={prompt_length!r} is invalid: expected an integer >= 1 (tokens)")
    hidden = config.pruner_hidden_size if pruner_hidden_size is None else pruner_hidden_size
    if not is_int(hidden) or hidden < 0:
        raise ValueError(f"pruner_hidden_size={hidden!r} is invalid: expected an integer >= 0")
    dims = config_dims(hf_config)
    cost = CostModel(dims, tuple(cache_windows(hf_config)), prompt_length, hidden, dtype_bytes(kv_dtype))
    grid = config.resolve_layers(dims.num_layers)
    targets = {"speedup": speedup, "max_flops_fraction": max_flops_fraction, "max_kv_fraction": max_kv_fraction}
    return choose(cost, candidates(grid), config.schedule(dims.num_layers), targets,
                  str(kv_dtype).removeprefix("torch."), name)


def plan_for_adapter(
    sdtp, *, prompt_length: int, speedup: float | None = None, max_flops_fraction: float | None = None,
    max_kv_fraction: float | None = None, layers: Sequence[int] | None = None, local_window_ratio: float | None = None,
) -> Plan:
    """``plan_schedule`` over a trained adapter's own stages (``SDTPModel.use_schedule(speedup=...)``).

    The placements tried are the ``candidates`` of the adapter's stage layers (or exactly ``layers``); protected
    tokens are the adapter's (``local_window_ratio`` overrides its window). The scoring modules' FLOPs
    count when the trained modules score in this thread, not under ``use_scorer``'s training-free scorers.
    """
    from ..pruning.pruner import ModuleScorer

    if not is_int(prompt_length) or prompt_length < 1:
        raise ValueError(f"prompt_length={prompt_length!r} is invalid: expected an integer >= 1 (the prompt's tokens)")
    base = sdtp.base_model
    template = sdtp.schedule
    if local_window_ratio is not None:
        template = dataclasses.replace(template, local_window_ratio=local_window_ratio)
    trained = isinstance(sdtp.controller.scorer.value, ModuleScorer)
    cost = CostModel(config_dims(base.config), tuple(cache_windows(base.config)), prompt_length,
                     sdtp.sdtp_config.pruner_hidden_size if trained else 0, dtype_bytes(base.dtype))
    options = candidates(template.layers) if layers is None else {f"given ({len(layers)} stages)": tuple(layers)}
    targets = {"speedup": speedup, "max_flops_fraction": max_flops_fraction, "max_kv_fraction": max_kv_fraction}
    name = f"the adapter's stages {list(template.layers)} on {sdtp.sdtp_config.base_model_name_or_path or 'its model'}"
    return choose(cost, options, template, targets, str(base.dtype).removeprefix("torch."), name)


def config_for_target(cls, model_or_config, *, prompt_length: int, speedup: float | None,
                      max_kv_fraction: float | None, max_flops_fraction: float | None, **config_kwargs) -> SDTPConfig:
    """``SDTPConfig.for_target``: ``cls(**config_kwargs)`` (the stage grid and protected tokens) with the planned
    ``prune_layers``, ``keep_ratio``, the matching ``num_stages``/``first_layer``, and the model's depth and width."""
    if "keep_ratio" in config_kwargs:
        raise ValueError(f"keep_ratio={config_kwargs['keep_ratio']!r} is what for_target solves for; give a target instead")
    config = cls(**config_kwargs)
    hf_config, name = model_config(model_or_config)
    plan = plan_schedule(hf_config, prompt_length=prompt_length, speedup=speedup, max_kv_fraction=max_kv_fraction,
                         max_flops_fraction=max_flops_fraction, config=config)
    dims = config_dims(hf_config)
    return dataclasses.replace(
        config, prune_layers=list(plan.layers), num_stages=len(plan.layers), first_layer=plan.layers[0],
        keep_ratio=plan.keep_ratio, num_hidden_layers=dims.num_layers, hidden_size=dims.hidden_size,
        base_model_name_or_path=config.base_model_name_or_path or name,
    )
