"""Adapter files on disk: ``adapter_config.json`` + ``adapter_model.safetensors``, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import SDTPConfig, publish

WEIGHTS_NAME = "adapter_model.safetensors"


def save_adapter(directory: str | os.PathLike, config: SDTPConfig, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write the adapter's weights and config into ``directory`` (created if needed).

    Each file is written to a temp file in the same folder and renamed into place, so an interrupted
    save never leaves a truncated adapter behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS_NAME}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "adapter_type": config.adapter_type})
        publish(tmp, directory / WEIGHTS_NAME)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    config.save_pretrained(directory)
    return directory


def load_adapter(directory: str | os.PathLike) -> tuple[SDTPConfig, dict[str, torch.Tensor]]:
    """Read ``(config, state_dict)`` from an adapter folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"adapter folder {str(directory)!r} does not exist")
    config = SDTPConfig.from_pretrained(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {str(directory)!r}")
    return config, load_file(weights)
