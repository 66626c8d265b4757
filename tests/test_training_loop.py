"""The accelerate training loop: padded micro-batches, accumulation, resume, checkpoints, phases, processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, SDTPModel, get_sdtp_model
from sdtp_adapter.training.arguments import TrainingArguments
from sdtp_adapter.training.objective import sdtp_loss
from sdtp_adapter.training.trainer import train

CONFIG = dict(prune_layers=[2, 4, 6], keep_ratio=0.7)
REPO = Path(__file__).resolve().parents[1]


def pruned(**config) -> SDTPModel:
    return get_sdtp_model(tiny_llama(), SDTPConfig(**{**CONFIG, **config}))


def rows(count: int = 8, lengths: tuple[int, ...] = (40,)) -> Dataset:
    out = []
    for s in range(count):
        n = lengths[s % len(lengths)]
        out.append({"input_ids": random_ids(n, seed=s)[0].tolist(), "target_mask": [i >= n - 10 for i in range(n)]})
    return Dataset.from_list(out)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def args(tmp: Path, **kw) -> TrainingArguments:
    base = dict(output_dir=str(tmp), steps=4, warmup_steps=1, save_every=0, warm_start_epochs=1, learning_rate=1e-2)
    return TrainingArguments(**{**base, **kw})


def test_a_left_padded_batch_computes_what_its_rows_compute_alone():
    model = pruned()
    a, b = random_ids(40, seed=1), random_ids(27, seed=2)
    ta = torch.tensor([[i >= 30 for i in range(40)]])
    tb = torch.tensor([[i >= 20 for i in range(27)]])
    alone = []
    for ids, target, seed in ((a, ta, 11), (b, tb, 22)):
        model.zero_grad()
        terms = sdtp_loss(model, ids, target, noise_seeds=[seed])
        terms.total.backward()
        alone.append((terms, {k: p.grad.clone() for k, p in model.pruners.named_parameters()}))
    ids = torch.cat([a, torch.cat([torch.zeros(1, 13, dtype=torch.long), b], dim=1)])
    mask = torch.ones_like(ids)
    mask[1, :13] = 0
    target = torch.cat([ta, torch.cat([torch.zeros(1, 13, dtype=torch.bool), tb], dim=1)])
    model.zero_grad()
    batch = sdtp_loss(model, ids, target, attention_mask=mask, noise_seeds=[11, 22])
    batch.total.backward()
    for term in ("lm", "mse", "rank"):
        assert getattr(batch, term) == pytest.approx((getattr(alone[0][0], term) + getattr(alone[1][0], term)) / 2, rel=1e-4)
    for name, param in model.pruners.named_parameters():
        torch.testing.assert_close(param.grad, (alone[0][1][name] + alone[1][1][name]) / 2, rtol=1e-3, atol=1e-6)


def test_micro_batch_size_and_accumulation_do_not_change_the_result(tmp_path):
    data = rows(8)
    runs = {}
    for name, kw in {"2x1": dict(per_device_batch_size=2), "1x2": dict(gradient_accumulation_steps=2)}.items():
        train(pruned(), data, args(tmp_path / name, phases=("joint",), **kw))
        runs[name] = weights(tmp_path / name)
    for key in runs["2x1"]:
        torch.testing.assert_close(runs["2x1"][key], runs["1x2"][key], rtol=1e-4, atol=1e-6)


def test_a_resumed_run_ends_bit_exact_with_an_uninterrupted_one(tmp_path, monkeypatch):
    from sdtp_adapter.training import objective

    data = rows(6, lengths=(40, 33))
    full = args(tmp_path / "full", steps=6, save_every=2, per_device_batch_size=2)
    train(pruned(), data, full)

    real, calls = objective.sdtp_loss, {"n": 0}

    def killed_at_step_5(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # the process dies during step 5
        return real(*a, **k)

    monkeypatch.setattr(objective, "sdtp_loss", killed_at_step_5)
    cut = args(tmp_path / "cut", steps=6, save_every=2, per_device_batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        train(pruned(), data, cut)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    resumed = train(pruned(), data, args(tmp_path / "cut", steps=6, save_every=2, per_device_batch_size=2, resume_from_checkpoint="latest"))
    assert [h["step"] for h in resumed.joint] == list(range(1, 7))
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((tmp_path / "full" / "loss_curves.json").read_text())["joint"]
    assert [h["loss"] for h in history] == [h["loss"] for h in resumed.joint]


def test_checkpoints_rotate_and_each_is_a_loadable_adapter(tmp_path):
    train(pruned(), rows(4), args(tmp_path, steps=7, save_every=2, save_total_limit=2, phases=("joint",)))
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    assert not list(tmp_path.glob(".checkpoint-*"))
    SDTPModel.from_pretrained(tiny_llama(), tmp_path / "checkpoint-6")
    state = json.loads((tmp_path / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["step"] == 6 and len(state["joint"]) == 6
    umask = os.umask(0)
    os.umask(umask)
    for file in (tmp_path / "checkpoint-6").iterdir():  # accelerate's model.safetensors included
        assert file.stat().st_mode & 0o777 == 0o666 & ~umask, file.name


@pytest.mark.parametrize(
    "change, match",
    [(dict(config=dict(keep_ratio=0.8)), "keep_ratio: checkpoint 0.7 != now 0.8"),
     (dict(seed=3), "seed: checkpoint 0 != now 3"),
     (dict(per_device_batch_size=2), "per_device_batch_size: checkpoint 1 != now 2")],
)
def test_resuming_with_another_setup_is_refused(tmp_path, change, match):
    train(pruned(), rows(4), args(tmp_path, steps=3, save_every=2, phases=("joint",)))
    model = pruned(**change.get("config", {}))
    kw = {k: v for k, v in change.items() if k != "config"}
    with pytest.raises(ValueError, match=match):
        train(model, rows(4), args(tmp_path, steps=3, save_every=2, phases=("joint",), resume_from_checkpoint="latest", **kw))


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint-<step> folder"):
        train(pruned(), rows(2), args(tmp_path, resume_from_checkpoint="latest"))
    with pytest.raises(FileNotFoundError, match="is not a checkpoint folder"):
        train(pruned(), rows(2), args(tmp_path, resume_from_checkpoint=str(tmp_path / "nope")))


def test_marking_saved_alone_then_warm_and_joint_equal_one_run(tmp_path):
    data = rows(4)
    train(pruned(), data, args(tmp_path / "one"))
    train(pruned(), data, args(tmp_path / "two", phases=("mark",)))
    assert sorted(p.name for p in (tmp_path / "two" / "marking").iterdir()) == ["shard-0-of-1.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "two" / "marking" / "shard-0-of-1.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not (tmp_path / "two" / "adapter_model.safetensors").exists()
    train(pruned(), data, args(tmp_path / "two", phases=("warm", "joint")))
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_killed_marking_resumes_from_its_parts_and_equals_one_uninterrupted_marking(tmp_path, monkeypatch):
    from sdtp_adapter.training import marking

    data = rows(11)  # 8 + 3: two parts of the default chunk
    train(pruned(), data, args(tmp_path / "once", phases=("mark",)))
    real, marked_rows = marking.mark_rows, []

    def killed_in_the_second_part(model, dataset, block, dtype, bar=None):
        if marked_rows:
            raise KeyboardInterrupt
        marked_rows.extend(block)
        return real(model, dataset, block, dtype, bar)

    monkeypatch.setattr(marking, "mark_rows", killed_in_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        train(pruned(), data, args(tmp_path / "cut", phases=("mark",)))
    parts = tmp_path / "cut" / "marking" / ".parts-0-of-1"
    assert sorted(p.name for p in parts.iterdir()) == ["part-000000.safetensors"] and marked_rows == list(range(8))
    monkeypatch.setattr(marking, "mark_rows", lambda model, dataset, block, dtype, bar=None: marked_rows.extend(block) or real(model, dataset, block, dtype, bar))
    train(pruned(), data, args(tmp_path / "cut", phases=("mark",)))  # the same command again
    assert marked_rows == list(range(11))  # rows 0-7 read back, not marked again
    assert sorted(p.name for p in (tmp_path / "cut" / "marking").iterdir()) == ["shard-0-of-1.safetensors"]
    a = load_file(str(tmp_path / "once" / "marking" / "shard-0-of-1.safetensors"))
    b = load_file(str(tmp_path / "cut" / "marking" / "shard-0-of-1.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_marking_parts_of_other_rows_or_another_schedule_are_refused(tmp_path, monkeypatch):
    from sdtp_adapter.training import marking

    monkeypatch.setattr(marking, "shutil", type("NoRemove", (), {"rmtree": staticmethod(lambda path: None)}))  # keep the parts
    train(pruned(), rows(4), args(tmp_path, phases=("mark",)))
    for model, data in ((pruned(keep_ratio=0.7, local_window_ratio=0.2), rows(4)), (pruned(), rows(4, lengths=(41,)))):
        with pytest.raises(ValueError, match=r"part-000000.safetensors was marked from other rows, another model or another schedule"):
            train(model, data, args(tmp_path, phases=("mark",)))


def test_warm_without_a_saved_marking_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no saved marking"):
        train(pruned(), rows(2), args(tmp_path, phases=("warm",)))


@pytest.mark.parametrize(
    "fields, match",
    [(dict(phases=("joint", "mark")), "phases"), (dict(phases="mark,oops"), "phases"), (dict(mixed_precision="fp8"), "mixed_precision"),
     (dict(save_total_limit=0), "save_total_limit"), (dict(per_device_batch_size=0), "per_device_batch_size"),
     (dict(resume_from_checkpoint="latest", phases=("mark", "warm")), "resume_from_checkpoint")],
)
def test_bad_training_arguments_name_the_field(tmp_path, fields, match):
    with pytest.raises(ValueError, match=f"TrainingArguments.{match}="):
        args(tmp_path, **fields)


def test_samples_too_short_for_the_schedule_are_refused_before_work(tmp_path):
    data = Dataset.from_list([{"input_ids": [5, 6, 7, 8, 9], "target_mask": [False, True, True, True, True]}])
    with pytest.raises(ValueError, match="row 0 has 5 tokens; this schedule needs at least"):
        train(pruned(), data, args(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """The worked example's tiny inputs: a local Qwen2 folder and a jsonl chat dataset."""
    out = tmp_path_factory.mktemp("example")
    subprocess.run([sys.executable, str(REPO / "recipes" / "byo_model" / "make_example.py"), str(out), "--tiny"], check=True, capture_output=True)
    return out


