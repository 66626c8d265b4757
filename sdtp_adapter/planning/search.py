"""The cost model a plan is judged by, the keep-ratio search, and ``Plan`` (see ``planning`` for the rules)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from ..architectures import ModelDims
from ..bench.flops import flops_speedup_bound, prefill_flops, pruned_prefill_flops
from ..schedule import StageSchedule, is_number

RATIO_STEP = 1e-4  # keep ratios are chosen on this grid: 4 decimals, loosest first
STEPS = round(1 / RATIO_STEP)
TARGETS = ("speedup", "max_flops_fraction", "max_kv_fraction")


@dataclass(frozen=True)
class CostModel:
    """Prefill FLOPs and KV cache of one model at one prompt length (``length`` tokens, batch 1)."""

    dims: ModelDims
    windows: tuple[int | None, ...]  # per layer: sliding window, None = full attention
    length: int
    pruner_hidden: int  # width of the scoring modules (0: a training-free scorer, taken as free)
    dtype_bytes: int  # bytes per cached key/value element

    def cached_tokens(self, tokens_per_layer: Sequence[int]) -> list[int]:
        """Tokens each layer's cache holds after the prefill."""
        return [n if w is None else min(n, w - 1) for n, w in zip(tokens_per_layer, self.windows)]

    def kv_bytes(self, tokens_per_layer: Sequence[int]) -> int:
        per_token = 2 * self.dims.num_key_value_heads * self.dims.head_dim * self.dtype_bytes  # K and V
        return per_token * sum(self.cached_tokens(tokens_per_layer))

    def metrics(self, schedule: StageSchedule) -> dict:
        per_layer = schedule.tokens_per_layer(self.length, self.dims.num_layers)
        speedup = flops_speedup_bound(self.dims, schedule, self.length, self.pruner_hidden)
        base_kv = self.kv_bytes([self.length] * self.dims.num_layers)
        kv = self.kv_bytes(per_layer)
        return {"speedup": speedup, "max_flops_fraction": 1 / speedup, "max_kv_fraction": kv / base_kv,
                "kv_bytes": kv, "base_kv_bytes": base_kv, "tokens_per_layer": per_layer}


def check_targets(targets: dict) -> dict:
    """The given targets (``None`` dropped), validated: speedup > 0, fractions in (0, 1]."""
    given = {k: v for k, v in targets.items() if v is not None}
    if not given:
        raise ValueError(f"no target given; pass at least one of {list(TARGETS)}")
    for name, value in given.items():
        if name == "speedup" and not (is_number(value) and value > 0):
            raise ValueError(f"speedup={value!r} is invalid: expected a number > 0 (2.0 = twice as fast a prefill)")
        if name != "speedup" and not (is_number(value) and 0 < value <= 1):
            raise ValueError(f"{name}={value!r} is invalid: expected a number in (0, 1] (a share of the unpruned prefill's)")
    return given


def meets(metrics: dict, targets: dict) -> bool:
    return all(metrics[k] >= v if k == "speedup" else metrics[k] <= v for k, v in targets.items())


def loosest_ratio(cost: CostModel, schedule: StageSchedule, targets: dict) -> float | None:
    """Largest ``k * RATIO_STEP`` whose ``schedule`` (its layers and protection) meets ``targets``; None if none does."""

    def ok(k: int) -> bool:
        return meets(cost.metrics(dataclasses.replace(schedule, keep_ratio=k / STEPS)), targets)

    if not ok(1):
        return None
    low, high = 1, STEPS  # ok(low) holds; bisect for the last k that does (monotone in k)
    if ok(high):
        return 1.0
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if ok(mid) else (low, mid)
    return low / STEPS


