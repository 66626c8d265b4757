"""SDTPConfig validation, schedules and JSON round trips."""

from __future__ import annotations

import json

import pytest

from sdtp_adapter import SDTPConfig
from sdtp_adapter.architectures import ModelDims
from sdtp_adapter.bench.flops import flops_speedup_bound, layer_flops
from sdtp_adapter.schedule import StageSchedule


def test_default_schedule_on_30_layers():
    config = SDTPConfig()
    assert config.resolve_layers(30) == [4, 6, 8, 10, 12, 14, 16, 18, 20, 22]
    assert SDTPConfig(layer_step=3).resolve_layers(32) == [4, 7, 10, 13, 16, 19, 22, 25, 28, 31]
    assert SDTPConfig(prune_layers=[3, 9]).resolve_layers(12) == [3, 9]


@pytest.mark.parametrize(
    "field,value",
    [
        ("keep_ratio", 0.0),
        ("keep_ratio", 1.5),
        ("keep_ratio", "0.9"),
        ("num_stages", 0),
        ("first_layer", 0),
        ("layer_step", 0),
        ("protected_first", -1),
        ("local_window_ratio", 1.0),
        ("gumbel_temperature", 0),
        ("mse_loss_weight", -1.0),
        ("rank_loss_weight", float("inf")),
        ("saliency_tail_ratio", 1.0),
        ("pruner_hidden_size", 0),
        ("prune_layers", []),
        ("prune_layers", [5, 3]),
        ("prune_layers", [0, 3]),
        ("prune_layers", [2, 2]),
        ("adapter_type", "LORA"),
        ("format_version", 99),
    ],
)
def test_invalid_values_name_field_and_value(field, value):
    with pytest.raises(ValueError) as err:
        SDTPConfig(**{field: value})
    assert f"SDTPConfig.{field}=" in str(err.value) and repr(value) in str(err.value)


def test_stage_beyond_depth_is_rejected():
    with pytest.raises(ValueError, match="only 12 layers"):
        SDTPConfig(num_stages=10, first_layer=4, layer_step=2).resolve_layers(12)


def test_json_round_trip_and_unknown_fields(tmp_path):
    config = SDTPConfig(prune_layers=[2, 5], keep_ratio=0.8, base_model_name_or_path="x/y")
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["adapter_type"] == "SDTP" and data["library_version"]
    assert SDTPConfig.from_pretrained(tmp_path) == config
    with pytest.raises(ValueError, match="unknown SDTPConfig fields"):
        SDTPConfig.from_dict({**data, "bogus": 1})


def naive_budgets(n, layers, r, first, local_ratio):
    import math

    protected = set(range(min(first, n))) | set(range(n - min(n, max(1, math.ceil(local_ratio * n - 1e-9))), n))
    out, prev = [], n
    for s in range(1, len(layers) + 1):
        prev = min(prev, max(len(protected), math.ceil(n * r**s - 1e-9)))
        out.append(prev)
    return out


@pytest.mark.parametrize("n", [1, 3, 10, 57, 2048])
def test_budgets_match_reference_and_cover_protected(n):
    sched = StageSchedule((4, 6, 8, 10, 12, 14, 16, 18, 20, 22), 0.9, 4, 0.1)
    assert sched.budgets(n) == naive_budgets(n, sched.layers, 0.9, 4, 0.1)
    assert all(b >= sched.protected_count(n) for b in sched.budgets(n))
    if n == 2048:
        assert sched.budgets(n)[-1] == 715  # matches the calibration in SDTP-notes


def test_flops_model_and_bound():
    dims = ModelDims(576, 1536, 9, 3, 64, 30, 49152)
    # projections + MLP are linear in tokens, attention quadratic
    assert layer_flops(dims, 2) > 2 * layer_flops(dims, 1)
    sched = SDTPConfig().schedule(30)
    bound4k, bound8k = flops_speedup_bound(dims, sched, 4096, 128), flops_speedup_bound(dims, sched, 8192, 128)
    assert 1.85 < bound4k < bound8k < 2.1
    keep_all = StageSchedule((4, 6), 1.0, 4, 0.1)
    assert flops_speedup_bound(dims, keep_all, 1024) == pytest.approx(1.0)


def test_kept_share_is_the_mean_of_tokens_per_layer_over_the_prompt():
    from sdtp_adapter.schedule import StageSchedule

    schedule = StageSchedule(layers=(1, 3), keep_ratio=0.5, protected_first=2, local_window_ratio=0.1)
    counts = schedule.tokens_per_layer(100, 5)  # [100, 50, 50, 25, 25]
    assert schedule.kept_share(100, 5) == sum(counts) / 500 == 0.5
    with pytest.raises(ValueError, match="length=0"):
        schedule.kept_share(0, 5)
