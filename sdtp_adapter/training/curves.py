"""Loss curves of a training run: ``loss_curves.json`` and ``loss_curves.png`` in the output folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_write_bytes

JSON_NAME = "loss_curves.json"
PNG_NAME = "loss_curves.png"


def write_curves(directory: Path, warm_start: list[float], joint: list[dict]) -> list[Path]:
    """Write the warm start's per-epoch loss and the joint phase's per-step terms; returns the files.

    Args:
        warm_start: mean warm-start loss of each epoch (empty if the phase did not run).
        joint: one ``{"step", "loss", "lm", "distill", "mse", "rank", ...}`` dict per joint step (empty if it did not run).
    """
    data = {"warm_start": {"epoch_loss": warm_start}, "joint": joint}
    atomic_write_bytes(directory / JSON_NAME, (json.dumps(data, indent=1) + "\n").encode())
    return [directory / JSON_NAME, _plot(directory / PNG_NAME, warm_start, joint)]


def _plot(path: Path, warm_start: list[float], joint: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.set_title("warm start (MSE + ranking)")
    if warm_start:
        left.plot(range(1, len(warm_start) + 1), warm_start, marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    right.set_title("joint phase")
    steps = [h["step"] for h in joint]
    for term in ("loss", "lm", "distill", "mse", "rank"):
        if joint and any(h.get(term) for h in joint):  # distill is 0 throughout unless its weight is set
            right.plot(steps, [h.get(term, 0.0) for h in joint], label="total" if term == "loss" else term)
    right.set_xlabel("step")
    if joint:
        right.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
