"""Planning a schedule from a target: the cost model against bench.flops and the real cache, the loosest
ratio against a brute-force search, the placement order against the sweep's page, for_target and
use_schedule(speedup=...)."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import FAMILIES, TINY, random_ids, tiny_family, tiny_llama
from transformers import GPT2Config, LlamaConfig

from sdtp_adapter import SDTPConfig, SDTPModel, get_sdtp_model
from sdtp_adapter.architectures import config_dims
from sdtp_adapter.bench.flops import flops_speedup_bound
from sdtp_adapter.compat import cache_of
from sdtp_adapter.planning import PLACEMENT_PREFERENCE, CostModel, choose, placement_kind, plan_for_adapter, plan_schedule
from sdtp_adapter.planning import quality_ranking
from sdtp_adapter.pruning.cache import kv_bytes
from sdtp_adapter.pruning.scorers import recency_scorer

GRID = SDTPConfig(num_stages=3, first_layer=2, local_window_ratio=0.05, protected_first=2, pruner_hidden_size=32)  # [2, 4, 6]
N = 300
DOCS = Path(__file__).resolve().parents[1] / "docs"


def llama_config() -> LlamaConfig:
    return LlamaConfig(**TINY)


def gemma_config():
    config_class, fields = FAMILIES["gemma3"]
    return config_class(**{**TINY, **fields})


def naive_kv_fraction(config, tokens_per_layer: list[int]) -> float:
    """Cached tokens per layer, read from the config's own fields: a sliding layer keeps its last window - 1."""
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    cached = [min(n, window - 1) if kind == "sliding_attention" else n for n, kind in zip(tokens_per_layer, types)]
    full = [min(N, window - 1) if kind == "sliding_attention" else N for kind in types]
    return sum(cached) / sum(full)


def metrics_at(config, layers, ratio: float) -> tuple[float, float]:
    """(speedup bound, KV fraction) of ``layers`` at ``ratio`` on GRID's protection, computed without the planner."""
    schedule = dataclasses.replace(GRID.schedule(config.num_hidden_layers), layers=tuple(layers), keep_ratio=ratio)
    speedup = flops_speedup_bound(config_dims(config), schedule, N, GRID.pruner_hidden_size)
    return speedup, naive_kv_fraction(config, schedule.tokens_per_layer(N, config.num_hidden_layers))


def brute_force_ratio(config, layers, targets: dict, step: float = 1e-4) -> float | None:
    """The largest ratio on the grid ``k * step`` meeting every target, by trying each one from the top."""
    for k in range(round(1 / step), 0, -1):
        speedup, kv = metrics_at(config, layers, k * step)
        if speedup >= targets.get("speedup", 0) and kv <= targets.get("max_kv_fraction", 1) \
                and 1 / speedup <= targets.get("max_flops_fraction", 1):
            return round(k * step, 10)
    return None


# ---------------------------------------------------------------------------------------------- cost model
@pytest.mark.parametrize("make_config", [llama_config, gemma_config])
@pytest.mark.parametrize("targets", [{"speedup": 1.4}, {"max_kv_fraction": 0.6}, {"speedup": 1.3, "max_flops_fraction": 0.7}])
def test_plan_predicts_the_flops_bound_and_the_kv_of_its_tokens(make_config, targets):
    config = make_config()
    plan = plan_schedule(config, prompt_length=N, config=GRID, **targets)
    assert plan.speedup == flops_speedup_bound(config_dims(config), plan.schedule, N, GRID.pruner_hidden_size)
    assert plan.flops_fraction == pytest.approx(1 / plan.speedup, rel=1e-12)
    assert plan.tokens_per_stage == tuple(plan.schedule.budgets(N))
    assert plan.kv_fraction == pytest.approx(naive_kv_fraction(config, list(plan.tokens_per_layer)), rel=1e-12)
    assert plan.speedup >= targets.get("speedup", 0) and plan.kv_fraction <= targets.get("max_kv_fraction", 1)
    assert plan.flops_fraction <= targets.get("max_flops_fraction", 1)


@pytest.mark.parametrize("make_config, targets", [
    (llama_config, {"speedup": 1.45}),
    (gemma_config, {"speedup": 1.2, "max_kv_fraction": 0.75}),
])
def test_every_placement_gets_the_loosest_ratio_a_brute_force_search_finds(make_config, targets):
    config = make_config()
    plan = plan_schedule(config, prompt_length=N, config=GRID, **targets)
    assert [placement_kind(a["placement"]) for a in plan.alternatives] == ["every other", "all", "first half", "skip first 2"]
    for alternative in plan.alternatives:
        assert alternative["keep_ratio"] == brute_force_ratio(config, alternative["layers"], targets), alternative
    first = next(a for a in plan.alternatives if a["keep_ratio"] is not None)
    assert (list(plan.layers), plan.keep_ratio, plan.placement) == (first["layers"], first["keep_ratio"], first["placement"])


