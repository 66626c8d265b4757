"""``recipes/ablation_table.py``: the ablation tables from arm folders whose results are built by the real
writers (``genre_fidelity.genre_summary``, ``suite_stats.summarize``) on made-up per-window and per-prompt
figures; paired differences equal a naive recomputation; arms on other windows and missing arms are named."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from sdtp_adapter.bench import genre_fidelity as G
from sdtp_adapter.bench import suite_stats
from sdtp_adapter.bench.fidelity import Fidelity
from sdtp_adapter.bench.intervals import paired_difference
from sdtp_adapter.bench.methods import Method

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ablation_table", ROOT / "recipes" / "ablation_table.py")
ablation_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation_table)

METHODS = [Method("base (unpruned)", prune=False), Method(G.TRAINED),
           Method("recency (StreamingLLM-like)")]


def windows(nlls: list[float]) -> list[Fidelity]:
    return [Fidelity(base_nll=3.0, nll=n, delta_nll_pct=0.0, top1=0.9, kl=(n - 3.0) / 10, windows=1, tokens=8) for n in nlls]


def compare_results(sdtp: list[float], recency: list[float]) -> dict:
    genres = {}
    for name in ("plays", "code"):
        source = G.GenreSource(name, "made up", {"doc": "text"})
        per_window = {G.TRAINED: windows(sdtp), "recency (StreamingLLM-like)": windows(recency)}
        genres[name] = G.genre_summary(source, METHODS, per_window)
    return {"genres": genres}


def suite_results(sdtp: list[float], recency: list[float], summaries: list[float] | None = None) -> dict:
    n = len(sdtp)
    summaries = summaries or [0.6] * n
    samples = [{"task": "retrieval", "length": 1024, "bucket": ("start", "middle", "end")[i % 3]} for i in range(n)]
    samples += [{"task": "summarization", "length": 1024, "bucket": "whole"} for _ in range(n)]
    names = [m.name for m in METHODS]
    per_prompt = {
        names[0]: {"score": [1.0] * n + [1.0] * n, "degenerate": [False] * 2 * n, "new_tokens": [10] * 2 * n},
        names[1]: {"score": sdtp + summaries, "degenerate": [False] * 2 * n, "new_tokens": [10] * 2 * n},
        names[2]: {"score": recency + [0.4] * n, "degenerate": [True] + [False] * (2 * n - 1), "new_tokens": [10] * 2 * n},
    }
    evaluation = {"methods": names, "per_prompt": per_prompt}
    return {"samples": samples, "methods": names, "per_prompt": per_prompt} | suite_stats.summarize(samples, evaluation)


def write_arm(out: Path, arm: str, sdtp: list[float], recency: list[float], scores: list[float],
              summaries: list[float] | None = None) -> None:
    (out / arm / "eval").mkdir(parents=True)
    (out / arm / "eval" / "compare-m.json").write_text(json.dumps({"meta": {}, "results": compare_results(sdtp, recency)}))
    (out / arm / "eval" / "suite-m.json").write_text(json.dumps({"meta": {}, "results": suite_results(scores, [0.0] * len(scores), summaries)}))
    rows = [[0, 1], [2, 3], [0, 4], [5, 1]]  # 6 distinct samples
    joint = [{"step": i + 1, "lm": 2.0, "seconds": s, "rows": r} for i, (s, r) in enumerate(zip([30.0, 32.0, 9999.0, 31.0], rows))]
    (out / arm / "trainer_state.json").write_text(json.dumps({"joint": joint, "args": {"per_device_batch_size": 2}}))


def test_tables_hold_the_arms_figures_and_naive_paired_differences(tmp_path):
    write_arm(tmp_path, "paper", [3.03, 3.06, 3.00, 3.09], [3.06, 3.09, 3.03, 3.12], [1.0, 1.0, 0.0, 1.0])
    write_arm(tmp_path, "distill", [3.00, 3.03, 2.97, 3.06], [3.06, 3.09, 3.03, 3.12], [1.0, 0.0, 0.0, 1.0],
              summaries=[0.7, 0.5, 0.9, 0.6])
    md = ablation_table.table(tmp_path, ["paper", "distill"])
    fidelity, tasks, training = md.split("### ")[1:]
    assert "| paper | +1.50 [" in fidelity  # mean dNLL of 3.03, 3.06, 3.00, 3.09 over 3.0: +1.5%
    expected = paired_difference([-1.0, -1.0, -1.0, -1.0], [0.0] * 4)  # distill minus paper, points
    assert expected[0] == pytest.approx(-1.0)
    assert "| distill | +0.50 [" in fidelity
    row = next(line for line in fidelity.split("\n") if line.startswith("| distill | -2.00 ["))  # SDTP - recency
    assert row.count(f"| {expected[0]:+.2f} [{expected[1]:+.2f}, {expected[2]:+.2f}] * |") == 2  # both genres
    assert "| paper | 0.75 [" in tasks and "| distill | 0.50 [" in tasks and "1.00 [1.00, 1.00]" in tasks
    assert "0.600 [0.600, 0.600] | 0.00 / 0.00 | +0.200 [+0.200, +0.200] *" in tasks
    tasks_expected = paired_difference([1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0])  # distill minus paper, by prompt
    distill_row = next(line for line in tasks.split("\n") if line.startswith("| distill | "))
    assert f"| {tasks_expected[0]:+.2f} [{tasks_expected[1]:+.2f}, {tasks_expected[2]:+.2f}] |" in distill_row
    assert tasks_expected[0] == pytest.approx(-0.25)
    rouge_expected = paired_difference([0.7, 0.5, 0.9, 0.6], [0.6] * 4)  # ROUGE-L, distill minus paper, by prompt
    assert distill_row.endswith(f"| {rouge_expected[0]:+.3f} [{rouge_expected[1]:+.3f}, {rouge_expected[2]:+.3f}] |")
    assert rouge_expected[0] == pytest.approx(0.075)
    assert "| paper | 6 | 4 | 2 | 31.5 | 2.000 |" in training  # the median ignores a paused step
    assert ablation_table.table(tmp_path) == md  # default order: paper (the reference arm) first


def test_an_arm_measured_without_recency_or_a_joint_step_record_renders_dashes(tmp_path):
    write_arm(tmp_path, "paper", [3.03, 3.06, 3.00, 3.09], [3.06] * 4, [1.0] * 4)
    write_arm(tmp_path, "old", [3.03, 3.06, 3.00, 3.09], [3.06] * 4, [1.0, 0.0, 1.0, 1.0])
    path = tmp_path / "old" / "eval" / "suite-m.json"
    data = json.loads(path.read_text())
    data["results"]["per_prompt"].pop("recency (StreamingLLM-like)")
    data["results"]["summarization"]["all"]["methods"].pop("recency (StreamingLLM-like)")
    path.write_text(json.dumps(data))
    (tmp_path / "old" / "trainer_state.json").write_text(json.dumps({"args": {}, "history": []}))  # the old format
    md = ablation_table.table(tmp_path, ["paper", "old"])
    _, tasks, training = md.split("### ")[1:]
    old_row = next(line for line in tasks.split("\n") if line.startswith("| old | "))
    cells = [c.strip() for c in old_row.strip("|").split("|")]
    assert cells[3] == "—" and cells[-2] == "—"  # retrieval minus recency, ROUGE-L minus recency
    assert cells[4] != "—" and cells[-1] != "—"  # the differences against paper are still there
    assert "| old | — | no joint-step record | — | — | — |" in training


def test_arms_on_other_windows_or_missing_are_named(tmp_path):
    write_arm(tmp_path, "paper", [3.03, 3.06, 3.00, 3.09], [3.06] * 4, [1.0] * 4)
    write_arm(tmp_path, "short", [3.03, 3.06], [3.06] * 2, [1.0] * 2)
    with pytest.raises(ValueError, match="arm short, genre plays: 2 windows against 4 for paper"):
        ablation_table.table(tmp_path, ["paper", "short"])
    write_arm(tmp_path, "fewer-prompts", [3.03, 3.06, 3.00, 3.09], [3.06] * 4, [1.0] * 2)
    with pytest.raises(ValueError, match="arm fewer-prompts: its suite prompts differ from paper's"):
        ablation_table.table(tmp_path, ["paper", "fewer-prompts"])
    with pytest.raises(ValueError, match=r"arms \['window30'\] have no folder under"):
        ablation_table.table(tmp_path, ["paper", "window30"])
    with pytest.raises(ValueError, match="no arm folder with eval/ results"):
        ablation_table.table(tmp_path / "paper" / "eval")


def test_the_ablation_script_runs_each_arm_with_its_own_flags_and_refuses_an_unknown_arm(tmp_path):
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "PYTHON": "echo"}  # print the commands instead of running them
    out = subprocess.run(["bash", str(ROOT / "recipes" / "ablation.sh"), str(tmp_path), "distill", "window30"],
                         env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    marks = [line for line in out if "--phases mark " in line]
    trains = [line for line in out if "--phases warm,joint" in line]
    assert len(marks) == 2 and f"--marking-dir {tmp_path}/mark-mix " in marks[0] and f"--marking-dir {tmp_path}/mark-w30 " in marks[1]
    assert "--lm-loss-weight 0 --distill-loss-weight 1" in trains[0] and "--local-window-ratio 0.3" not in trains[0]
    assert "--local-window-ratio 0.3" in trains[1] and "--local-window-ratio 0.3" in marks[1]
    assert all("--samples 48 --steps 40 --per-device-batch-size 2" in line for line in marks + trains)
    assert sum("bench compare" in line and "--genres plays novels code technical bible" in line for line in out) == 2
    assert sum("bench suite" in line for line in out) == 2 and out[-1].endswith(f"ablation_table.py {tmp_path} distill window30")
    followup = subprocess.run(["bash", str(ROOT / "recipes" / "ablation.sh"), str(tmp_path), "followup"],
                              env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert any(f"--marking-dir {tmp_path}/mark-fu " in line and "--task-kinds passkey kv needle followup" in line
               for line in followup if "--phases mark " in line)
    bad = subprocess.run(["bash", str(ROOT / "recipes" / "ablation.sh"), str(tmp_path), "oracle"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown arm 'oracle'; allowed: paper distill window30 text-only chats-only followup" in bad.stderr


def test_the_ablation_script_skips_an_arm_whose_results_exist_and_runs_the_rest(tmp_path):
    import subprocess

    (tmp_path / "paper" / "eval").mkdir(parents=True)
    for name in ("compare", "suite"):
        (tmp_path / "paper" / "eval" / f"{name}-smollm2-135m-instruct.json").write_text("{}")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": "echo"}
    out = subprocess.run(["bash", str(ROOT / "recipes" / "ablation.sh"), str(tmp_path), "paper", "distill"],
                         env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert "paper: measured already (its eval JSONs exist), skipped" in out
    assert not any(f"{tmp_path}/paper " in line or f"--adapter {tmp_path}/paper" in line for line in out)
    assert sum("bench compare" in line for line in out) == 1 and f"--adapter {tmp_path}/distill " in next(
        line for line in out if "bench compare" in line)


def test_the_measured_arms_kept_in_docs_render_with_every_table_and_their_page_is_current():
    kept = ROOT / "docs" / "benchmarks" / "ablation"
    arms = sorted(p.name for p in kept.iterdir() if (p / "eval").is_dir())
    assert "paper" in arms
    md = ablation_table.table(kept)
    for arm in arms:  # one row per arm in each of the four tables, none of them without its training record
        assert sum(line.startswith(f"| {arm} | ") for line in md.splitlines()) == 4
    assert "no joint-step record" not in md and "No " not in md
    # the page docs/training.md links is this output, regenerated whenever an arm is added
    assert (kept / "tables.md").read_text().split("\n\n", 1)[1] == md


def test_the_gemma_results_kept_in_docs_render_and_their_page_is_current():
    kept = ROOT / "docs" / "benchmarks" / "gemma-mix"  # recipes/gemma_mix.sh's run, next to the plays-only adapter
    md = ablation_table.table(kept, ["plays-only", "mix4k"])
    for arm in ("plays-only", "mix4k"):  # one row per adapter in each of the four tables
        assert sum(line.startswith(f"| {arm} | ") for line in md.splitlines()) == 4
    assert (kept / "tables.md").read_text().split("\n\n", 1)[1] == md
