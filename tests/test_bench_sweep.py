"""Sweep over keep ratios and placements: Pareto rule against a naive reference, points on a tiny model."""

from __future__ import annotations

import argparse
import json
import random

import pytest

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.bench import sweep
from sdtp_adapter.bench.genre_fidelity import score_windows
from sdtp_adapter.bench.intervals import paired_difference
from sdtp_adapter.bench.methods import Method
from sdtp_adapter.pruning.scorers import norm_scorer, recency_scorer


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
    windows = {"plays": [random_ids(70, seed=s) for s in range(2)]}
    points, extras = sweep.sweep_points(model, windows, 60, random_ids(200), [1.0, 0.7], repeats=1)
    assert len(points) == 2 * 2 * len(sweep.placements(model.schedule.layers))
    for p in points:
        if p["keep_ratio"] == 1.0:  # keep-all schedule: exact, whatever the scorer
            assert abs(p["delta_nll_pct"]) < 1e-4 and p["top1"] == 1.0
        else:
            assert p["kept_share"] < 1.0 and p["flops_bound"] > 1.0
        low, high = p["intervals"]["delta_nll_pct"]
        assert low <= p["delta_nll_pct"] <= high and ("vs_sdtp" in p) == (p["scorer"] != "SDTP")
    assert [p["pareto"] for p in points] == naive_front(points)
    assert extras["base_nll"] > 0 and extras["base_prefill_s"] > 0
    with pytest.raises(ValueError, match="keep_ratios"):
        sweep.sweep_points(model, windows, 60, random_ids(50), [1.2], repeats=1)
    with pytest.raises(ValueError, match=r"scorers \['oracle'\] are unknown; allowed: recency, norm, last-query, random"):
        sweep.sweep_points(model, windows, 60, random_ids(50), [0.9], repeats=1, scorer_ids=["oracle"])


def test_genres_pool_their_windows_and_scorers_are_paired_with_sdtp_window_by_window():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.7, protected_first=2, local_window_ratio=0.1))
    windows = {"novels": [random_ids(80, seed=s) for s in range(3)], "code": [random_ids(80, seed=10 + s) for s in range(3)]}
    points, _ = sweep.sweep_points(model, windows, 64, random_ids(120), [0.6], repeats=1, kinds=["all"], scorer_ids=["recency", "norm"])
    assert [p["scorer"] for p in points] == ["SDTP", "recency", "norm"] and {p["placement"] for p in points} == {"all 3 stages"}
    # the naive per-window figures: each genre's windows alone, dNLL over that genre's pooled base NLL
    per_window = {}
    for genre, cut in windows.items():
        at = dict(layers=(2, 4, 6), keep_ratio=0.6)
        scored = score_windows(model, cut, 64, [Method("SDTP", **at), Method("recency", scorer=recency_scorer, **at),
                                                 Method("norm", scorer=norm_scorer, **at)], None)
        base = sum(f.base_nll for f in scored["SDTP"]) / len(cut)
        for name, fids in scored.items():
            per_window.setdefault(name, []).extend(100 * (f.nll - f.base_nll) / base for f in fids)
    for p in points:
        assert p["delta_nll_pct"] == pytest.approx(sum(per_window[p["scorer"]]) / 6, abs=1e-9)
        assert p["delta_nll_pct"] == pytest.approx(sum(p["genres"].values()) / 2, abs=1e-9)  # equal windows per genre
        if p["scorer"] != "SDTP":
            diff, low, high = paired_difference(per_window["SDTP"], per_window[p["scorer"]], 0.95, 2000, 0)
            assert p["vs_sdtp"]["delta_nll_pct"]["diff"] == pytest.approx(diff, abs=1e-9)
            assert (p["vs_sdtp"]["delta_nll_pct"]["low"], p["vs_sdtp"]["delta_nll_pct"]["high"]) == pytest.approx((low, high), abs=1e-9)


