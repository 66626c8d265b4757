"""Bootstrap intervals: a naive loop reference, known cases, determinism and input checks."""

from __future__ import annotations

import math
import random

import pytest

from sdtp_adapter.bench import intervals


def naive_interval(values: list[float], level: float, resamples: int, seed: int) -> tuple[float, float, float]:
    """The percentile bootstrap written out with loops, on the same resampled indices."""
    rows = intervals.bootstrap_indices(len(values), resamples, seed).tolist()
    means = sorted(sum(values[i] for i in row) / len(row) for row in rows)

    def quantile(q: float) -> float:  # linear interpolation between order statistics (numpy's default)
        h = (len(means) - 1) * q
        lo = math.floor(h)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (h - lo) * (means[hi] - means[lo])

    tail = (1 - level) / 2
    return sum(values) / len(values), quantile(tail), quantile(1 - tail)


def noisy(n: int, seed: int, scale: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.0, scale) for _ in range(n)]


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_matches_the_naive_loop_reference(level):
    values = noisy(37, seed=1)
    got = intervals.mean_interval(values, level=level, resamples=500, seed=3)
    assert got == pytest.approx(naive_interval(values, level, 500, 3), abs=1e-12)


def test_blocks_give_the_same_draws_as_the_reference(monkeypatch):
    monkeypatch.setattr(intervals, "MAX_BLOCK_ELEMENTS", 64)  # 64 // 20 = 3 resamples per block
    values = noisy(20, seed=2)
    assert intervals.bootstrap_indices(20, 301, 0).shape == (301, 20)
    got = intervals.mean_interval(values, resamples=301, seed=0)
    assert got == pytest.approx(naive_interval(values, 0.95, 301, 0), abs=1e-12)


def test_deterministic_given_the_seed():
    values = noisy(50, seed=4)
    assert intervals.mean_interval(values, seed=7) == intervals.mean_interval(values, seed=7)
    assert intervals.mean_interval(values, seed=7) != intervals.mean_interval(values, seed=8)


def test_constant_values_give_a_zero_width_interval():
    mean, low, high = intervals.mean_interval([0.1] * 25)
    assert low == high == mean == pytest.approx(0.1)
    assert intervals.paired_difference([2.0] * 9, [2.0] * 9) == (0.0, 0.0, 0.0)


def test_a_clearly_shifted_pair_excludes_zero():
    base = noisy(60, seed=5, scale=3.0)  # window difficulty: large, shared by both methods
    a = [v + 0.5 + e for v, e in zip(base, noisy(60, seed=6, scale=0.1))]
    diff = intervals.paired_difference(a, base)
    assert diff[0] == pytest.approx(0.5, abs=0.05)
    assert intervals.excludes_zero(diff) and diff[1] > 0
    # unpaired, the shared difficulty swamps the shift: the two intervals overlap
    _, a_low, a_high = intervals.mean_interval(a)
    _, b_low, b_high = intervals.mean_interval(base)
    assert a_low < b_high and b_low < a_high


def test_symmetric_noise_pair_includes_zero():
    base = noisy(40, seed=7)
    noise = [abs(e) for e in noisy(20, seed=8)]
    signs = [e for x in noise for e in (x, -x)]  # differences symmetric around zero, mean exactly 0
    a = [v + s / 2 for v, s in zip(base, signs)]
    b = [v - s / 2 for v, s in zip(base, signs)]
    diff = intervals.paired_difference(a, b)
    assert diff[0] == pytest.approx(0.0, abs=1e-12)
    assert diff[1] < 0 < diff[2] and not intervals.excludes_zero(diff)


def test_width_is_close_to_the_normal_approximation():
    values = noisy(400, seed=9)
    mean, low, high = intervals.mean_interval(values, resamples=4000)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    assert (high - low) == pytest.approx(2 * 1.96 * sd / math.sqrt(len(values)), rel=0.15)
    assert low < mean < high


def test_excludes_zero_accepts_both_forms():
    assert intervals.excludes_zero((0.1, 0.3)) and intervals.excludes_zero((-1.0, -3.0, -0.5))
    assert not intervals.excludes_zero((0.0, 1.0)) and not intervals.excludes_zero((0.2, -0.1, 0.4))
    with pytest.raises(ValueError, match=r"\(1.0,\)"):
        intervals.excludes_zero((1.0,))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: intervals.mean_interval([]), "values is empty"),
        (lambda: intervals.mean_interval([1.0, float("nan")]), r"non-finite values \[nan\]"),
        (lambda: intervals.mean_interval([1.0], level=1.5), "level=1.5 is invalid"),
        (lambda: intervals.mean_interval([1.0], resamples=0), "resamples=0 is invalid"),
        (lambda: intervals.paired_difference([1.0, 2.0], [1.0]), r"len\(a\)=2, len\(b\)=1"),
    ],
)
def test_bad_input_is_refused_with_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