def _train_command(example: Path, out: Path, batch: int, phases: str) -> list[str]:
    return ["train", "--model", str(example / "model"), "--dataset", str(example / "chats.jsonl"), "--output-dir", str(out),
            "--prune-layers", "1", "2", "3", "--max-length", "256", "--max-samples", "8", "--steps", "3", "--phases", phases,
            "--warm-start-epochs", "1", "--per-device-batch-size", str(batch), "--save-every", "2"]


def test_two_processes_train_what_one_process_trains_on_the_same_global_batch(example, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo), micro-batch 1 each, against 1 process with micro-batch 2."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533", "-m", "sdtp_adapter.cli"]
    runs = {
        "one": [sys.executable, "-m", "sdtp_adapter.cli", *_train_command(example, tmp_path / "one", 2, "joint")],
        "two": [*launch, *_train_command(example, tmp_path / "two", 1, "joint")],
        "all": [*launch, *_train_command(example, tmp_path / "all", 1, "mark,warm,joint")],
    }
    for name, command in runs.items():
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
        assert done.stdout.count("adapter written to") == 1  # only the main process prints
    states = {name: json.loads((tmp_path / name / "trainer_state.json").read_text()) for name in runs}
    assert states["two"]["processes"] == 2
    for a, b in zip(states["one"]["joint"], states["two"]["joint"]):
        assert a["rows"] == b["rows"]  # the same global batch at every step...
        assert b["rows"][0] != b["rows"][1]  # ...made of a different sample on each process
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for key in a:  # the same computation up to the order of float additions in the gradient all-reduce
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    # marking is sharded: each process marked its own rows, together every row once
    assert states["all"]["marked_rows"] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert len(states["all"]["warm_start"]) == 1 and len(states["all"]["joint"]) == 3
