"""What ``bench speed`` measures on: a packaged or user model with its adapter and prompt tokens, or a
random-weight shape with random tokens (``--random-init``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..model import SDTPModel
from ..zoo import DEFAULT_MODEL, MODELS
from .common import UserText, adapter_source, model_label, prose_ids
from .shapes import SHAPES, attach_pruning, get_shape, random_model, shape_config

DEFAULT_LENGTHS = MODELS[DEFAULT_MODEL].bench_lengths  # for a --model without a shape of its own


def load_inputs(
    model_name: str,
    adapter: str | None,
    dtype: torch.dtype,
    device: str,
    random_init: bool,
    max_length: int,
    shape_config_file: str | None = None,
    revision: str | None = None,
    text: UserText | None = None,
):
    """``(SDTPModel on device, input token ids, description)`` for a ``--model`` or a random-init shape.

    Real weights read ``text`` (None: the held-out plays, never trained on) from its start;
    ``random_init`` builds the model on ``device`` from ``recipes/configs/<model>.json`` (or
    ``shape_config_file``) with random weights and feeds random tokens (see ``bench.shapes``).
    """
    if shape_config_file and not random_init:
        raise ValueError(f"--shape-config {shape_config_file} needs --random-init")
    if random_init:
        if text is not None:
            raise ValueError(f"{text.source}: --random-init feeds random tokens; drop --text-file/--dataset or --random-init")
        return _random_inputs(model_name, adapter, dtype, device, max_length, shape_config_file)
    if model_name in SHAPES and model_name not in MODELS and not Path(model_name).is_dir():
        raise ValueError(f"model={model_name!r} has no packaged weights; add --random-init, or use one of {sorted(MODELS)}, "
                         "a local transformers folder or a Hub id")
    from ..loading import load_base

    source = adapter_source(model_name, adapter)  # before the load: a missing --adapter fails at once
    model, tokenizer = load_base(model_name, revision=revision, dtype=str(dtype).removeprefix("torch."))
    all_ids = prose_ids(tokenizer, max_length, text)[0].tolist()
    model.to(device)
    sdtp = SDTPModel.from_pretrained(model, source)
    if model_name in MODELS:
        upstream = MODELS[model_name].upstream
    else:
        upstream = model.name_or_path + (f" (revision {revision})" if revision else "")
    description = {
        "model": model_label(model_name),
        "upstream": upstream,
        "adapter": str(adapter) if adapter else "shipped",
        "dtype": str(dtype).removeprefix("torch."),
        "attention": "sdpa",
        "weights": "real weights",
        "input": "held-out Shakespeare plays from their start" if text is None else f"{text.source}, from its start",
    }
    return sdtp, all_ids, description


def _random_inputs(model_name: str, adapter: str | None, dtype: torch.dtype, device: str, max_length: int,
                   shape_config_file: str | None):
    """``load_inputs`` for ``--random-init``: the shape's config, random weights, random tokens."""
    shape = get_shape(model_name)
    config = shape_config(model_name, shape_config_file, max_length)
    model = random_model(config, device, dtype, seed=0)
    sdtp, adapter_text = attach_pruning(model, shape, adapter, fresh=shape_config_file is not None)
    all_ids = torch.randint(10, config.vocab_size, (max_length,), generator=torch.Generator().manual_seed(0)).tolist()
    upstream = shape.upstream + (f", shape from {shape_config_file}" if shape_config_file else "")
    description = {
        "model": model_name,
        "upstream": upstream,
        "adapter": adapter_text,
        "dtype": str(dtype).removeprefix("torch."),
        "attention": "sdpa",
        "weights": "random weights (speed only: timings depend on shapes, not values)",
        "input": "random tokens",
    }
    return sdtp, all_ids, description


def default_lengths(model: str) -> tuple[int, ...]:
    """``--lengths`` when not given: the shape's (packaged models, Llama shapes), else 1K-8K."""
    return SHAPES[model].lengths if model in SHAPES else DEFAULT_LENGTHS
