"""Percentile-bootstrap confidence intervals over per-window (or per-prompt) values.

Every quality figure of the benchmarks carries a 95% interval, resampling the evaluation units
(windows, prompts) with replacement; a method is "better" than another only when the interval of
their *paired* difference (the same resampled units for both) excludes zero (issue 12). Pairing
matters: two methods scored on the same windows share the windows' difficulty, so the paired
difference is far tighter than two separate intervals would suggest.

Deterministic given ``seed`` (a ``torch.Generator`` on the CPU), vectorised with torch.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

# resampled values held at once: bounds memory for long inputs (e.g. per-token values)
MAX_BLOCK_ELEMENTS = 1 << 22


def mean_interval(values: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile-bootstrap ``level`` interval.

    Raises:
        ValueError: empty or non-finite ``values``, ``level`` outside (0, 1), ``resamples`` < 1.
    """
    data = _as_tensor(values, "values")
    _check_settings(level, resamples)
    means = bootstrap_means(data, resamples, seed)
    low, high = percentile_bounds(means, level)
    return float(data.mean()), low, high


def paired_difference(
    a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean of a - b, low, high)`` over paired values: ``a[i]`` and ``b[i]`` come from the same unit.

    Each resample draws the same units for ``a`` and ``b``, i.e. it resamples the differences. ``a``
    is better than ``b`` (for a figure where higher is better) when ``low > 0``; see ``excludes_zero``.

    Raises:
        ValueError: ``a`` and ``b`` of different lengths, plus those of ``mean_interval``.
    """
    first, second = _as_tensor(a, "a"), _as_tensor(b, "b")
    if first.numel() != second.numel():
        raise ValueError(f"paired values need equal lengths: len(a)={first.numel()}, len(b)={second.numel()}")
    return mean_interval((first - second).tolist(), level, resamples, seed)


def excludes_zero(interval: Sequence[float]) -> bool:
    """Whether an interval ``(low, high)`` or ``(estimate, low, high)`` lies entirely above or below zero."""
    if len(interval) not in (2, 3):
        raise ValueError(f"interval={tuple(interval)!r} must be (low, high) or (estimate, low, high)")
    low, high = interval[-2], interval[-1]
    return low > 0 or high < 0


def bootstrap_indices(n: int, resamples: int, seed: int) -> torch.Tensor:
    """``[resamples, n]`` indices drawn with replacement: the draws ``bootstrap_means`` uses."""
    return torch.cat(list(_index_blocks(n, resamples, seed)))


def bootstrap_means(data: torch.Tensor, resamples: int, seed: int) -> torch.Tensor:
    """``[resamples]`` means of ``data`` resampled with replacement, one block of resamples at a time."""
    return torch.cat([data[block].mean(dim=1) for block in _index_blocks(data.numel(), resamples, seed)])


def percentile_bounds(estimates: torch.Tensor, level: float) -> tuple[float, float]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of ``estimates`` (linear interpolation)."""
    tail = (1.0 - level) / 2.0
    bounds = torch.quantile(estimates, torch.tensor([tail, 1.0 - tail], dtype=estimates.dtype))
    return float(bounds[0]), float(bounds[1])


def _index_blocks(n: int, resamples: int, seed: int) -> Iterator[torch.Tensor]:
    """The bootstrap indices in blocks of at most ``MAX_BLOCK_ELEMENTS`` (memory stays bounded).

    Block sizes depend on ``n`` only and one generator draws them in order, so the indices are the
    same for the same ``(n, resamples, seed)``.
    """
    generator = torch.Generator().manual_seed(seed)
    rows = max(1, MAX_BLOCK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        yield torch.randint(0, n, (min(rows, resamples - start), n), generator=generator)


def _as_tensor(values: Sequence[float], name: str) -> torch.Tensor:
    """``values`` as a 1-D float64 tensor; refuses empty and non-finite input, quoting it."""
    data = torch.as_tensor([float(v) for v in values], dtype=torch.float64)
    if data.numel() == 0:
        raise ValueError(f"{name} is empty: a bootstrap needs at least one value")
    if not torch.isfinite(data).all():
        bad = [v for v in data.tolist() if not math.isfinite(v)][:5]
        raise ValueError(f"{name} holds non-finite values {bad}; every value must be a finite number")
    return data


def _check_settings(level: float, resamples: int) -> None:
    """Refuses a ``level`` outside (0, 1) or fewer than one resample, quoting the value."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} is invalid; allowed: a probability strictly between 0 and 1 (e.g. 0.95)")
    if not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples={resamples!r} is invalid; allowed: an integer >= 1 (e.g. 2000)")
