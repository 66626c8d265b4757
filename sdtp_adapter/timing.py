"""Interleaved timing: baseline and candidate alternate in one process, so machine noise hits both."""

from __future__ import annotations

import time
from typing import Callable


def interleaved(
    runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, on_round: Callable[[str], None] | None = None
) -> dict[str, list[float]]:
    """Wall-clock seconds of each callable, ``repeats`` rounds of one call each in turn (after ``warmup``).

    ``on_round`` is called before each round with e.g. ``"warm-up 1/1"`` or ``"round 2/3"`` (progress lines).
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    for i in range(warmup):
        if on_round:
            on_round(f"warm-up {i + 1}/{warmup}")
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(repeats):
        if on_round:
            on_round(f"round {i + 1}/{repeats}")
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times
