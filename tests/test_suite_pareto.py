"""``bench.suite_pareto`` and ``recipes/suite_pareto.py``: suite runs at several keep ratios, built by the real
writers (``suite_stats.summarize`` / ``verdict``) on made-up per-prompt scores, joined with a sweep's measured
speedups by scorer, layers and keep ratio; shares of unpruned equal a naive recomputation; bad joins are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdtp_adapter.bench import suite_pareto, suite_stats
from sdtp_adapter.bench.methods import BASE, TRAINED
from sdtp_adapter.pruning.scorers import RECENCY

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [4, 6, 8]


def suite_results(keep_ratio: float, sdtp: list[float], recency: list[float], base: list[float], model: str = "m") -> dict:
    """A suite run: retrieval (3 buckets) and second turn (one bucket) at 1024, summaries at 1024."""
    n = len(sdtp)
    samples = [{"task": "retrieval", "length": 1024, "bucket": ("start", "middle", "end")[i % 3]} for i in range(n)]
    samples += [{"task": "second_turn", "length": 1024, "bucket": "start"} for _ in range(n)]
    samples += [{"task": "summarization", "length": 1024, "bucket": "whole"} for _ in range(n)]
    names = [BASE, TRAINED, RECENCY]
    per_prompt = {
        BASE: {"score": base + base + [1.0] * n, "degenerate": [False] * 3 * n, "new_tokens": [10] * 3 * n},
        TRAINED: {"score": sdtp + sdtp + [0.6] * n, "degenerate": [False] * 3 * n, "new_tokens": [10] * 3 * n},
        RECENCY: {"score": recency + recency + [0.4] * n, "degenerate": [False] * 2 * n + [True] + [False] * (n - 1), "new_tokens": [10] * 3 * n},
    }
    evaluation = {"methods": names, "per_prompt": per_prompt}
    results = {
        "model": model, "lengths": [1024], "prompts": n, "tasks": ["retrieval", "second_turn", "summarization"],
        "methods": names, "kept_share": {BASE: 1.0, TRAINED: keep_ratio - 0.2, RECENCY: keep_ratio - 0.2},
        "schedule": {"layers": LAYERS, "keep_ratio": keep_ratio, "protected_first": 4, "local_window_ratio": 0.3},
    } | suite_stats.summarize(samples, evaluation)
    results["verdict"] = suite_stats.verdict(results)
    return results


def sweep_results(speedups: dict[tuple[str, float], float], model: str = "m") -> dict:
    points = [{"scorer": scorer, "layers": LAYERS, "keep_ratio": r, "speedup": s} for (scorer, r), s in speedups.items()]
    points.append({"scorer": "SDTP", "layers": [4, 8], "keep_ratio": 0.9, "speedup": 9.0})  # another placement: never used
    return {"model": model, "speed_tokens": 2048, "points": points}


def test_rows_join_speedups_by_scorer_layers_and_ratio_and_give_naive_shares():
    runs = [suite_results(0.9, [1, 0, 0, 1, 0, 1], [0] * 6, [1, 1, 0, 1, 1, 1]),
            suite_results(0.95, [1, 1, 0, 1, 1, 1], [1, 0, 0, 0, 0, 0], [1, 1, 0, 1, 1, 1])]
    sweep = sweep_results({("SDTP", 0.9): 2.0, ("recency", 0.9): 2.1, ("SDTP", 0.95): 1.5})
    rows = suite_pareto.pareto_rows(runs, sweep)
    assert [(r["keep_ratio"], r["method"]) for r in rows] == [(0.95, TRAINED), (0.95, RECENCY), (0.9, TRAINED), (0.9, RECENCY)]
    assert [r["speedup"] for r in rows] == [1.5, None, 2.0, 2.1]  # recency at 0.95 was not timed
    cell = rows[2]["qa"]["retrieval@1024"]
    assert cell["method"]["mean"] == pytest.approx(3 / 6) and cell["base"]["mean"] == pytest.approx(5 / 6)
    assert cell["method"]["ratio"] == pytest.approx((3 / 6) / (5 / 6))  # naive share of unpruned
    assert rows[2]["qa"]["second_turn@1024"]["method"]["mean"] == pytest.approx(3 / 6)  # the one-bucket task
    assert rows[0]["verdict"] is not None and rows[1]["verdict"] is None  # verdicts are SDTP's
    assert rows[3]["degenerate"] == {1024: pytest.approx(1 / 6)} and rows[3]["degenerate_base"] == {1024: 0.0}
    assert suite_pareto._mean_share(rows[0]) == pytest.approx(1.0)  # 5/5 on both cells
    lines = suite_pareto.render(rows, 2048)
    assert "prefill speedup at 2048 tokens" in lines[0]
    assert any(line.startswith(f"| 0.9 (0.70) | {TRAINED} | 0.50 [") and "60% of 0.83" in line and line.endswith("| 2.00x |") for line in lines)
    assert any(line.startswith(f"| 0.95 (0.75) | {RECENCY} |") and line.endswith("| not measured |") for line in lines)


def test_share_is_capped_at_the_unpruned_accuracy_per_cell():
    row = {"qa": {"a": {"method": {"ratio": 1.5}}, "b": {"method": {"ratio": 0.5}}, "c": {"method": {"ratio": None}}}}
    assert suite_pareto._mean_share(row) == pytest.approx(0.75)  # min(1.5, 1) and 0.5; an unanswerable cell is left out


@pytest.mark.parametrize("second, sweep, match", [
    (suite_results(0.9, [1, 0, 1], [0, 0, 0], [1, 1, 1]), None, "share a keep ratio"),
    (suite_results(0.95, [1, 0, 1], [0, 0, 0], [1, 1, 1], model="other"), None, "mix models"),
    (suite_results(0.95, [1, 0, 1], [0, 0, 0], [1, 1, 1]), sweep_results({}, model="other"), "sweep is of model 'other'"),
])
def test_bad_joins_are_refused_naming_what_differs(second, sweep, match):
    first = suite_results(0.9, [1, 0, 1], [0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match=match):
        suite_pareto.pareto_rows([first, second], sweep)
    with pytest.raises(ValueError, match="suites is empty"):
        suite_pareto.pareto_rows([], None)


def test_recipe_writes_the_page_plot_and_rows(tmp_path):
    meta = {"command": "sdtp bench suite --keep-ratio R", "date": "2026-11-27", "machine": "test"}
    paths = []
    for r in (0.9, 0.95):
        path = tmp_path / f"suite-{r}.json"
        path.write_text(json.dumps({"meta": meta, "results": suite_results(r, [1, 0, 1], [0, 0, 0], [1, 1, 1])}))
        paths.append(str(path))
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"meta": meta | {"command": "sdtp bench sweep"}, "results": sweep_results({("SDTP", 0.9): 2.0})}))
    out = tmp_path / "pareto"
    subprocess.run([sys.executable, str(ROOT / "recipes" / "suite_pareto.py"), *paths, "--sweep", str(sweep), "--out", str(out)],
                   check=True, capture_output=True)
    page = (out / "suite-pareto.md").read_text()
    assert "| 2.00x |" in page and "- speed: `sdtp bench sweep`" in page and "- keep ratio 0.95:" in page
    assert (out / "suite-pareto.png").stat().st_size > 0
    rows = json.loads((out / "suite-pareto.json").read_text())["results"]
    assert len(rows) == 4 and rows[0]["keep_ratio"] == 0.95
    bad = subprocess.run([sys.executable, str(ROOT / "recipes" / "suite_pareto.py"), paths[0], paths[0], "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "share a keep ratio" in bad.stderr
