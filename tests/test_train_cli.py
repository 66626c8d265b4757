"""``sdtp train``: trains from a model folder and a data file; bad input is one line naming the field, before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from own_model import PROSE, STAGES, save_own_model

from sdtp_adapter import SDTPModel, cli
from sdtp_adapter.training import cli as train_cli

STAGE_FLAGS = ["--prune-layers", "2", "4", "6", "--keep-ratio", "0.5", "--pruner-hidden-size", "32"]


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Path:
    root = save_own_model(tmp_path_factory.mktemp("own"))
    (root / "prose.jsonl").write_text("".join(json.dumps({"body": PROSE[i : i + 120]}) + "\n" for i in range(0, 440, 110)))
    return root


def train_argv(own: Path, out: Path, *extra: str, model: str | None = None, dataset: str | None = None) -> list[str]:
    return ["train", "--model", model or str(own / "tiny-llama"), "--dataset", dataset or str(own / "prose.txt"),
            "--output-dir", str(out), "--max-length", "64", "--steps", "2", "--warm-start-epochs", "1", "--save-every", "0",
            *STAGE_FLAGS, *extra]


def fails(capsys, argv: list[str], match: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]  # after any progress bar
    assert exit_info.value.code == 2 and match in last and last.startswith("sdtp train: error: "), last
    return last


def test_train_writes_an_adapter_curves_and_state_that_load_back(own, tmp_path, capsys):
    cli.main(train_argv(own, tmp_path / "out", "--text-column", "text"))
    out = capsys.readouterr().out
    assert "data: " in out and "7 samples" in out and "adapter written to" in out
    for name in ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json", "loss_curves.json", "loss_curves.png"):
        assert (tmp_path / "out" / name).is_file(), name
    from transformers import AutoModelForCausalLM

    sdtp = SDTPModel.from_pretrained(AutoModelForCausalLM.from_pretrained(own / "tiny-llama"), tmp_path / "out")
    assert sdtp.sdtp_config.prune_layers == [2, 4, 6] and sdtp.sdtp_config.keep_ratio == 0.5
    assert sdtp.sdtp_config.base_model_name_or_path == str((own / "tiny-llama").resolve())


def test_config_file_sets_the_adapter_and_flags_override_it(own, tmp_path):
    import argparse

    args = cli.build_parser(["train"]).parse_args(train_argv(own, tmp_path, "--config", str(own / "adapter" / "adapter_config.json"), "--keep-ratio", "0.8"))
    config = train_cli.config_from_args(argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in ("prune_layers", "pruner_hidden_size")}), "m")
    assert config.prune_layers == STAGES["prune_layers"] and config.local_window_ratio == STAGES["local_window_ratio"]
    assert config.keep_ratio == 0.8 and config.base_model_name_or_path == "m"


@pytest.mark.parametrize(
    "change, match",
    [
        (["--phases", "joint,mark"], "TrainingArguments.phases="),
        (["--mixed-precision", "fp8"], "TrainingArguments.mixed_precision='fp8'"),
        (["--keep-ratio", "1.5"], "keep_ratio=1.5"),
        (["--prune-layers", "0", "2"], "layer indices must be >= 1"),
        (["--max-length", "1"], "max-length=1"),
        (["--config", "nothing.json"], "--config='nothing.json' is invalid"),
        ({"dataset": "missing.jsonl"}, "dataset='missing.jsonl' does not exist"),
        ({"dataset": "data.xml"}, "does not exist"),
        ({"model": "./no-such-model"}, "model='./no-such-model' is not a folder"),
        (["--text-column", "body"], "text_column='body' is not a column"),
        (["--init-adapter", "./no-such-adapter"], "adapter './no-such-adapter' is not an existing folder"),
        ({"init": ["--pruner-hidden-size", "16"]}, "pruner_hidden_size=16 (adapter: 32)"),
        ({"init": ["--prune-layers", "2", "4"]}, "stage layers [2, 4] (adapter: [2, 4, 6])"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(own, tmp_path, capsys, monkeypatch, change, match):
    """...and before the model's weights load."""
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model first"))
    monkeypatch.chdir(tmp_path)
    if isinstance(change, dict) and "init" in change:
        argv = train_argv(own, tmp_path / "out", "--init-adapter", str(own / "adapter"), *change["init"])
    elif isinstance(change, dict):
        argv = train_argv(own, tmp_path / "out", **change)
    else:
        argv = train_argv(own, tmp_path / "out", *change)
    fails(capsys, argv, match)
    assert not (tmp_path / "out").exists()


