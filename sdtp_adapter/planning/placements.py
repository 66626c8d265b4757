"""Stage placements: the sweep's named subsets of a stage grid, and the order the planner tries them in.

``bench.sweep`` measures each subset at several keep ratios; ``PLACEMENT_PREFERENCE`` is its result on the
four-placement sweep of SmolLM2 (docs/benchmarks/earlier/sweep-plays-adapter.md; ``quality_ranking``
recomputes it from a sweep's points).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Callable, Sequence

# The sweep's four subsets of a stage grid (``bench.sweep`` measures each one), in its table's order.
SUBSETS: dict[str, Callable[[tuple[int, ...]], tuple[int, ...]]] = {
    "all": lambda layers: layers,
    "every other": lambda layers: layers[::2],
    "skip first 2": lambda layers: layers[2:],
    "first half": lambda layers: layers[: (len(layers) + 1) // 2],
}
# Best quality first: the trained scorer's mean continuation dNLL at matched FLOPs bound over the range of
# bounds every placement covers (1.43x-1.98x), from docs/benchmarks.md "Sweep: keep ratio x stage placement"
# (SmolLM2-135M, 4K tokens): every other 0.84%, all 0.87%, first half 0.95%, skip first 2 1.12%.
# ``quality_ranking`` recomputes it from a sweep's points; tests/test_planning.py checks it against the page.
# The first two are within the sweep's noise (6 windows); outside 1.4x-2.0x the order is extrapolated.
PLACEMENT_PREFERENCE = ("every other", "all", "first half", "skip first 2")


def placement_name(kind: str, layers: Sequence[int]) -> str:
    """``"all 10 stages"``, ``"every other (5 stages)"``...: the sweep's names."""
    return f"all {len(layers)} stages" if kind == "all" else f"{kind} ({len(layers)} stages)"


def placement_kind(name: str) -> str:
    """Inverse of ``placement_name`` (``"every other (5 stages)"`` -> ``"every other"``)."""
    return "all" if name.startswith("all ") else name.split(" (")[0]


def placements(layers: Sequence[int], order: Sequence[str] = tuple(SUBSETS)) -> dict[str, tuple[int, ...]]:
    """Named non-empty subsets of the stage ``layers`` in ``order`` (the sweep's order by default)."""
    layers = tuple(layers)
    named = ((kind, SUBSETS[kind](layers)) for kind in order)
    return {placement_name(kind, subset): subset for kind, subset in named if subset}


def candidates(layers: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """The placements the planner tries, in ``PLACEMENT_PREFERENCE`` order, each distinct subset once."""
    out: dict[str, tuple[int, ...]] = {}
    for name, subset in placements(layers, PLACEMENT_PREFERENCE).items():
        if subset not in out.values():
            out[name] = subset
    return out


def quality_ranking(points: list[dict], scorer: str = "SDTP", samples: int = 201) -> list[str]:
    """Placement kinds of sweep ``points`` (``bench.sweep`` rows: scorer, placement, flops_bound,
    delta_nll_pct), best first: mean dNLL, linearly interpolated against the FLOPs bound, over the range
    of bounds every placement covers."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        if p["scorer"] == scorer:
            curves.setdefault(placement_kind(p["placement"]), []).append((p["flops_bound"], p["delta_nll_pct"]))
    if not curves:
        raise ValueError(f"scorer={scorer!r} has no points; scorers present: {sorted({p['scorer'] for p in points})}")
    low, high = max(min(c)[0] for c in curves.values()), min(max(c)[0] for c in curves.values())
    grid = [low + (high - low) * i / (samples - 1) for i in range(samples)]

    def interpolate(curve: list[tuple[float, float]], x: float) -> float:
        xs, ys = zip(*sorted(curve))
        i = min(max(bisect_right(xs, x), 1), len(xs) - 1)
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1])

    mean = {kind: sum(interpolate(curve, x) for x in grid) / samples for kind, curve in curves.items()}
    return sorted(mean, key=mean.get)
