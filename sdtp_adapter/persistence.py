"""Adapter files on disk: ``adapter_config.json`` + ``adapter_model.safetensors``.

A save is atomic as a whole: the weights file carries a copy of the config in its safetensors
metadata and is published first, the config last (each by an atomic rename). A reader therefore sees
the old pair, the new pair, or new weights beside the old config; the last is detected on load (the
two configs differ) and refused, so a crashed save is never loaded as a silent mix.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import CONFIG_NAME, SDTPConfig
from .files import CorruptedFileError, publish

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_METADATA_KEY = "sdtp_config"  # the config, as JSON, inside the weights file
STALE_WEIGHTS = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")  # other formats' names for the same slot
CARD_MARKER = "library_name: sdtp-adapter"


def save_adapter(directory: str | os.PathLike, config: SDTPConfig, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write the adapter's weights and config into ``directory`` (created if needed).

    Weights of an earlier adapter in another format (``adapter_model.bin``...) and an SDTP model card
    written for it (``README.md``) are removed, since they would describe or load the old adapter.
    """
    config.validate()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    metadata = {"format": "pt", "adapter_type": config.adapter_type, CONFIG_METADATA_KEY: config.to_json()}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS_NAME}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        publish(tmp, directory / WEIGHTS_NAME)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    config.save_pretrained(directory)
    _remove_stale_files(directory)
    return directory


def _remove_stale_files(directory: Path) -> None:
    removed = [name for name in STALE_WEIGHTS if (directory / name).is_file()]
    card = directory / "README.md"
    if card.is_file() and CARD_MARKER in card.read_text(errors="replace"):
        removed.append(card.name)
    for name in removed:
        (directory / name).unlink()
    if removed:
        warnings.warn(f"save_pretrained removed {removed} from {str(directory)!r}: they belonged to the adapter it replaced", stacklevel=3)


def load_adapter(directory: str | os.PathLike) -> tuple[SDTPConfig, dict[str, torch.Tensor]]:
    """Read ``(config, state_dict)`` from an adapter folder.

    Raises:
        FileNotFoundError: the folder or one of its two files is missing.
        CorruptedFileError: a file is damaged, the weights are not finite floating-point tensors, or
            the two files come from different saves.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"adapter folder {str(directory)!r} does not exist")
    config = SDTPConfig.from_pretrained(directory)
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {str(directory)!r}: the adapter is incomplete")
    try:
        with safe_open(path, framework="pt") as fh:
            metadata = fh.metadata() or {}
            weights = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptedFileError(
            f"{WEIGHTS_NAME} in {str(directory)!r} cannot be read ({err}): the adapter is corrupted or incomplete"
        ) from None
    _check_saved_together(directory, config, metadata.get(CONFIG_METADATA_KEY))
    for key, tensor in weights.items():
        if not tensor.is_floating_point():
            raise CorruptedFileError(f"{WEIGHTS_NAME} in {str(directory)!r}: tensor {key!r} is {tensor.dtype}, not floating point")
        if not bool(torch.isfinite(tensor).all()):
            raise CorruptedFileError(
                f"{WEIGHTS_NAME} in {str(directory)!r}: tensor {key!r} holds NaN or infinite values "
                "(a diverged training run or a damaged file); refusing to prune with it"
            )
    return config, weights


def _check_saved_together(directory: Path, config: SDTPConfig, embedded: str | None) -> None:
    """Refuse new weights beside an old config (a save interrupted between its two renames)."""
    if embedded is None:  # written before configs were embedded: nothing to compare
        return
    try:
        saved = json.loads(embedded)
    except json.JSONDecodeError:
        raise CorruptedFileError(f"{WEIGHTS_NAME} in {str(directory)!r} has damaged metadata") from None
    current = config.to_dict()
    differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differing:
        raise CorruptedFileError(
            f"{CONFIG_NAME} and {WEIGHTS_NAME} in {str(directory)!r} come from different saves (fields {differing} differ; "
            "an interrupted save_pretrained, or a hand edit of the config): the adapter is incomplete. Save it again, or "
            f"restore {CONFIG_NAME} from the copy inside the weights (safetensors metadata key {CONFIG_METADATA_KEY!r})"
        )