def test_unsupported_family_is_refused_from_its_config(tmp_path, capsys):
    from transformers import GPT2Config

    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "t.txt").write_text("hello")
    fails(capsys, ["train", "--model", str(tmp_path / "gpt2"), "--dataset", str(tmp_path / "t.txt"), "--output-dir", str(tmp_path / "o")],
          "model_type='gpt2', which sdtp_adapter does not support; supported: [")


def test_empty_dataset_is_refused(own, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    fails(capsys, ["train", "--model", str(own / "tiny-llama"), "--dataset", str(tmp_path / "empty.jsonl"), "--output-dir", str(tmp_path / "o")],
          "empty")


def test_a_non_empty_output_dir_is_refused_unless_overwrite_or_resume(own, tmp_path, capsys, monkeypatch):
    import transformers

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "adapter_model.safetensors").write_bytes(b"old")
    with monkeypatch.context() as patch:  # refused before the model loads
        patch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model first"))
        fails(capsys, train_argv(own, tmp_path / "out"), "is not empty")
    cli.main(train_argv(own, tmp_path / "out", "--overwrite-output-dir"))


def test_a_dataset_without_the_text_column_lists_its_columns(own, tmp_path, capsys):
    err = fails(capsys, train_argv(own, tmp_path / "out", dataset=str(own / "prose.jsonl")), "--text-column")
    assert "body" in err
    cli.main(train_argv(own, tmp_path / "out", "--text-column", "body", dataset=str(own / "prose.jsonl")))


def test_train_on_an_nf4_base_in_bf16_mixed_precision(own, tmp_path):
    """--load-in-4bit (bitsandbytes NF4, frozen) and --mixed-precision bf16, in a fresh process (accelerate's
    precision is fixed per process)."""
    import os
    import subprocess
    import sys

    argv = train_argv(own, tmp_path / "out", "--load-in-4bit", "--mixed-precision", "bf16", "--steps", "2")
    done = subprocess.run([sys.executable, "-m", "sdtp_adapter.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["args"]["mixed_precision"] == "bf16" and len(state["joint"]) == 2
    assert all(h["loss"] == h["loss"] for h in state["joint"])  # finite, not NaN


def test_load_base_quantises_to_nf4_and_names_the_model(own):
    from bitsandbytes.nn import Linear4bit

    from sdtp_adapter.loading import load_base

    model, tokenizer = load_base(str(own / "tiny-llama"), load_in_4bit=True)
    assert any(isinstance(m, Linear4bit) for m in model.modules())
    assert model.name_or_path == str((own / "tiny-llama").resolve()) == tokenizer.name_or_path


def test_init_adapter_starts_from_its_weights_and_config(own, tmp_path, capsys):
    """A joint step at a negligible learning rate leaves the --init-adapter weights as they were; fresh modules
    (same seed, no --init-adapter) are another thing entirely. Without --config, the adapter's config is the
    run's: its protected_first=2 and local_window_ratio=0.05 (not in the flags, not the defaults) carry over."""
    import torch
    from safetensors.torch import load_file

    start = load_file(own / "adapter" / "adapter_model.safetensors")
    common = ["--phases", "joint", "--steps", "1", "--learning-rate", "1e-12"]
    cli.main(train_argv(own, tmp_path / "init", "--init-adapter", str(own / "adapter"), *common))
    assert "modules start from" in capsys.readouterr().out
    tuned = load_file(tmp_path / "init" / "adapter_model.safetensors")
    assert tuned.keys() == start.keys()
    assert all(torch.allclose(tuned[k], start[k], atol=1e-6) for k in start)
    saved = json.loads((tmp_path / "init" / "adapter_config.json").read_text())
    assert (saved["protected_first"], saved["local_window_ratio"]) == (STAGES["protected_first"], STAGES["local_window_ratio"])
    cli.main(train_argv(own, tmp_path / "fresh", *common))
    fresh = load_file(tmp_path / "fresh" / "adapter_model.safetensors")
    assert not all(torch.allclose(fresh[k], start[k], atol=1e-3) for k in start)


def test_init_adapter_for_another_base_model_is_refused_naming_it(own, tmp_path, capsys):
    """Same stages and width, but trained on a wider base model: the weights cannot load, and the error says so."""
    from conftest import tiny_llama
    from transformers import LlamaConfig, LlamaForCausalLM

    from sdtp_adapter import SDTPConfig, get_sdtp_model

    narrow = tiny_llama().config
    wide = LlamaForCausalLM(LlamaConfig(**{**narrow.to_dict(), "hidden_size": narrow.hidden_size * 2}))
    get_sdtp_model(wide, SDTPConfig(**STAGES)).save_pretrained(tmp_path / "wide")
    fails(capsys, train_argv(own, tmp_path / "out", "--init-adapter", str(tmp_path / "wide")), "does not fit this model's modules")
