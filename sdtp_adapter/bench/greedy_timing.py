"""Timing one greedy generation phase by phase: prefill, first token, decode steps (``bench speed``,
``bench plan-speed``)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from ..compat import cache_kwarg, cache_of


@dataclass(frozen=True)
class GreedyTimes:
    """Wall-clock phases of one greedy generation (seconds).

    Attributes:
        prefill_s: the prompt forward (``logits_to_keep=1``) until its outputs are ready.
        ttft_s: prefill plus picking the first token and reading it on the host.
        decode_s: the ``decode_tokens`` one-token steps after that (each token read on the host).
    """

    prefill_s: float
    ttft_s: float
    decode_s: float


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def greedy_run(model: torch.nn.Module, ids: torch.Tensor, decode_tokens: int) -> tuple[GreedyTimes, list[int]]:
    """Greedy generation of ``1 + decode_tokens`` tokens after ``ids [1, N]``, timed per phase.

    The loop is ``generate``'s greedy path without its bookkeeping: prefill, argmax of the last
    logits, then one-token forwards on the returned cache. Every token is read on the host (as a
    streaming client would), which also makes the timings include the device work.
    """
    device = ids.device
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        _synchronize(device)
        prefilled = time.perf_counter()
        token = out.logits[:, -1].argmax(dim=-1, keepdim=True)  # [1, 1]
        tokens = [int(token.item())]
        first = time.perf_counter()
        cache = cache_of(out)
        for _ in range(decode_tokens):
            out = model(input_ids=token, **cache_kwarg(cache), use_cache=True)
            cache = cache_of(out)
            token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
            tokens.append(int(token.item()))
        end = time.perf_counter()
    return GreedyTimes(prefilled - start, first - start, end - first), tokens


def summary(values: list[float]) -> dict:
    """``{"median", "min", "max", "values"}`` of one timed quantity."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": list(values)}