def test_a_placement_that_cannot_meet_the_target_falls_through_to_the_next():
    config = llama_config()
    cost = CostModel(config_dims(config), (None,) * 8, N, 0, 4)
    template = GRID.schedule(8)
    late_best = flops_speedup_bound(cost.dims, dataclasses.replace(template, layers=(6,), keep_ratio=1e-4), N)
    plan = choose(cost, {"late": (6,), "early": (2,)}, template, {"speedup": late_best + 0.1}, "float32", None)
    assert plan.placement == "early" and plan.alternatives[0]["keep_ratio"] is None
    assert plan.speedup >= late_best + 0.1


@pytest.mark.parametrize("family", ["llama", "gemma3", "mistral-sliding", "qwen2-sliding"])
def test_kv_bytes_and_kept_tokens_equal_a_real_pruned_prefill(family):
    model = tiny_llama() if family == "llama" else tiny_family(family)
    sdtp = get_sdtp_model(model, GRID)
    length = 60  # windows of 12-16 tokens bind
    plan = plan_for_adapter(sdtp, prompt_length=length, max_kv_fraction=0.7)
    ids = random_ids(length)
    with torch.inference_mode(), sdtp.use_schedule(plan.layers, plan.keep_ratio):
        cache = cache_of(sdtp(input_ids=ids, use_cache=True))
        assert sdtp.last_pruning.kept_counts(8) == list(plan.tokens_per_layer)
    assert kv_bytes(cache) == plan.kv_bytes
    with torch.inference_mode(), sdtp.disable_pruning():
        assert kv_bytes(cache_of(sdtp(input_ids=ids, use_cache=True))) == plan.base_kv_bytes


# ---------------------------------------------------------------------------------------------- preference, errors, inputs
def sweep_points_from_the_page() -> list[dict]:
    """The rows of the four-placement sweep's table (docs/benchmarks/earlier/sweep-plays-adapter.md, the run
    ``PLACEMENT_PREFERENCE`` comes from) as ``bench.sweep`` points (bold = Pareto front)."""
    section = (DOCS / "benchmarks" / "earlier" / "sweep-plays-adapter.md").read_text().split("## Sweep: keep ratio x stage placement")[1].split("\n## ")[0]
    points = []
    for line in section.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and re.fullmatch(r"[\d.]+x", cells[6]):
            points.append({"scorer": cells[0], "placement": cells[1], "flops_bound": float(cells[6][:-1]),
                           "delta_nll_pct": float(cells[7].rstrip("%"))})
    return points


def test_placement_preference_is_the_sweeps_quality_ranking():
    points = sweep_points_from_the_page()
    assert len(points) == 32
    assert quality_ranking(points) == list(PLACEMENT_PREFERENCE)


def test_quality_ranking_against_a_hand_computed_example():
    points = [{"scorer": "SDTP", "placement": "all 4 stages", "flops_bound": x, "delta_nll_pct": y} for x, y in ((1, 0), (3, 2))]
    points += [{"scorer": "SDTP", "placement": "every other (2 stages)", "flops_bound": x, "delta_nll_pct": y}
               for x, y in ((2, 0.5), (4, 3.5))]  # on [2, 3]: mean 1.0 against all's 1.5
    points += [{"scorer": "recency", "placement": "first half (2 stages)", "flops_bound": 2, "delta_nll_pct": -9}]
    assert quality_ranking(points) == ["every other", "all"]


