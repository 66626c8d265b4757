"""``sdtp plan`` (lengths, text and JSON output, one-line errors, a light --help) and ``sdtp bench plan-speed``
end to end on a tiny model of one's own."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from conftest import tiny_llama
from own_model import save_own_model

from sdtp_adapter import SDTPConfig, cli
from sdtp_adapter.plan_cli import parse_length
from sdtp_adapter.planning import plan_schedule


@pytest.mark.parametrize("text, tokens", [("8K", 8192), ("4k", 4096), ("8192", 8192), (" 2K ", 2048), ("1", 1)])
def test_lengths(text, tokens):
    assert parse_length(text) == tokens


@pytest.mark.parametrize("text", ["8x", "0", "-1", "1.5K", "", "8KB", "K"])
def test_bad_lengths_say_what_is_allowed(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a prompt length; allowed: an integer >= 1, optionally"):
        parse_length(text)


def test_plan_help_imports_neither_torch_nor_transformers():
    code = ("import sys\nfrom sdtp_adapter.cli import build_parser\nbuild_parser(['plan', '--help']).format_help()\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan") / "tiny"
    tiny_llama().config.save_pretrained(folder)
    return folder


def test_plan_json_is_the_planners_plan(model_folder, capsys):
    cli.main(["plan", "--model", str(model_folder), "--speedup", "1.4", "--length", "1K", "--num-stages", "3",
              "--max-kv-fraction", "0.8", "--json"])
    out = json.loads(capsys.readouterr().out)
    plan = plan_schedule(str(model_folder), prompt_length=1024, speedup=1.4, max_kv_fraction=0.8, num_stages=3)
    assert out == json.loads(json.dumps(plan.to_dict()))
    assert out["targets"] == {"speedup": 1.4, "max_kv_fraction": 0.8} and out["prompt_length"] == 1024
    for key in ("keep_ratio", "tokens_per_stage", "speedup", "flops", "base_flops", "flops_fraction", "kv_bytes",
                "base_kv_bytes", "kv_fraction", "placement", "alternatives"):
        assert key in out, key
    assert out["speedup"] >= 1.4 and out["kv_fraction"] <= 0.8


def test_plan_text_names_the_schedule_and_its_costs(model_folder, capsys):
    cli.main(["plan", "--model", str(model_folder), "--speedup", "1.4", "--length", "1024", "--num-stages", "3",
              "--local-window-ratio", "0.05", "--dtype", "bfloat16"])
    text = capsys.readouterr().out
    config = SDTPConfig(num_stages=3, local_window_ratio=0.05)
    plan = plan_schedule(str(model_folder), prompt_length=1024, speedup=1.4, config=config, kv_dtype="bfloat16")
    assert f"stage layers:    {', '.join(map(str, plan.layers))}" in text
    assert f"keep ratio:      {plan.keep_ratio} per stage" in text
    assert " -> ".join(map(str, (1024, *plan.tokens_per_stage))) in text
    assert f"speedup bound:   {plan.speedup:.3f}x" in text
    assert f"{plan.kv_bytes / 2**20:.1f} MiB of {plan.base_kv_bytes / 2**20:.1f} MiB unpruned" in text and "bfloat16" in text


def test_plan_over_an_adapters_stages(model_folder, tmp_path, capsys):
    SDTPConfig(prune_layers=[2, 4, 6], local_window_ratio=0.2).save_pretrained(tmp_path / "adapter")
    cli.main(["plan", "--model", str(model_folder), "--adapter", str(tmp_path / "adapter"), "--speedup", "1.3",
              "--length", "512", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert set(out["layers"]) <= {2, 4, 6} and out["local_window_ratio"] == 0.2


@pytest.mark.parametrize("argv, message", [
    (["--speedup", "40", "--length", "1K", "--num-stages", "3"], "speedup=40.0 is out of reach"),
    (["--length", "1K", "--num-stages", "3"], "no target given"),
    (["--speedup", "2", "--length", "1K"], "num_stages=10 is invalid for a 8-layer model"),
    (["--speedup", "2", "--length", "8x"], "'8x' is not a prompt length"),
])
def test_plan_errors_are_one_line(model_folder, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plan", "--model", str(model_folder), *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


# ---------------------------------------------------------------------------------------------- bench plan-speed
@pytest.fixture(scope="module")
def own_model(tmp_path_factory):
    return save_own_model(tmp_path_factory.mktemp("own"))  # adapter stages [2, 4, 6], 440-token prose


@pytest.mark.parametrize("scorer", ["trained", "recency"])
def test_bench_plan_speed_measures_every_planned_schedule(own_model, tmp_path, monkeypatch, scorer):
    monkeypatch.chdir(tmp_path)
    cli.main(["bench", "plan-speed", "--model", str(own_model / "tiny-llama"), "--adapter", str(own_model / "adapter"),
              "--text-file", str(own_model / "prose.txt"), "--lengths", "200", "400", "--speedups", "1.3", "1.6",
              "--scorer", scorer, "--num-stages", "3", "--first-layer", "2", "--repeats", "1", "--warmup", "0"])
    name = "plan-speed-tiny-llama" + ("" if scorer == "trained" else f"-{scorer}")
    res = json.loads((tmp_path / "sdtp-bench" / f"{name}.json").read_text())["results"]
    assert [(r["tokens"], r["target"]) for r in res["rows"]] == [(200, 1.3), (200, 1.6), (400, 1.3), (400, 1.6)]
    for row in res["rows"]:
        assert row["kept_as_planned"], row
        assert row["kv_mib"]["measured"] == row["kv_mib"]["predicted"]  # float32: the KV model is exact
        assert row["kv_mib"]["base_measured"] == row["kv_mib"]["base_predicted"]
        assert row["predicted_speedup"] >= row["target"] and row["measured_speedup"] > 0
        assert row["measured_over_predicted"] == pytest.approx(row["measured_speedup"] / row["predicted_speedup"])
        if scorer == "trained":
            assert set(row["layers"]) <= {2, 4, 6}
    assert res["scorer"] == scorer and (res["grid"] is None) == (scorer == "trained")
    page = (tmp_path / "sdtp-bench.md").read_text()
    assert "## Planned schedules: predicted vs measured speedup, tiny-llama" in page
    assert page.count("| 200 |") == 2 and page.count("| 400 |") == 2


def test_bench_plan_speed_without_an_adapter_fails_before_loading(tmp_path, monkeypatch, capsys):
    from sdtp_adapter import loading

    tiny_llama().config.save_pretrained(tmp_path / "my-model")
    monkeypatch.setattr(loading, "load_base", lambda *a, **k: pytest.fail("loaded the model first"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "plan-speed", "--model", str(tmp_path / "my-model")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "is not a packaged model" in err and "pass --adapter" in err, err
