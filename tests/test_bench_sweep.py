"""Sweep over keep ratios and placements: Pareto rule against a naive reference, points on a tiny model."""

from __future__ import annotations

import random

import pytest

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.bench import sweep


def naive_front(points: list[dict]) -> list[bool]:
    out = []
    for i, p in enumerate(points):
        ok = True
        for j, q in enumerate(points):
            if i == j:
                continue
            better_or_equal = q["speedup"] >= p["speedup"] and q["delta_nll_pct"] <= p["delta_nll_pct"]
            strictly = q["speedup"] > p["speedup"] or q["delta_nll_pct"] < p["delta_nll_pct"]
            if better_or_equal and strictly:
                ok = False
        out.append(ok)
    return out


def test_pareto_front_matches_naive_reference():
    rng = random.Random(0)
    for _ in range(50):
        points = [{"speedup": rng.choice([1.0, 1.5, 2.0, rng.random() * 3]), "delta_nll_pct": rng.choice([0.5, 1.0, rng.random() * 5])} for _ in range(12)]
        assert sweep.pareto_front(points) == naive_front(points)


def test_placements_are_subsets_of_the_adapter_stages():
    layers = tuple(range(4, 23, 2))
    for name, subset in sweep.placements(layers).items():
        assert set(subset) <= set(layers) and list(subset) == sorted(subset), name
    assert sweep.placements(layers)["every other (5 stages)"] == (4, 8, 12, 16, 20)


def test_sweep_points_on_a_tiny_model():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(prune_layers=[1, 2, 3, 5, 6], keep_ratio=0.8, protected_first=2, local_window_ratio=0.1))
    windows = [random_ids(70, seed=s) for s in range(2)]
    points, extras = sweep.sweep_points(model, windows, 60, random_ids(200), [1.0, 0.7], repeats=1)
    assert len(points) == 2 * 2 * len(sweep.placements(model.schedule.layers))
    for p in points:
        if p["keep_ratio"] == 1.0:  # keep-all schedule: exact, whatever the scorer
            assert abs(p["delta_nll_pct"]) < 1e-4 and p["top1"] == 1.0
        else:
            assert p["kept_share"] < 1.0 and p["flops_bound"] > 1.0
    assert [p["pareto"] for p in points] == naive_front(points)
    assert extras["base_nll"] > 0 and extras["base_prefill_s"] > 0
    with pytest.raises(ValueError, match="keep_ratios"):
        sweep.sweep_points(model, windows, 60, random_ids(50), [1.2], repeats=1)


def test_render_lists_every_point_and_the_plot():
    points = [dict(scorer=s, placement="all 2 stages", layers=[1, 2], keep_ratio=r, kept_share=0.5, delta_nll_pct=d,
                   top1=0.9, kl=0.1, speedup=sp, flops_bound=2.0, pareto=pa)
              for (s, r, d, sp, pa) in [("SDTP", 0.9, 1.0, 1.5, True), ("recency", 0.9, 2.0, 1.4, False)]]
    data = {"results": dict(model="m", prefix=100, continuation=10, windows=2, speed_tokens=200, repeats=1, base_nll=3.0, base_prefill_s=0.5, points=points), "meta": {}}
    lines = sweep.render(data)
    rows = [line for line in lines if line.startswith("| ") and "placement" not in line]
    assert len(rows) == 2 and rows[0].startswith("| **SDTP**") and "+2.00%" in rows[1]
    assert any("sweep-pareto.png" in line for line in lines)
