"""``sdtp bench observations``: saliency metrics against plain-Python references, on tiny random models."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from conftest import random_ids, tiny_llama
from sdtp_adapter.bench import observations as obs
from sdtp_adapter.bench import saliency_metrics as metrics
from sdtp_adapter.schedule import StageSchedule
from sdtp_adapter.training.saliency import token_saliency


def saliency_with_ties(layers: int = 5, n: int = 23, seed: int = 0) -> torch.Tensor:
    """``[layers, n]`` non-negative values on a coarse grid, so ties occur."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 6, (layers, n), generator=g).float() / 5


# ----------------------------------------------------------------- naive references
def naive_important_share(row: list[float], fraction: float) -> float:
    top = max(row)
    return sum(1 for v in row if v > fraction * top) / len(row)


def naive_top_mass(row: list[float], share: float) -> float:
    k = max(1, math.ceil(share * len(row) - 1e-9))
    return sum(sorted(row, reverse=True)[:k]) / sum(row)


def naive_average_ranks(row: list[float]) -> list[float]:
    out = []
    for v in row:
        below = sum(1 for w in row if w < v)
        equal = sum(1 for w in row if w == v)
        out.append(below + (equal - 1) / 2)
    return out


def naive_spearman(a: list[float], b: list[float]) -> float:
    ra, rb = naive_average_ranks(a), naive_average_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


def naive_low_set(row: list[float], share: float) -> set[int]:
    order = sorted(range(len(row)), key=lambda i: (row[i], i))  # ties: earlier position is lower
    return set(order[: int(share * len(row))])


def naive_stays_low(a: list[float], b: list[float], share: float) -> float:
    low_a, low_b = naive_low_set(a, share), naive_low_set(b, share)
    return len(low_a & low_b) / len(low_a)


# ----------------------------------------------------------------- per-layer metrics
@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_important_share_matches_loops(fraction):
    s = torch.rand(6, 40, generator=torch.Generator().manual_seed(3)) ** 4
    got = metrics.important_share(s, fraction)
    want = [naive_important_share(row, fraction) for row in s.tolist()]
    assert got.tolist() == pytest.approx(want, abs=1e-7)


def test_important_share_is_strictly_above_the_threshold():
    # 1.0 is the max; 0.1 sits exactly on 10% of it and is not counted
    s = torch.tensor([[1.0, 0.1, 0.11, 0.0]])
    assert metrics.important_share(s).tolist() == pytest.approx([0.5])


@pytest.mark.parametrize("share", [0.1, 0.25])
def test_top_mass_share_matches_loops(share):
    s = torch.rand(6, 37, generator=torch.Generator().manual_seed(4))
    got = metrics.top_mass_share(s, share)
    want = [naive_top_mass(row, share) for row in s.tolist()]
    assert got.tolist() == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------- layer-pair metrics
def test_average_ranks_share_ties():
    s = saliency_with_ties()
    got = metrics.average_ranks(s)
    assert got.tolist() == [naive_average_ranks(row) for row in s.tolist()]


def test_spearman_matches_naive_rank_correlation_with_ties():
    s = saliency_with_ties(layers=4, n=31, seed=2)
    got = metrics.spearman_matrix(s)
    rows = s.tolist()
    for a in range(4):
        for b in range(4):
            assert float(got[a, b]) == pytest.approx(naive_spearman(rows[a], rows[b]), abs=1e-12)