def test_unreachable_targets_say_the_best_value_and_why():
    with pytest.raises(ValueError, match=r"speedup=50 is out of reach \(best: [\d.]+, by every other .* protected tokens"):
        plan_schedule(llama_config(), prompt_length=N, speedup=50, config=GRID)
    with pytest.raises(ValueError, match=r"max_kv_fraction=0.01 is out of reach .*sliding-window layers .* 11 tokens"):
        plan_schedule(gemma_config(), prompt_length=N, max_kv_fraction=0.01, config=GRID)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "no target given"),
    ({"speedup": 2, "prompt_length": 0}, "prompt_length=0 is invalid"),
    ({"speedup": -1.0}, "speedup=-1.0 is invalid"),
    ({"max_kv_fraction": 1.5}, r"max_kv_fraction=1.5 is invalid: expected a number in \(0, 1\]"),
    ({"speedup": 2, "num_stages": 2, "config": SDTPConfig(prune_layers=[2, 4])}, "num_stages=2 conflicts"),
    ({"speedup": 2, "config": SDTPConfig()}, "num_stages=10 is invalid for a 8-layer model"),
])
def test_bad_input_names_the_value(kwargs, message):
    kwargs = {"prompt_length": N, "config": GRID, **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_schedule(llama_config(), **kwargs)


def test_an_unsupported_family_is_refused():
    with pytest.raises(ValueError, match="model_type='gpt2' is not supported"):
        plan_schedule(GPT2Config(), prompt_length=N, speedup=1.5)


def test_a_model_its_config_and_its_folder_give_the_same_plan(tmp_path):
    model = tiny_llama()
    model.config.save_pretrained(tmp_path / "m")
    plans = [plan_schedule(x, prompt_length=N, speedup=1.4, config=GRID).to_dict()
             for x in (model, model.config, str(tmp_path / "m"), get_sdtp_model(model, GRID))]
    for p in plans:
        p.pop("model")
    assert all(p == plans[0] for p in plans)


# ---------------------------------------------------------------------------------------------- for_target, use_schedule
def test_for_target_round_trips_and_attaches_with_the_planned_schedule(tmp_path):
    config = SDTPConfig.for_target(llama_config(), speedup=1.4, prompt_length=N, num_stages=3, first_layer=2,
                                   protected_first=2, local_window_ratio=0.05, pruner_hidden_size=32)
    plan = plan_schedule(llama_config(), prompt_length=N, speedup=1.4, config=GRID)
    assert (config.prune_layers, config.keep_ratio, config.num_stages) == (list(plan.layers), plan.keep_ratio, len(plan.layers))
    assert (config.num_hidden_layers, config.hidden_size, config.local_window_ratio) == (8, 64, 0.05)
    config.save_pretrained(tmp_path)
    assert SDTPConfig.from_pretrained(tmp_path) == config
    sdtp = get_sdtp_model(tiny_llama(), SDTPConfig.from_pretrained(tmp_path))
    assert sdtp.schedule == plan.schedule
    default = SDTPConfig.for_target(llama_config(), prompt_length=N, num_stages=3, first_layer=2)  # speedup=2.0
    assert flops_speedup_bound(config_dims(llama_config()), default.schedule(8), N, 128) >= 2.0


@pytest.fixture()
def trained():
    sdtp = get_sdtp_model(tiny_llama(), dataclasses.replace(GRID, keep_ratio=0.8))
    return sdtp, random_ids(N)


@pytest.mark.parametrize("target", [1.2, 2.2])  # looser and stricter than the adapter's own r=0.8 (1.5x)
def test_use_schedule_for_a_speedup_prunes_as_planned_within_the_adapter_stages(trained, target):
    sdtp, ids = trained
    with torch.inference_mode():
        sdtp(input_ids=ids)
        own_last = sdtp.last_pruning.kept_counts(8)[-1]
        plan = plan_for_adapter(sdtp, prompt_length=N, speedup=target)
        with sdtp.use_schedule(speedup=target, prompt_length=N):
            assert sdtp.active_schedule == plan.schedule and set(plan.layers) <= {2, 4, 6}
            sdtp(input_ids=ids)
            kept = sdtp.last_pruning.kept_counts(8)
        assert sdtp.active_schedule == sdtp.schedule  # restored after the block
    assert kept == list(plan.tokens_per_layer) and plan.speedup >= target
    assert (kept[-1] > own_last) if target < 1.5 else (kept[-1] < own_last)


def test_use_schedule_for_a_speedup_on_given_layers(trained):
    sdtp, _ = trained
    with sdtp.use_schedule((2, 6), speedup=1.3, prompt_length=N):
        schedule = sdtp.active_schedule
    assert schedule == plan_for_adapter(sdtp, prompt_length=N, speedup=1.3, layers=(2, 6)).schedule
    assert schedule.layers == (2, 6)


def test_for_target_refuses_a_keep_ratio():
    with pytest.raises(ValueError, match="keep_ratio=0.5 is what for_target solves for"):
        SDTPConfig.for_target(llama_config(), speedup=1.5, prompt_length=N, keep_ratio=0.5)


def test_use_schedule_plans_without_the_modules_cost_under_a_training_free_scorer(trained):
    sdtp, _ = trained
    with sdtp.use_scorer(recency_scorer), sdtp.use_schedule(speedup=1.6, prompt_length=N):
        schedule = sdtp.active_schedule
    assert schedule == plan_schedule(sdtp, prompt_length=N, speedup=1.6, config=GRID, pruner_hidden_size=0).schedule


@pytest.mark.parametrize("kwargs, message", [
    ({"speedup": 1.5}, "prompt_length is required"),
    ({"speedup": 1.5, "prompt_length": N, "keep_ratio": 0.5}, "keep_ratio=0.5 conflicts"),
    ({"prompt_length": N}, "no target given"),
    ({"speedup": 50, "prompt_length": N}, r"the adapter's stages \[2, 4, 6\] .* speedup=50 is out of reach"),
])
def test_use_schedule_target_errors(trained, kwargs, message):
    with pytest.raises(ValueError, match=message):
        trained[0].use_schedule(**kwargs)


def test_use_schedule_keeps_its_old_arguments(trained):
    sdtp, _ = trained
    with sdtp.use_schedule((2, 6), 0.5):
        assert (sdtp.active_schedule.layers, sdtp.active_schedule.keep_ratio) == ((2, 6), 0.5)
    assert isinstance(sdtp, SDTPModel) and math.isclose(sdtp.active_schedule.keep_ratio, 0.8)