@dataclass(frozen=True)
class Plan:
    """A schedule chosen for targets at one prompt length, with its predicted costs.

    Attributes:
        schedule: the chosen ``StageSchedule`` (layers, keep ratio, protected tokens).
        placement: its name (``placements``), e.g. ``"every other (5 stages)"``.
        prompt_length: N, the length the plan is for.
        targets: the targets given (``speedup``, ``max_flops_fraction``, ``max_kv_fraction``).
        tokens_per_stage: tokens kept after each stage (``StageSchedule.budgets(N)``).
        tokens_per_layer: tokens entering each decoder layer.
        flops, base_flops: analytic prefill FLOPs, pruned (scoring included) and unpruned.
        speedup: ``base_flops / flops`` = ``bench.flops.flops_speedup_bound``.
        kv_bytes, base_kv_bytes: K/V bytes cached after the prefill, pruned and unpruned (batch 1).
        kv_dtype: element type the bytes are counted in; the fraction does not depend on it.
        pruner_hidden_size: scoring-module width counted in the FLOPs (0: a training-free scorer).
        alternatives: every placement tried, in preference order: name, layers, keep_ratio (None: cannot
            meet the targets), speedup and kv_fraction at that ratio (at the smallest ratio when None).
        model: the model's name or path, when known.
    """

    schedule: StageSchedule
    placement: str
    prompt_length: int
    targets: dict
    tokens_per_stage: tuple[int, ...]
    tokens_per_layer: tuple[int, ...]
    flops: float
    base_flops: float
    speedup: float
    kv_bytes: int
    base_kv_bytes: int
    kv_dtype: str
    pruner_hidden_size: int
    alternatives: tuple[dict, ...]
    model: str | None = None

    @property
    def layers(self) -> tuple[int, ...]:
        return self.schedule.layers

    @property
    def keep_ratio(self) -> float:
        return self.schedule.keep_ratio

    @property
    def flops_fraction(self) -> float:
        return self.flops / self.base_flops

    @property
    def kv_fraction(self) -> float:
        return self.kv_bytes / self.base_kv_bytes

    def to_dict(self) -> dict:
        """JSON-ready: every field, the schedule's flattened, plus the two fractions."""
        out = {"model": self.model, "prompt_length": self.prompt_length, "targets": dict(self.targets),
               "placement": self.placement, "layers": list(self.layers), "keep_ratio": self.keep_ratio,
               "protected_first": self.schedule.protected_first, "local_window_ratio": self.schedule.local_window_ratio}
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.name not in out and f.name != "schedule"})
        out.update(tokens_per_stage=list(self.tokens_per_stage), tokens_per_layer=list(self.tokens_per_layer),
                   alternatives=[dict(a) for a in self.alternatives], flops_fraction=self.flops_fraction,
                   kv_fraction=self.kv_fraction)
        return out


def choose(cost: CostModel, candidates: dict[str, tuple[int, ...]], template: StageSchedule, targets: dict,
           kv_dtype: str, model: str | None) -> Plan:
    """The first of ``candidates`` (name -> layers, in preference order) that meets ``targets`` at its loosest ratio."""
    targets = check_targets(targets)
    tried = []
    for name, layers in candidates.items():
        ratio = loosest_ratio(cost, dataclasses.replace(template, layers=layers), targets)
        at = cost.metrics(dataclasses.replace(template, layers=layers, keep_ratio=ratio or RATIO_STEP))
        tried.append({"placement": name, "layers": list(layers), "keep_ratio": ratio, "speedup": at["speedup"],
                      "kv_fraction": at["max_kv_fraction"], "flops_fraction": at["max_flops_fraction"]})
    feasible = [t for t in tried if t["keep_ratio"] is not None]
    if not feasible:
        raise ValueError(infeasible_message(cost, template, tried, targets, model))
    best = feasible[0]
    schedule = dataclasses.replace(template, layers=tuple(best["layers"]), keep_ratio=best["keep_ratio"])
    at = cost.metrics(schedule)
    return Plan(
        schedule=schedule, placement=best["placement"], prompt_length=cost.length, targets=targets,
        tokens_per_stage=tuple(schedule.budgets(cost.length)), tokens_per_layer=tuple(at["tokens_per_layer"]),
        flops=pruned_prefill_flops(cost.dims, schedule, cost.length, cost.pruner_hidden),
        base_flops=prefill_flops(cost.dims, [cost.length] * cost.dims.num_layers), speedup=at["speedup"],
        kv_bytes=at["kv_bytes"], base_kv_bytes=at["base_kv_bytes"], kv_dtype=kv_dtype,
        pruner_hidden_size=cost.pruner_hidden, alternatives=tuple(tried), model=model,
    )


def infeasible_message(cost: CostModel, template: StageSchedule, tried: list[dict], targets: dict, model: str | None) -> str:
    """Which target is out of reach, the best value any placement reaches, and what bounds it."""
    n = cost.length
    parts = []
    for name, value in targets.items():
        key = {"speedup": "speedup", "max_flops_fraction": "flops_fraction", "max_kv_fraction": "kv_fraction"}[name]
        pick = max if name == "speedup" else min
        best = pick(tried, key=lambda t: t[key])
        if not meets({name: best[key]}, {name: value}):
            parts.append(f"{name}={value} is out of reach (best: {best[key]:.4g}, by {best['placement']} {best['layers']} "
                         f"at the smallest keep_ratio {RATIO_STEP})")
    if not parts:
        parts.append(f"each of {targets} is reachable alone, but no placement meets them together")
    floor, window = template.protected_count(n), template.local_window(n)
    first = min(t["layers"][0] for t in tried)
    why = (f"every stage keeps at least the {floor} protected tokens (protected_first={template.protected_first} plus "
           f"the local window, local_window_ratio={template.local_window_ratio} of {n} = {window} tokens), and the "
           f"{first} layer(s) before the first stage (layer {first}) process all {n}")
    sliding = [w for w in cost.windows if w is not None]
    if sliding and "max_kv_fraction" in targets:
        why += f"; {len(sliding)} of {len(cost.windows)} layers are sliding-window layers whose cache holds at most {min(sliding) - 1} tokens either way"
    return (f"no schedule for {model or 'this model'} at prompt_length={n}: {'; '.join(parts)}. Why: {why}. "
            "Allowed: a smaller target, a longer prompt_length, a smaller local_window_ratio or an earlier first stage")