def test_render_lists_every_point_and_the_plot():
    points = [dict(scorer=s, placement="all 2 stages", layers=[1, 2], keep_ratio=r, kept_share=0.5, delta_nll_pct=d,
                   top1=0.9, kl=0.1, speedup=sp, flops_bound=2.0, pareto=pa)
              for (s, r, d, sp, pa) in [("SDTP", 0.9, 1.0, 1.5, True), ("recency", 0.9, 2.0, 1.4, False)]]
    data = {"results": dict(model="m", prefix=100, continuation=10, windows=2, speed_tokens=200, repeats=1, base_nll=3.0, base_prefill_s=0.5, points=points), "meta": {}}
    lines = sweep.render(data)
    rows = [line for line in lines if line.startswith("| ") and "placement" not in line]
    assert len(rows) == 2 and rows[0].startswith("| **SDTP**") and "+2.00%" in rows[1]
    assert any("sweep-m-pareto.png" in line for line in lines)


def test_render_gives_intervals_and_the_paired_difference_when_the_points_have_them():
    base = dict(placement="all 2 stages", layers=[1, 2], keep_ratio=0.9, kept_share=0.5, top1=0.9, speedup=1.5,
                flops_bound=2.0, pareto=False, intervals={"delta_nll_pct": [0.5, 1.5], "kl": [0.01, 0.03], "top1": [0.8, 1.0]})
    points = [base | dict(scorer="SDTP", delta_nll_pct=1.0, kl=0.02),
              base | dict(scorer="norm", delta_nll_pct=1.4, kl=0.03,
                          vs_sdtp={"delta_nll_pct": {"diff": -0.4, "low": -0.7, "high": -0.1, "excludes_zero": True}})]
    data = {"results": dict(model="m", prefix=100, continuation=10, windows=2, genres=["novels", "code"], speed_tokens=200,
                            repeats=1, base_nll=3.0, base_prefill_s=0.5, points=points), "meta": {}}
    lines = sweep.render(data)
    assert any("held-out windows of each of novels, code, pooled" in line for line in lines)
    rows = [line for line in lines if line.startswith("| ") and "placement" not in line]
    assert rows[0].endswith("| +1.00% [+0.50, +1.50] | 0.900 | 0.020 [0.010, 0.030] | — |")
    assert rows[1].endswith("| -0.40 [-0.70, -0.10] * |")


def test_sweep_windows_are_the_plays_or_each_genres_held_out_windows(monkeypatch):
    from conftest import CharTokenizer
    from sdtp_adapter.data import genres as genre_registry

    docs = {"novels": {"emma": "the wind and the rain " * 300}, "technical": {"ref": "a directive and a role " * 300}}
    monkeypatch.setattr(genre_registry, "genre_texts", lambda genre, split="train": docs[genre] if split == "heldout" else {})
    monkeypatch.setattr(genre_registry, "available_genres", lambda: ["novels", "technical"])
    out = sweep.sweep_windows(CharTokenizer(), ["technical", "novels"], 3, 100)
    assert list(out) == ["technical", "novels"] and all(len(w) == 3 and w[0].shape == (1, 100) for w in out.values())
    with pytest.raises(ValueError, match="--genres 'poetry' is unknown"):
        sweep.sweep_windows(CharTokenizer(), ["poetry"], 3, 100)


def test_two_models_sweeps_in_one_folder_keep_their_own_results_and_plots(tmp_path, monkeypatch):
    model = get_sdtp_model(tiny_llama(), SDTPConfig(prune_layers=[1, 3], keep_ratio=0.8, protected_first=2, local_window_ratio=0.1))
    monkeypatch.setattr(sweep, "load_sdtp", lambda *a: (model, None))
    monkeypatch.setattr(sweep, "sweep_windows", lambda tokenizer, genres, count, length: {"plays": [random_ids(length, seed=s) for s in range(count)]})
    monkeypatch.setattr(sweep, "heldout_ids", lambda tokenizer, n: random_ids(n))
    for name in ("model-a", "model-b"):
        args = argparse.Namespace(model=name, adapter=None, windows=2, prefix=40, continuation=8, speed_tokens=64, repeats=1,
                                  keep_ratios=[0.8], placements=["all"], scorers=None, out=str(tmp_path), command_line="sdtp bench sweep")
        sweep.run(args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep-model-a-pareto.png", "sweep-model-a.json",
                                                          "sweep-model-b-pareto.png", "sweep-model-b.json"]
    assert json.loads((tmp_path / "sweep-model-a.json").read_text())["results"]["model"] == "model-a"
