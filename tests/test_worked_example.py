"""docs/training.md's worked example, every command, on a tiny model: a Qwen2 folder that is not a packaged
model, a jsonl chat dataset, `sdtp train`, `sdtp bench compare --model that/folder`, and loading it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_worked_example_runs_end_to_end(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "recipes" / "byo_model" / "run.sh"), str(tmp_path / "ex"), "--tiny"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    ex = tmp_path / "ex"
    state = json.loads((ex / "adapter" / "trainer_state.json").read_text())
    assert state["config"]["base_model_name_or_path"] == str((ex / "model").resolve())
    assert [h["step"] for h in state["joint"]] == list(range(1, 7))
    assert (ex / "adapter" / "checkpoint-3" / "adapter_model.safetensors").is_file()
    results = list((ex / "bench").glob("compare-*.json"))
    assert len(results) == 1 and (ex / "bench.md").is_file()
    assert "kept tokens per layer: [" in done.stdout
    assert not (REPO / "sdtp-bench").exists() and not (tmp_path / "sdtp-bench").exists()
