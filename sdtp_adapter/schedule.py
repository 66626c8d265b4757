"""Stage placement, per-stage token budgets and the analytic prefill FLOPs model.

Everything here is plain arithmetic on lengths, shared by inference (how many tokens to gather),
training (how many tokens the simulated mask keeps) and the benchmarks (the speedup bound), so the
three can never disagree.
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


@dataclass(frozen=True)
class ModelDims:
    """The shapes the FLOPs model needs (read from a transformers config by ``architectures``)."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_layers: int
    vocab_size: int


# How attention products are counted: "causal" = the work a causal kernel needs (query i meets the
# keys up to itself); "full" = every query times every key, which dense kernels with an explicit mask
# compute and torch's FlopCounterMode counts (its SDPA formulas ignore causality).
ATTENTION_COUNTS = ("causal", "full")


def _check_attention_count(attention: str) -> None:
    if attention not in ATTENTION_COUNTS:
        raise ValueError(f"attention={attention!r} is not a counting convention; allowed: {list(ATTENTION_COUNTS)}")


def layer_flops(dims: ModelDims, tokens: int, past: int = 0, attention: str = "causal") -> float:
    """Multiply-accumulate FLOPs (x2) of one decoder layer over ``tokens`` queries.

    Counts the q/k/v/o projections, the gated MLP (3 matrices) and the score and value products;
    norms, RoPE, softmax and biases are ignored (a few percent at these sizes). ``attention``
    ("causal" or "full", see ``ATTENTION_COUNTS``) says how many keys each query is multiplied with.
    """
    _check_attention_count(attention)
    q_dim = dims.num_attention_heads * dims.head_dim
    kv_dim = dims.num_key_value_heads * dims.head_dim
    projections = 2 * tokens * dims.hidden_size * (2 * q_dim + 2 * kv_dim)
    mlp = 2 * tokens * 3 * dims.hidden_size * dims.intermediate_size
    if attention == "causal":
        # query i (0-based among the new tokens) sees past + i + 1 keys
        keys_seen = tokens * past + tokens * (tokens + 1) / 2
    else:
        keys_seen = tokens * (past + tokens)
    attention_flops = 2 * 2 * keys_seen * q_dim
    return projections + mlp + attention_flops


def prefill_flops(
    dims: ModelDims, tokens_per_layer: list[int], pruner_flops: float = 0.0, attention: str = "causal"
) -> float:
    """Prefill FLOPs of the decoder stack plus the LM head on the last position."""
    body = sum(layer_flops(dims, n, attention=attention) for n in tokens_per_layer)
    return body + 2 * dims.hidden_size * dims.vocab_size + pruner_flops


def scoring_flops(dims: ModelDims, schedule: StageSchedule, length: int, pruner_hidden: int) -> float:
    """FLOPs of the stage scoring MLPs (``d -> pruner_hidden -> 2``, biases ignored) in a pruned prefill.

    Each stage scores the tokens that entered the layer before it (all ``length`` at layer 0).
    """
    per_layer = schedule.tokens_per_layer(length, dims.num_layers)
    scored = [per_layer[layer - 1] if layer > 0 else length for layer in schedule.layers]
    return sum(2 * n * (dims.hidden_size * pruner_hidden + pruner_hidden * 2) for n in scored)


def pruned_prefill_flops(
    dims: ModelDims, schedule: StageSchedule, length: int, pruner_hidden: int = 0, attention: str = "causal"
) -> float:
    """Prefill FLOPs of a ``length``-token prompt pruned by ``schedule``, scoring modules included."""
    per_layer = schedule.tokens_per_layer(length, dims.num_layers)
    pruner = scoring_flops(dims, schedule, length, pruner_hidden)
    return prefill_flops(dims, per_layer, pruner, attention=attention)


def flops_speedup_bound(
    dims: ModelDims, schedule: StageSchedule, length: int, pruner_hidden: int = 0, attention: str = "causal"
) -> float:
    """Analytic upper bound on the prefill speedup of ``schedule`` at ``length`` tokens."""
    full = prefill_flops(dims, [length] * dims.num_layers, attention=attention)
    return full / pruned_prefill_flops(dims, schedule, length, pruner_hidden, attention=attention)
