"""Joint-phase checkpoints: ``checkpoint-<step>/`` = accelerate's state (modules, optimizer, scheduler,
RNG states) + a loadable adapter + ``trainer_state.json`` (step, history, arguments, config).

A checkpoint is written into ``.checkpoint-<step>.partial`` and renamed when complete, so a folder
named ``checkpoint-<step>`` is always whole; ``latest`` is the highest step among them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..files import atomic_write_bytes, ordinary_permissions, read_json_object

STATE_NAME = "trainer_state.json"
# arguments that fix which samples and noise each step sees: a resumed run must keep them
ORDER_FIELDS = ("seed", "per_device_batch_size", "gradient_accumulation_steps")


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest step first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def resolve_checkpoint(spec: str, output_dir: Path) -> Path:
    """The folder ``spec`` names: a path, or ``latest`` (newest checkpoint in ``output_dir``).

    Raises:
        FileNotFoundError: no such checkpoint.
    """
    if spec == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            raise FileNotFoundError(f"resume_from_checkpoint='latest': no checkpoint-<step> folder in {str(output_dir)!r}")
        return found[-1]
    path = Path(os.path.expanduser(spec))
    if not (path / STATE_NAME).is_file():
        raise FileNotFoundError(f"resume_from_checkpoint={spec!r} is not a checkpoint folder (no {STATE_NAME}); allowed: a checkpoint-<step> folder or 'latest'")
    return path


def read_state(path: Path) -> dict:
    return read_json_object(path / STATE_NAME, "trainer state")


def check_resumable(state: dict, config: dict, args: dict, processes: int, where: Path) -> None:
    """Refuse a checkpoint whose adapter config, data order or process count differs from this run's.

    Raises:
        ValueError: naming every field that differs, with both values.
    """
    ignored = {"library_version"}
    saved_config = state.get("config", {})
    differ = [f"{k}: checkpoint {saved_config.get(k)!r} != now {config.get(k)!r}"
              for k in sorted(set(saved_config) | set(config)) if k not in ignored and saved_config.get(k) != config.get(k)]
    saved_args = state.get("args", {})
    differ += [f"{k}: checkpoint {saved_args.get(k)!r} != now {args.get(k)!r}" for k in ORDER_FIELDS if saved_args.get(k) != args.get(k)]
    if state.get("processes") != processes:
        differ.append(f"processes: checkpoint {state.get('processes')!r} != now {processes}")
    if differ:
        raise ValueError(f"cannot resume from {str(where)!r}: it was written by a different setup ({'; '.join(differ)})")


def write_state(directory: Path, state: dict) -> None:
    atomic_write_bytes(directory / STATE_NAME, (json.dumps(state, indent=1) + "\n").encode())


def partial_dir(output_dir: Path, step: int) -> Path:
    return output_dir / f".checkpoint-{step}.partial"


def publish_checkpoint(partial: Path, output_dir: Path, step: int, keep: int | None) -> Path:
    """Rename a finished ``partial`` folder to ``checkpoint-<step>`` and drop the oldest beyond ``keep``."""
    final = output_dir / f"checkpoint-{step}"
    for file in partial.rglob("*"):
        if file.is_file():
            ordinary_permissions(file)  # accelerate's model.safetensors is written 0600
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    if keep is not None:
        for old in checkpoint_dirs(output_dir)[:-keep]:
            shutil.rmtree(old)
    return final


def clear_earlier_run(output_dir: Path) -> None:
    """Remove an earlier run's checkpoints and partial folders (``overwrite_output_dir``)."""
    for old in list(output_dir.glob("checkpoint-*")) + list(output_dir.glob(".checkpoint-*.partial")):
        shutil.rmtree(old)
