"""Where a pruned prefill's own time goes: scoring, selection, gathers, early exit (``torch.profiler``).

The paper puts the pruning modules under 1% of the model's FLOPs; this measures their *time* share,
which on small models and GPUs is what decides whether pruning pays. One pruned prefill runs under the
profiler with the controller's component labels on (``pruning.profiling``); each label's inclusive
time is divided by the whole prefill's time under the same profiler.
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from ..model import SDTPModel
from ..pruning.profiling import COMPONENTS, labelled
from .flops import prefill_call

MODULE_COMPONENTS = ("sdtp.score", "sdtp.select")  # the pruning modules and the keep rule


def component_costs(sdtp: SDTPModel, ids: torch.Tensor, rounds: int = 3) -> dict:
    """Median over ``rounds`` profiled prefills of ``ids [1, N]``: ms and share of the prefill per component.

    Returns ``{"prefill_ms", "components": {name: {"ms", "share"}}, "module_share"}``; on CUDA the
    times are device (kernel) times, on CPU inclusive CPU times.
    """
    call = prefill_call(sdtp, ids, prune=True)
    call()  # warm-up outside the profiler
    cuda = ids.is_cuda
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    samples: list[tuple[float, dict[str, float]]] = []
    for _ in range(rounds):
        with labelled(), profile(activities=activities) as prof:
            start = time.perf_counter()
            call()
            if cuda:
                torch.cuda.synchronize(ids.device)
            total_ms = 1000 * (time.perf_counter() - start)
        times = {name: 0.0 for name in COMPONENTS}
        for event in prof.key_averages():
            if event.key in times:
                device_us = getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)
                times[event.key] = (device_us if cuda and device_us else event.cpu_time_total) / 1000
        samples.append((total_ms, times))
    samples.sort(key=lambda s: s[0])
    total_ms, times = samples[len(samples) // 2]
    components = {name: {"ms": ms, "share": ms / total_ms} for name, ms in times.items()}
    return {
        "prefill_ms": total_ms,
        "components": components,
        "module_share": sum(components[name]["share"] for name in MODULE_COMPONENTS),
    }