def test_spearman_of_monotone_and_reversed_rows():
    x = torch.rand(50, generator=torch.Generator().manual_seed(5))
    got = metrics.spearman_matrix(torch.stack([x, x**3 + 2, -x]))
    want = torch.tensor([[1, 1, -1], [1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("share", [0.5, 0.2])
def test_stays_low_matches_loops_with_ties(share):
    s = saliency_with_ties(layers=5, n=23, seed=7)
    got = metrics.stays_low_matrix(s, share)
    rows = s.tolist()
    for a in range(5):
        for b in range(5):
            assert float(got[a, b]) == pytest.approx(naive_stays_low(rows[a], rows[b], share), abs=1e-12)
    assert torch.equal(got, got.T)


def test_low_mask_counts_the_same_number_of_tokens_per_layer():
    mask = metrics.low_mask(saliency_with_ties(layers=3, n=11), 0.5)
    assert mask.sum(dim=-1).tolist() == [5, 5, 5]


def test_stays_low_is_one_for_the_same_order_and_zero_for_the_reversed():
    x = torch.arange(10.0)
    got = metrics.stays_low_matrix(torch.stack([x, 2 * x, -x]))
    assert got.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


# ----------------------------------------------------------------- samples
def test_sample_metrics_use_only_candidates():
    s = torch.rand(4, 30, generator=torch.Generator().manual_seed(8))
    s[:, 0] = 1000.0  # an attention sink would set every layer's max
    candidates = torch.ones(30, dtype=torch.bool)
    candidates[:2] = False
    got = metrics.sample_metrics(s, candidates)
    rest = s[:, 2:].tolist()
    assert got["important_share"].tolist() == pytest.approx([naive_important_share(r, 0.1) for r in rest])
    assert got["important_share_all"].tolist() == pytest.approx([naive_important_share(r, 0.1) for r in s.tolist()])
    assert got["top_mass"].tolist() == pytest.approx([naive_top_mass(r, 0.1) for r in rest], rel=1e-6)
    assert float(got["stays_low"][0, 3]) == pytest.approx(naive_stays_low(rest[0], rest[3], 0.5))
    assert float(got["spearman"][1, 2]) == pytest.approx(naive_spearman(rest[1], rest[2]))


def test_sample_metrics_rejects_fewer_than_two_candidates():
    with pytest.raises(ValueError, match="candidates"):
        metrics.sample_metrics(torch.rand(3, 5), torch.tensor([True, False, False, False, False]))


def test_mean_metrics_averages_over_samples():
    a = {"important_share": torch.tensor([0.2, 0.4]), "spearman": torch.eye(2)}
    b = {"important_share": torch.tensor([0.4, 0.0]), "spearman": torch.ones(2, 2)}
    got = metrics.mean_metrics([a, b])
    assert got["samples"] == 2
    assert got["important_share"] == pytest.approx([0.3, 0.2])
    assert got["spearman"] == [[1.0, 0.5], [0.5, 1.0]]
    with pytest.raises(ValueError, match="per_sample"):
        metrics.mean_metrics([])


# ----------------------------------------------------------------- saliency on a tiny model
def test_layer_saliency_matches_token_saliency_per_layer():
    model = tiny_llama(layers=6)
    ids = random_ids(40)
    target = torch.zeros(1, 40, dtype=torch.bool)
    target[:, 30:] = True
    every = metrics.layer_saliency(model, ids, target)
    assert every.shape == (6, 40) and every.dtype == torch.float32
    assert bool((every >= 0).all())
    for layer in (0, 3, 5):
        alone = token_saliency(model, ids, target, [layer])[layer][0]
        torch.testing.assert_close(every[layer], alone, rtol=1e-5, atol=1e-7)


def test_layer_saliency_rejects_a_batch():
    model = tiny_llama(layers=2)
    with pytest.raises(ValueError, match="input_ids"):
        metrics.layer_saliency(model, random_ids(8, batch=2), torch.ones(2, 8, dtype=torch.bool))


def test_measure_means_per_group_and_leaves_protected_tokens_out():
    model = tiny_llama(layers=4)
    schedule = StageSchedule(layers=(1, 2), keep_ratio=0.9, protected_first=2, local_window_ratio=0.2)
    rows = []
    for seed in (1, 2):
        ids = random_ids(20, seed=seed)[0].tolist()
        rows.append({"input_ids": ids, "target_mask": [i >= 15 for i in range(20)]})
    example: list = []
    got = obs.measure(model, {"a": rows, "b": rows[:1]}, schedule, example)
    assert list(got) == ["a", "b"] and got["a"]["samples"] == 2 and got["b"]["samples"] == 1
    assert example[0].shape == (4, 20)
    # by hand: candidates are positions 2 .. 15 (first 2 and last ceil(0.2 * 20) = 4 protected)
    per = []
    for row in rows:
        s = metrics.layer_saliency(model, torch.tensor([row["input_ids"]]), torch.tensor([row["target_mask"]]))
        per.append([naive_important_share(r, 0.1) for r in s[:, 2:16].tolist()])
    assert got["a"]["important_share"] == pytest.approx([(x + y) / 2 for x, y in zip(*per)], abs=6e-6)
    assert got["b"]["important_share"] == pytest.approx(per[0], abs=6e-6)
    assert len(got["a"]["stays_low"]) == 4 and got["a"]["stays_low"][2][2] == 1.0


# ----------------------------------------------------------------- verdicts, render, plots
def synthetic_results(falling: bool) -> dict:
    layers = 8
    shares = [0.5 - 0.05 * i for i in range(layers)] if falling else [0.1 + 0.05 * i for i in range(layers)]
    stays = [[1.0 if s == t else (0.8 if falling else 0.45) for t in range(layers)] for s in range(layers)]
    group = {
        "samples": 2,
        "important_share": shares,
        "important_share_all": [x / 2 for x in shares],
        "top_mass": [0.3] * layers,
        "spearman": [[1.0 if s == t else 0.6 for t in range(layers)] for s in range(layers)],
        "stays_low": stays,
    }
    return {
        "model": "tiny",
        "num_layers": layers,
        "stage_layers": [2, 4, 6],
        "length": 64,
        "tail_ratio": 0.25,
        "protected_first": 4,
        "local_window_ratio": 0.1,
        "groups": {obs.TEXT_TAIL: group, obs.CHAT: dict(group, samples=1)},
        "plots": list(obs.PLOTS.values()),
    }


def test_verdicts_follow_the_data():
    good, bad = synthetic_results(True), synthetic_results(False)
    g, b = good["groups"][obs.TEXT_TAIL], bad["groups"][obs.TEXT_TAIL]
    assert obs.sparsity_verdict(g["important_share"], [2, 4, 6]) == pytest.approx(
        {"holds": True, "first": 0.4, "last": 0.2, "rho": -1.0}
    )
    assert obs.sparsity_verdict(b["important_share"], [2, 4, 6])["holds"] is False
    assert obs.transitivity_verdict(g["stays_low"], [2, 4, 6]) == {"holds": True, "min": 0.8, "first_last": 0.8}
    assert obs.transitivity_verdict(b["stays_low"], [2, 4, 6])["holds"] is False


def test_render_table_images_and_verdicts():
    lines = obs.render({"results": synthetic_results(True), "meta": {}})
    text = "\n".join(lines)
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 2", "| 4", "| 6"]
    # layer 4: share tail, share chat, all tokens, top mass, stays-low prev, stays-low from 2, Spearman prev
    assert rows[1] == "| 4 | 0.300 | 0.300 | 0.150 | 0.300 | 0.800 | 0.800 | 0.600 |"
    assert rows[0].endswith("| - | - | - |")
    for name in obs.PLOTS.values():
        assert f"(benchmarks/{name})" in text
    assert "Observation 1 (sparsity grows with depth) **holds**" in text
    assert "Observation 2 (transitivity) **holds**" in text
    assert f"other targets: {obs.CHAT}: holds (0.400 to 0.200, Spearman -1.00)." in text
    assert f"other targets: {obs.CHAT}: holds (min 0.800)." in text
    flipped = "\n".join(obs.render({"results": synthetic_results(False), "meta": {}}))
    assert "Observation 1 (sparsity grows with depth) **does not hold**" in flipped
    assert "Observation 2 (transitivity) **does not hold**" in flipped


def test_plots_are_written(tmp_path):
    results = synthetic_results(True)
    obs.plot_sparsity(results, tmp_path)
    obs.plot_transitivity(results, tmp_path)
    obs.plot_tokens(torch.rand(8, 64), results, tmp_path)
    for name in obs.PLOTS.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(obs.PLOTS.values())  # no temp files left


@pytest.mark.parametrize(
    "argv, field",
    [
        (["--samples", "0"], "--samples"),
        (["--chats", "-1"], "--chats"),
        (["--samples", "2", "--full-window-samples", "3"], "--full-window-samples"),
    ],
)
def test_run_validates_arguments(argv, field):
    parser = argparse.ArgumentParser()
    obs.add_arguments(parser)
    args = parser.parse_args(argv)
    args.command_line = "sdtp bench observations"
    with pytest.raises(ValueError, match=field):
        obs.run(args)
