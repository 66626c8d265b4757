"""Fidelity of a pruned prefill: continuation NLL, top-1 agreement and KL against the unpruned model.

A long prefix is prefilled (pruned or not); the next ``C`` tokens are then fed on top of the cache in
one chunk, unpruned, as a chat continuation would be. Every continuation token's distribution is
compared with the unpruned model's.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..compat import cache_kwarg, cache_of
from ..model import SDTPModel
from ..pruning.cache import kv_bytes
from .methods import Method


@dataclass
class Fidelity:
    """Means over all continuation tokens of all windows.

    Attributes:
        base_nll: NLL of the unpruned model.
        nll: NLL with the pruned prefix.
        delta_nll_pct: ``100 * (nll - base_nll) / base_nll``.
        top1: share of positions where both models' argmax agree.
        kl: ``KL(base || pruned)`` in nats.
        windows: windows evaluated; tokens: continuation tokens per window.
        kept_share: mean share of the prefix's tokens each layer processed (1.0 = unpruned), i.e. the
            prefill budget; for a prompt compressor, the compressed length over the original.
        prefill_s, base_prefill_s: median prefix-prefill seconds with the method (compression
            included) and unpruned, measured alternately window by window.
        kv_mib, base_kv_mib: mean KV-cache MiB right after the prefix prefill.
    """

    base_nll: float
    nll: float
    delta_nll_pct: float
    top1: float
    kl: float
    windows: int
    tokens: int
    kept_share: float = 1.0
    prefill_s: float = 0.0
    base_prefill_s: float = 0.0
    kv_mib: float = 0.0
    base_kv_mib: float = 0.0


def text_windows(tokenizer, texts: list[str], count: int, length: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` random ``[1, length]`` token windows drawn from ``texts``."""
    rng = random.Random(seed)
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    encoded = [e for e in encoded if len(e) > length]
    if not encoded:
        raise ValueError(f"no text is longer than length={length} tokens")
    out = []
    for _ in range(count):
        ids = rng.choice(encoded)
        start = rng.randrange(0, len(ids) - length)
        out.append(torch.tensor([ids[start : start + length]]))
    return out


def continuation_logprobs(
    model: SDTPModel, window: torch.Tensor, prefix: int, prune: bool, stats: dict | None = None
) -> torch.Tensor:
    """``[C, V]`` log-probabilities for the tokens after the first ``prefix`` tokens of ``window``.

    ``stats``, when given, receives ``prefill_s`` (wall-clock seconds of the prefix prefill) and
    ``kv_bytes`` (cache size right after it).
    """
    guard = contextlib.nullcontext() if prune else model.disable_pruning()
    with torch.inference_mode(), guard:
        start = time.perf_counter()
        first = model(window[:, :prefix], use_cache=True, logits_to_keep=1)
        if stats is not None:
            stats["prefill_s"] = time.perf_counter() - start
            stats["kv_bytes"] = kv_bytes(cache_of(first))
        rest = model(window[:, prefix:-1], **cache_kwarg(cache_of(first)), use_cache=True)
    logits = torch.cat([first.logits[:, -1:], rest.logits], dim=1)[0]
    return F.log_softmax(logits.float(), dim=-1)


def compressed_window(method: Method, tokenizer, window: torch.Tensor, prefix: int) -> tuple[torch.Tensor, int]:
    """``window`` with its prefix replaced by ``method.compress`` of the prefix text; returns it and the new prefix length."""
    text = tokenizer.decode(window[0, :prefix].tolist())
    short = tokenizer(method.compress(text, ""), add_special_tokens=False)["input_ids"]
    return torch.cat([torch.tensor([short], dtype=window.dtype), window[:, prefix:]], dim=1), len(short)


def compare_methods(
    model: SDTPModel, windows: list[torch.Tensor], prefix: int, methods: list[Method], tokenizer=None
) -> dict[str, Fidelity]:
    """Fidelity of several methods against the unpruned model; the reference is computed once per window.

    The unpruned prefill and every method's run alternate window by window, so their prefill timings
    share the machine's noise (a compressor's time includes its compression pass).

    Args:
        windows: ``[1, prefix + C]`` token windows.
        methods: pruned variants (a method with ``prune=False`` and no compressor is the reference
            itself and is skipped); prompt compressors need ``tokenizer`` to go through text.
    """
    methods = [m for m in methods if m.prune or m.compress is not None]
    if any(m.compress is not None for m in methods) and tokenizer is None:
        raise ValueError("tokenizer=None: prompt-compression methods need the tokenizer")
    num_layers = model.config.num_hidden_layers
    sums = {m.name: [0.0, 0.0, 0, 0.0, 0.0, 0.0] for m in methods}  # base nll, nll, agree, kl, kept share, kv
    times: dict[str, list[float]] = {m.name: [] for m in methods}
    base_times, base_kv, count = [], 0.0, 0
    for window in windows:
        targets = window[0, prefix:, None]
        ref_stats: dict = {}
        ref = continuation_logprobs(model, window, prefix, prune=False, stats=ref_stats)
        base_times.append(ref_stats["prefill_s"])
        base_kv += ref_stats["kv_bytes"]
        ref_nll = float(-ref.gather(1, targets).sum())
        for method in methods:
            stats: dict = {}
            with method.activate(model):
                if method.compress is not None:
                    start = time.perf_counter()
                    short, kept = compressed_window(method, tokenizer, window, prefix)
                    compress_s = time.perf_counter() - start
                    got = continuation_logprobs(model, short, kept, prune=False, stats=stats)
                    stats["prefill_s"] += compress_s
                    share = kept / prefix
                else:
                    got = continuation_logprobs(model, window, prefix, prune=True, stats=stats)
                    share = model.active_schedule.kept_share(prefix, num_layers)
            acc = sums[method.name]
            acc[0] += ref_nll
            acc[1] += float(-got.gather(1, targets).sum())
            acc[2] += int((ref.argmax(-1) == got.argmax(-1)).sum())
            acc[3] += float((ref.exp() * (ref - got)).sum())
            acc[4] += share * targets.shape[0]
            acc[5] += stats["kv_bytes"]
            times[method.name].append(stats["prefill_s"])
        count += targets.shape[0]
    return {
        name: Fidelity(
            base_nll=b / count,
            nll=n / count,
            delta_nll_pct=100 * (n - b) / b,
            top1=a / count,
            kl=k / count,
            windows=len(windows),
            tokens=count // max(1, len(windows)),
            kept_share=s / count,
            prefill_s=statistics.median(times[name]),
            base_prefill_s=statistics.median(base_times),
            kv_mib=kv / len(windows) / 2**20,
            base_kv_mib=base_kv / len(windows) / 2**20,
        )
        for name, (b, n, a, k, s, kv) in sums.items()
    }


def compare_scorers(model: SDTPModel, windows: list[torch.Tensor], prefix: int, scorers: dict) -> dict[str, Fidelity]:
    """``compare_methods`` for ``{name: scorer}`` on the adapter's schedule (``None`` = the trained modules)."""
    return compare_methods(model, windows, prefix, [Method(name, scorer=scorer) for name, scorer in scorers.items()])

