"""Stage placement and per-stage token budgets.

Everything here is plain arithmetic on lengths, shared by inference (how many tokens to gather),
training (how many tokens the simulated mask keeps) and the benchmarks (``bench.flops``' speedup
bound), so the three can never disagree.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


def is_int(value) -> bool:
    """An integer (numpy's included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite real number (numpy's included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def auto_layer_step(num_layers: int, num_stages: int, first_layer: int) -> int:
    """Step that puts the last stage at about three quarters of the depth (30 layers: 4, 6, ..., 22)."""
    if num_stages <= 1:
        return 1
    return max(1, int((0.75 * num_layers - first_layer) // (num_stages - 1)))


@dataclass(frozen=True)
class StageSchedule:
    """Which layers prune and how many tokens survive each of them.

    Attributes:
        layers: stage layer indices, strictly increasing; pruning happens *before* each of these layers.
        keep_ratio: per-stage ratio r; after stage s (1-based) ``ceil(N * r**s)`` tokens remain.
        protected_first: number of leading tokens (attention sinks) that are always kept.
        local_window_ratio: share of the most recent tokens that is always kept (at least the last one).
    """

    layers: tuple[int, ...]
    keep_ratio: float
    protected_first: int
    local_window_ratio: float

    def __post_init__(self) -> None:
        """Check every field (one rule for configs, ``use_schedule`` and the benchmarks)."""

        def bad(name: str, allowed: str) -> None:
            raise ValueError(f"StageSchedule.{name}={getattr(self, name)!r} is invalid: {allowed}")

        layers = self.layers
        if (
            isinstance(layers, (str, bytes))
            or not isinstance(layers, (tuple, list))
            or not layers
            or not all(is_int(x) for x in layers)
        ):
            bad("layers", "expected a non-empty sequence of integer layer indices")
        if any(x < 1 for x in layers):
            bad("layers", "layer indices must be >= 1 (layer 0 always sees every token)")
        if list(layers) != sorted(set(layers)):
            bad("layers", "layer indices must be strictly increasing")
        object.__setattr__(self, "layers", tuple(int(x) for x in layers))
        if not is_number(self.keep_ratio) or not 0 < self.keep_ratio <= 1:
            bad("keep_ratio", "expected a number in (0, 1]")
        if not is_int(self.protected_first) or self.protected_first < 0:
            bad("protected_first", "expected an integer >= 0")
        if not is_number(self.local_window_ratio) or not 0 <= self.local_window_ratio < 1:
            bad("local_window_ratio", "expected a number in [0, 1)")

    def local_window(self, length: int) -> int:
        """Number of trailing tokens always kept for a sequence of ``length`` real tokens."""
        return min(length, max(1, math.ceil(self.local_window_ratio * length - 1e-9)))

    def protected_count(self, length: int) -> int:
        """Size of the union of the first ``protected_first`` and the local window."""
        head = min(self.protected_first, length)
        return min(length, head + self.local_window(length))

    def budgets(self, length: int) -> list[int]:
        """Tokens kept after each stage for a sequence of ``length`` real tokens.

        The protected tokens count inside the budget; the budget never drops below them and never
        grows from one stage to the next.
        """
        floor = self.protected_count(length)
        out, previous = [], length
        for s in range(1, len(self.layers) + 1):
            target = math.ceil(length * self.keep_ratio**s - 1e-9)
            previous = min(previous, max(floor, target))
            out.append(previous)
        return out

    def tokens_per_layer(self, length: int, num_layers: int) -> list[int]:
        """Tokens entering every decoder layer (index = layer) during a pruned prefill."""
        budgets = dict(zip(self.layers, self.budgets(length)))
        counts, current = [], length
        for layer in range(num_layers):
            current = budgets.get(layer, current)
            counts.append(current)
        return counts

    def kept_share(self, length: int, num_layers: int) -> float:
        """Mean share of a ``length``-token prompt each of ``num_layers`` layers processes (and caches)."""
        if length < 1 or num_layers < 1:
            raise ValueError(f"length={length}, num_layers={num_layers}; allowed: both >= 1")
        return sum(self.tokens_per_layer(length, num_layers)) / (length * num_layers)
