"""``recipes/gemma_mix.sh``: with ``PYTHON=echo`` the script prints the commands it would run, so the steps,
their flags and the skip of finished steps are checked without a model."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "recipes" / "gemma_mix.sh"
ENV = {"PATH": "/usr/bin:/bin", "PYTHON": "echo"}  # print the commands instead of running them


def commands(out: Path, **env: str) -> list[str]:
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=ENV | env, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_a_fresh_run_marks_trains_and_measures_gemma_at_4k_and_a_baseline_only_when_named(tmp_path):
    lines = [line for line in commands(tmp_path) if "--model gemma3-270m" in line]
    mark, train, compare, suite = lines
    for line in (mark, train):
        assert "--genres plays novels code technical --length 4096" in line
        assert f"--marking-dir {tmp_path}/marking " in line
    assert "--phases mark" in mark and "--phases warm,joint" in train and "--resume-from-checkpoint" not in train
    assert f"bench compare --model gemma3-270m --adapter {tmp_path}/mix4k" in compare
    assert f"--adapter {tmp_path}/mix4k" in suite and "--lengths 4096" in suite and "--methods sdtp recency" in suite

    with_baseline = [line for line in commands(tmp_path, BASELINE="/old/adapter") if "--model gemma3-270m" in line]
    assert with_baseline[:4] == lines
    base_compare, base_suite = with_baseline[4:]
    windows = compare.split(" --out ")[0].split(f"{tmp_path}/mix4k ")[1]
    assert windows.startswith("--genres ") and windows in base_compare  # the same windows
    for line in (base_compare, base_suite):
        assert "--adapter /old/adapter" in line and f"--out {tmp_path}/baseline/eval" in line


def test_finished_steps_are_skipped_and_training_resumes_from_a_checkpoint(tmp_path):
    (tmp_path / "marking").mkdir()
    (tmp_path / "marking" / "shard-0-of-1.safetensors").write_bytes(b"")
    (tmp_path / "mix4k" / "checkpoint-8").mkdir(parents=True)
    lines = commands(tmp_path)
    assert not any("--phases mark" in line for line in lines)
    assert any("--phases warm,joint" in line and "--resume-from-checkpoint latest" in line for line in lines)

    (tmp_path / "mix4k" / "adapter_config.json").write_text("{}")
    (tmp_path / "mix4k" / "eval").mkdir()
    for name in ("compare", "suite"):
        (tmp_path / "mix4k" / "eval" / f"{name}-gemma3-270m.json").write_text("{}")
    assert [line for line in commands(tmp_path) if "gemma3-270m" in line] == []
