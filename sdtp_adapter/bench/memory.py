"""Peak memory of one call: CUDA allocator statistics on GPUs, sampled resident set size on CPU.

On CPU the number is the peak *resident set size* (RSS) of the process while the call runs, minus the
RSS just before it: a background thread reads ``/proc/self/statm`` about every millisecond (plus once
after the call returns). It is what the operating system had to provide, so it includes allocator
slack and excludes memory the allocator reused from earlier frees. To make "reused" rare, freed heap
memory is handed back to the kernel first (``gc.collect`` and glibc ``malloc_trim(0)``); without glibc
the trim is skipped, which ``cpu_method()`` states. Spikes shorter than the sampling interval can be
missed. On CUDA: ``torch.cuda.max_memory_allocated`` minus the allocated bytes before the call (tensor
memory only, without the caching allocator's reserve).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
from pathlib import Path
from typing import Callable, TypeVar

import torch

T = TypeVar("T")
STATM = Path("/proc/self/statm")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def cpu_method(interval_s: float = 0.001) -> str:
    """One-line description of how CPU peak memory is measured (stored with the results)."""
    trim = "after gc + malloc_trim(0)" if _LIBC is not None else "after gc (no glibc: freed heap not trimmed)"
    return (
        f"peak RSS increase over the pre-call RSS ({trim}), sampled from /proc/self/statm "
        f"every ~{interval_s * 1000:g} ms by a background thread"
    )


def rss_bytes() -> int:
    """Current resident set size of this process in bytes (Linux ``/proc/self/statm``)."""
    try:
        fields = STATM.read_text().split()
    except OSError as err:
        raise RuntimeError(f"CPU peak memory needs {STATM} (Linux); reading it failed: {err}") from err
    return int(fields[1]) * PAGE_BYTES


def release_freed_memory() -> None:
    """Collect garbage and return freed heap pages to the kernel, so a later RSS delta sees reuse as growth."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class RSSSampler:
    """Background thread recording the maximum RSS every ``interval_s`` seconds between start and stop.

    Use as a context manager; ``peak`` holds the largest RSS (bytes) seen, including one reading at
    entry and one at exit.
    """

    def __init__(self, interval_s: float = 0.001):
        if not interval_s > 0:
            raise ValueError(f"interval_s={interval_s} must be > 0")
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "RSSSampler":
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def peak_memory(fn: Callable[[], T], device: str | torch.device = "cpu", interval_s: float = 0.001) -> tuple[T, int]:
    """Run ``fn()`` and return ``(its result, peak memory increase in bytes)`` on ``device``.

    The result is still referenced when the last reading is taken, so memory the call returns (a KV
    cache, logits) counts in the peak. See the module docstring for what is measured per device.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        raise ValueError(f"device={str(device)!r} has no peak-memory measurement; allowed: 'cpu', 'cuda[:i]'")
    release_freed_memory()
    before = rss_bytes()
    with RSSSampler(interval_s) as sampler:
        result = fn()
    return result, max(0, sampler.peak - before)
