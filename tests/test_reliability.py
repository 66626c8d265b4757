"""Bad inputs and faults a new user meets: each case id matches a row of docs/reliability.md."""

from __future__ import annotations

import copy
import gc
import json
import math
import pickle
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, SDTPModel, get_sdtp_model
from sdtp_adapter.compat import cache_kwarg, cache_of
from sdtp_adapter.files import CorruptedFileError
from sdtp_adapter.persistence import WEIGHTS_NAME
from sdtp_adapter.pruning.scorers import recency_scorer

STAGES = dict(prune_layers=[2, 4, 6], keep_ratio=0.7, protected_first=4, local_window_ratio=0.1)


def pruned(seed: int = 0, **overrides) -> SDTPModel:
    return get_sdtp_model(tiny_llama(seed=seed), SDTPConfig(**{**STAGES, **overrides}))


def decoder_hooks(model) -> int:
    decoder = model.model
    return len(decoder._forward_pre_hooks) + len(decoder._forward_hooks)


# ---------------------------------------------------------------------------------- 1. threads
def test_T1_T1b_threads_sharing_one_model_get_their_solo_results():
    """3 threads x 20 rounds, prompts of different and of equal lengths, pruning on and off: every output
    equals its solo run."""
    model = pruned()
    prompts = [random_ids(48, seed=1), random_ids(48, seed=2), random_ids(90), random_ids(61)]
    jobs = [(p, on) for p in prompts for on in (True, False)]

    def run(ids, on):
        with torch.no_grad(), (torch.enable_grad() if on else model.disable_pruning()):
            out = model.generate(ids, max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
            counts = model.last_pruning.kept_counts(8) if on else None
        return out.sequences, torch.stack(out.scores), counts

    solo = [run(*job) for job in jobs]
    failures: list[str] = []

    def worker(tid: int):
        for rnd in range(20):
            k = (tid + rnd) % len(jobs)
            try:
                seq, scores, counts = run(*jobs[k])
            except Exception as err:  # noqa: BLE001 - collected and reported below
                failures.append(f"thread {tid} round {rnd}: {type(err).__name__}: {err}")
                continue
            ref = solo[k]
            if not (torch.equal(seq, ref[0]) and torch.equal(scores, ref[1]) and counts == ref[2]):
                failures.append(f"thread {tid} round {rnd}: result differs from the solo run of job {k}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]


def test_T2_disable_pruning_in_one_thread_leaves_other_threads_pruning():
    model = pruned()
    ids = random_ids(60)
    with torch.no_grad():
        ref = model(ids).logits
    inside, release = threading.Event(), threading.Event()

    def hold():
        with model.disable_pruning():
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(10)
    try:
        with torch.no_grad():
            got = model(ids).logits
        assert torch.equal(got, ref)
        assert model.controller.enabled.value is True
    finally:
        release.set()
        holder.join()


# ---------------------------------------------------------------------------------- 2. poisoned scores
def _assert_protected_kept(model, n: int) -> None:
    for layer, positions in model.last_pruning.kept_positions.items():
        kept = set(positions[0].tolist())
        assert {0, 1, 2, 3} <= kept, f"layer {layer} lost a leading token"
        assert set(range(n - math.ceil(0.1 * n), n)) <= kept, f"layer {layer} lost the local window"


@pytest.mark.parametrize(
    "case, make",
    [
        ("R03a all NaN", lambda s: torch.full_like(s, float("nan"))),
        ("R03b NaN at 10..14", lambda s: s.index_fill(1, torch.arange(10, 15), float("nan"))),
        ("R03d +inf on 5..29", lambda s: s.index_fill(1, torch.arange(5, min(30, s.shape[1])), float("inf"))),
        ("R03e NaN on 26 tokens", lambda s: s.index_fill(1, torch.arange(0, min(26, s.shape[1])), float("nan"))),
    ],
)
def test_R03_poisoned_scores_never_evict_protected_tokens(case, make):
    model = pruned()

    def poisoned(layer, hidden, positions):
        return make(recency_scorer(layer, hidden, positions).float())

    with torch.no_grad(), model.use_scorer(poisoned), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(random_ids(40))
        model(random_ids(40))
    _assert_protected_kept(model, 40)
    nan_warnings = [w for w in caught if "NaN scores" in str(w.message)]
    assert len(nan_warnings) == (1 if "NaN" in case else 0)  # reported once, not per call


def test_R03b_nan_scored_tokens_rank_lowest():
    model = pruned()

    def scorer(layer, hidden, positions):
        return positions.float().index_fill(1, torch.arange(10, 15), float("nan"))

    with torch.no_grad(), model.use_scorer(scorer), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(random_ids(40))
    first_stage = set(model.last_pruning.kept_positions[2][0].tolist())
    assert not first_stage & set(range(10, 15))


def test_R03c_A04_adapter_with_non_finite_weights_is_refused_at_load(tmp_path):
    model = pruned()
    with torch.no_grad():
        model.pruner(2).fc1.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path)
    with pytest.raises(CorruptedFileError, match=r"2\.fc1\.weight.*NaN or infinite"):
        SDTPModel.from_pretrained(tiny_llama(), tmp_path)


def test_A06c_integer_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    pruned().save_pretrained(tmp_path)
    weights = {k: v.to(torch.int8) for k, v in load_file(tmp_path / WEIGHTS_NAME).items()}
    save_file(weights, tmp_path / WEIGHTS_NAME)
    with pytest.raises(CorruptedFileError, match="not floating point"):
        SDTPModel.from_pretrained(tiny_llama(), tmp_path)


# ---------------------------------------------------------------------------------- 3. atomic saves
@pytest.mark.parametrize(
    "case, changed, field",
    [("S04c same stages", {"keep_ratio": 0.5}, "keep_ratio"), ("S04d other stages", {"prune_layers": [2, 4]}, "prune_layers")],
)
def test_S04c_S04d_save_interrupted_before_the_config_is_never_loaded_as_a_mix(tmp_path, monkeypatch, case, changed, field):
    pruned(seed=0).save_pretrained(tmp_path)
    b = get_sdtp_model(tiny_llama(), SDTPConfig(**{**STAGES, **changed}))

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(SDTPConfig, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="disk full"):
        b.save_pretrained(tmp_path)
    monkeypatch.undo()
    with pytest.raises(CorruptedFileError, match=f"different saves.*{field}"):
        SDTPModel.from_pretrained(tiny_llama(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", WEIGHTS_NAME]  # no temp files left


def test_S04e_process_killed_between_the_two_files_is_detected(tmp_path):
    pruned().save_pretrained(tmp_path)
    script = f"""
import os, sys
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
from conftest import tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
SDTPConfig.save_pretrained = lambda self, d: os._exit(137)
get_sdtp_model(tiny_llama(seed=5), SDTPConfig(prune_layers=[2, 4], keep_ratio=0.5)).save_pretrained({str(tmp_path)!r})
"""
    assert subprocess.run([sys.executable, "-c", script]).returncode == 137
    with pytest.raises(CorruptedFileError, match="different saves"):
        SDTPModel.from_pretrained(tiny_llama(), tmp_path)


def test_S06_stale_files_of_an_earlier_adapter_are_removed(tmp_path):
    (tmp_path / "adapter_model.bin").write_bytes(b"old weights")
    (tmp_path / "README.md").write_text("---\nlibrary_name: sdtp-adapter\n---\nold card\n")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning, match="removed"):
        pruned().save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", WEIGHTS_NAME, "notes.txt"]


def test_C_mut2_save_validates_the_config_before_writing(tmp_path):
    model = pruned()
    model.sdtp_config.keep_ratio = 5.0
    with pytest.raises(ValueError, match="keep_ratio=5.0"):
        model.save_pretrained(tmp_path)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------- 4. attach twice, unload
def test_R07a_R07c_attaching_twice_replaces_the_first_adapter_cleanly(tmp_path):
    base = tiny_llama()
    first = get_sdtp_model(base, SDTPConfig(**STAGES))
    first.save_pretrained(tmp_path)
    hooks = decoder_hooks(base)
    with pytest.warns(UserWarning, match="already had an SDTP adapter"):
        second = SDTPModel.from_pretrained(base, tmp_path)
    assert decoder_hooks(base) == hooks
    ids = random_ids(40)
    with torch.no_grad():
        got = second(ids).logits
        with second.disable_pruning():
            plain = second(ids).logits
    with torch.no_grad():
        ref = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
        ref.pruners.load_state_dict(first.pruners.state_dict())
        torch.testing.assert_close(got, ref(ids).logits)
    with pytest.raises(RuntimeError, match="unloaded"):
        first(ids)
    assert not torch.equal(got, plain)


def test_R07b_deleting_a_wrapper_removes_its_hooks():
    base = tiny_llama()
    plain_hooks = decoder_hooks(base)
    model = get_sdtp_model(base, SDTPConfig(**STAGES))
    assert decoder_hooks(base) > plain_hooks
    del model
    gc.collect()
    assert decoder_hooks(base) == plain_hooks
    second = get_sdtp_model(base, SDTPConfig(**STAGES))
    with torch.no_grad():
        second(random_ids(40))


def test_R07d_wrapping_an_sdtp_model_is_refused():
    with pytest.raises(TypeError, match="already an SDTPModel"):
        get_sdtp_model(pruned(), SDTPConfig(**STAGES))


def test_R01_an_unloaded_wrapper_refuses_to_run():
    model = pruned()
    base = model.unload()
    ids = random_ids(30)
    for call in (
        lambda: model(ids),
        lambda: model.generate(ids, max_new_tokens=2),
        lambda: model.use_scorer(recency_scorer),
        lambda: model.disable_pruning(),
        lambda: model.use_schedule(keep_ratio=0.5),
    ):
        with pytest.raises(RuntimeError, match="unloaded"):
            call()
    with torch.no_grad():
        base(ids)  # the base model itself runs, unpruned
    assert decoder_hooks(base) == 0


# ---------------------------------------------------------------------------------- 5. copies
def test_R08a_deepcopy_prunes_like_the_original():
    model = pruned()
    clone = copy.deepcopy(model)
    ids = random_ids(40)
    with torch.no_grad():
        a, b = model(ids).logits, clone(ids).logits
    assert torch.equal(a, b)
    assert clone.last_pruning.kept_counts(8) == model.last_pruning.kept_counts(8)
    with torch.no_grad(), clone.disable_pruning():
        assert torch.equal(model(ids).logits, a)  # the copy's context does not reach the original
    assert clone.base_model is not model.base_model


@pytest.mark.parametrize("dump", [pickle.dumps, lambda m: torch.save(m, __import__("io").BytesIO())], ids=["R08b pickle", "R08c torch.save"])
def test_R08_pickling_says_to_save_the_adapter(dump):
    with pytest.raises(TypeError, match="save_pretrained"):
        dump(pruned())


# ---------------------------------------------------------------------------------- 6. masks and outputs
def test_P14b_4d_mask_is_refused_while_pruning():
    model = pruned()
    mask = torch.ones(1, 1, 30, 30, dtype=torch.bool).tril()
    with pytest.raises(ValueError, match="2-D padding mask"), torch.no_grad():
        model(random_ids(30), attention_mask=mask)


@pytest.mark.parametrize(
    "case, mask",
    [("P11a shorter", torch.ones(1, 25, dtype=torch.long)), ("P11b longer", torch.ones(1, 35, dtype=torch.long)), ("P11c batch", torch.ones(2, 30, dtype=torch.long))],
)
def test_P11_mask_shape_mismatch_says_so(case, mask):
    with pytest.raises(ValueError, match=r"attention_mask has shape .* expected \[1, 30\]"), torch.no_grad():
        pruned()(random_ids(30), attention_mask=mask)


def test_right_padding_names_the_row():
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, -3:] = 0
    with pytest.raises(ValueError, match=r"not left-padded in row\(s\) \[1\]"), torch.no_grad():
        pruned()(random_ids(30, batch=2), attention_mask=mask)


@pytest.mark.parametrize("flag", ["output_hidden_states", "output_attentions"])
def test_P18_per_layer_outputs_are_refused_while_pruning(flag):
    # attention maps come from eager attention (sdpa drops them with a warning in transformers 5.0-5.1)
    model = get_sdtp_model(tiny_llama(attn="eager" if flag == "output_attentions" else "sdpa"), SDTPConfig(**STAGES))
    with pytest.raises(ValueError, match=f"{flag}=True is not supported while pruning"), torch.no_grad():
        model(random_ids(30), **{flag: True})
    with torch.no_grad(), model.disable_pruning():
        assert model(random_ids(30), **{flag: True})[flag.replace("output_", "")] is not None


# ---------------------------------------------------------------------------------- 7. scorers and contexts
@pytest.mark.parametrize(
    "case, output",
    [
        ("R04a [B,n,1]", lambda h: torch.zeros(h.shape[0], h.shape[1], 1)),
        ("R04b [n]", lambda h: torch.zeros(h.shape[1])),
        ("R04c [B,n+1]", lambda h: torch.zeros(h.shape[0], h.shape[1] + 1)),
        ("R04d list", lambda h: [0.0] * h.shape[1]),
        ("R04e [B,n,2]", lambda h: torch.zeros(h.shape[0], h.shape[1], 2)),
        ("R04f 0-d", lambda h: torch.tensor(0.0)),
        ("R04g [1,n] for B=2", lambda h: torch.zeros(1, h.shape[1])),
        ("integer scores", lambda h: torch.zeros(h.shape[:2], dtype=torch.long)),
    ],
)
def test_R04_bad_scorer_output_names_the_expected_shape(case, output):
    model = pruned()

    def bad_scorer(layer, hidden, positions):
        return output(hidden)

    with pytest.raises(ValueError, match=r"scorer .*bad_scorer returned .* expected a floating tensor of shape \[B, n\] = \[2, 40\]"):
        with torch.no_grad(), model.use_scorer(bad_scorer):
            model(random_ids(40, batch=2))


def test_R05b_use_scorer_none_is_refused():
    with pytest.raises(TypeError, match="use_scorer needs a callable"):
        pruned().use_scorer(None)


@pytest.mark.parametrize(
    "case, kwargs, error",
    [
        ("R06f keep_ratio=True", dict(keep_ratio=True), "keep_ratio=True"),
        ("keep_ratio='0.5'", dict(keep_ratio="0.5"), "keep_ratio='0.5'"),
        ("R06h layers='24'", dict(layers="24"), "layers='24'"),
        ("layers=[True]", dict(layers=[True]), "layers"),
        ("layer beyond depth", dict(layers=(2, 9)), "the model has 8 layers"),
        ("layer 0", dict(layers=(0, 2)), ">= 1"),
        ("nan keep ratio", dict(keep_ratio=float("nan")), "keep_ratio=nan"),
        ("window 1.0", dict(local_window_ratio=1.0), "local_window_ratio=1.0"),
    ],
)
def test_R06_use_schedule_refuses_bad_values_at_the_call(case, kwargs, error):
    with pytest.raises((TypeError, ValueError), match=error):
        pruned().use_schedule(**kwargs)


def test_R02b_contexts_exited_out_of_order_restore_the_right_state():
    model = pruned()
    trained = model.controller.scorer.value

    def a(layer, hidden, positions):
        return positions.float()

    outer, inner = model.use_scorer(a), model.use_scorer(recency_scorer)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # closed first, e.g. by a generator finishing late
    assert model.controller.scorer.value is recency_scorer  # the still-open context stays in force
    inner.__exit__(None, None, None)
    assert model.controller.scorer.value is trained


def test_use_schedule_local_window_ratio_changes_the_protected_window():
    model = pruned()
    with torch.no_grad(), model.use_schedule(local_window_ratio=0.5):
        model(random_ids(40))
    assert set(range(20, 40)) <= set(model.last_pruning.kept_positions[6][0].tolist())


# ---------------------------------------------------------------------------------- 8. config
@pytest.mark.parametrize(
    "case, fields, error, match",
    [
        ("C17 inf temperature", dict(gumbel_temperature=float("inf")), ValueError, "gumbel_temperature=inf"),
        ("C83 format 0", dict(format_version=0), ValueError, "format_version=0"),
        ("C84 format -7", dict(format_version=-7), ValueError, "format_version=-7"),
        ("C85 format '1'", dict(format_version="1"), TypeError, "format_version='1'.*expected an integer"),
        ("C86 format 1.0", dict(format_version=1.0), TypeError, "format_version=1.0.*expected an integer"),
        ("newer format", dict(format_version=99), ValueError, "newer than this release reads"),
        ("C87 base name 123", dict(base_model_name_or_path=123), ValueError, "base_model_name_or_path=123"),
        ("C88 base name list", dict(base_model_name_or_path=["a"]), ValueError, "base_model_name_or_path"),
        ("C89 library_version None", dict(library_version=None), ValueError, "library_version=None"),
        ("C90 library_version 42", dict(library_version=42), ValueError, "library_version=42"),
    ],
)
def test_C_config_fields_are_checked(case, fields, error, match):
    with pytest.raises(error, match=match):
        SDTPConfig(**fields)


def test_C71_numpy_layer_indices_are_accepted():
    assert SDTPConfig(prune_layers=[np.int64(2), np.int64(4)]).prune_layers == [2, 4]


@pytest.mark.parametrize(
    "case, fields, match",
    [("C42 num_stages 1e12", dict(num_stages=10**12), r"num_stages=1000000000000 .* expected 1 <= num_stages <= 7"),
     ("C54 pruner_hidden_size 1e12", dict(pruner_hidden_size=10**12), r"pruner_hidden_size=1000000000000 .* <= 1024")],
)
def test_C42_C54_sizes_are_bounded_by_the_model_before_allocation(case, fields, match):
    with pytest.raises(ValueError, match=match):
        get_sdtp_model(tiny_llama(), SDTPConfig(**fields))


def test_C_mut_fields_mutated_after_construction_are_checked_at_attach():
    config = SDTPConfig(**STAGES)
    config.keep_ratio = float("nan")
    with pytest.raises(ValueError, match="keep_ratio=nan"):
        get_sdtp_model(tiny_llama(), config)


def test_C_reuse_one_config_serves_models_of_different_depths():
    config = SDTPConfig(prune_layers=[2, 4])
    deep = get_sdtp_model(tiny_llama(layers=8), config)
    shallow = get_sdtp_model(tiny_llama(layers=6), config)
    assert config.num_hidden_layers is None  # attaching worked on a copy
    assert (deep.sdtp_config.num_hidden_layers, shallow.sdtp_config.num_hidden_layers) == (8, 6)


# ---------------------------------------------------------------------------------- 9. corrupted files
def _saved(tmp_path):
    pruned().save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "case, damage",
    [
        ("A03 truncated weights", lambda p: (p / WEIGHTS_NAME).write_bytes((p / WEIGHTS_NAME).read_bytes()[:500])),
        ("A03b 5-byte weights", lambda p: (p / WEIGHTS_NAME).write_bytes(b"\x00" * 5)),
        ("A03c empty weights", lambda p: (p / WEIGHTS_NAME).write_bytes(b"")),
        ("A15 weights link to another file", lambda p: ((p / WEIGHTS_NAME).unlink(), (p / WEIGHTS_NAME).symlink_to("/etc/passwd"))),
        ("A09 invalid JSON", lambda p: (p / "adapter_config.json").write_text('{"keep_ratio": 0.5, oops}')),
        ("A09b JSON list", lambda p: (p / "adapter_config.json").write_text("[]")),
        ("A09c JSON null", lambda p: (p / "adapter_config.json").write_text("null")),
        ("zero-byte config", lambda p: (p / "adapter_config.json").write_text("")),
    ],
)
def test_A_corrupted_files_are_named(tmp_path, case, damage):
    folder = _saved(tmp_path)
    damage(folder)
    with pytest.raises(CorruptedFileError, match=rf"(adapter_model\.safetensors|adapter_config\.json) in '{folder}'.*corrupted or incomplete"):
        SDTPModel.from_pretrained(tiny_llama(), folder)


def test_A09d_config_with_a_utf8_bom_loads(tmp_path):
    folder = _saved(tmp_path)
    path = folder / "adapter_config.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    SDTPModel.from_pretrained(tiny_llama(), folder)


@pytest.mark.parametrize("size", [10**12, 2_000_000], ids=["A16", "A16b"])
def test_A16_huge_pruner_size_in_the_config_fails_before_allocating(tmp_path, size):
    folder = _saved(tmp_path)
    path = folder / "adapter_config.json"
    data = json.loads(path.read_text())
    data["pruner_hidden_size"] = size
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="pruner_hidden_size"):
        SDTPModel.from_pretrained(tiny_llama(), folder)


# ---------------------------------------------------------------------------------- 10. empty and edge prompts
@pytest.mark.parametrize("call", ["forward", "generate"], ids=["P01a", "P01c"])
def test_P01_empty_prompt_gets_a_clear_error(call):
    model = pruned()
    ids = torch.zeros(1, 0, dtype=torch.long)
    with pytest.raises(ValueError, match="input_ids is empty"), torch.no_grad():
        model(ids) if call == "forward" else model.generate(ids, max_new_tokens=2)


@pytest.mark.parametrize("bad", [128, -1, 10**6], ids=["P13a vocab_size", "P13b negative", "far out"])
def test_P13_out_of_vocabulary_ids_are_named(bad):
    ids = random_ids(30)
    ids[0, 7] = bad
    with pytest.raises(ValueError, match=rf"token id {bad}, outside the model's vocabulary \[0, 128\)"), torch.no_grad():
        pruned()(ids)


# ---------------------------------------------------------------------------------- training inputs
def _rows(n: int = 3, length: int = 40) -> list[dict]:
    return [{"input_ids": random_ids(length, seed=s)[0].tolist(), "target_mask": [i >= 30 for i in range(length)]} for s in range(n)]


@pytest.mark.parametrize(
    "case, rows, error, match",
    [
        ("TR02 empty dataset", [], ValueError, "dataset is empty"),
        ("TR03b all-False target row", _rows() + [{"input_ids": [5] * 40, "target_mask": [False] * 40}], ValueError, "row 3: target_mask selects no token"),
        ("TR05 plain list", "list", TypeError, "datasets.Dataset.from_list"),
        ("TR06 short target_mask", [{"input_ids": [5] * 40, "target_mask": [True] * 30}], ValueError, "row 0: target_mask has 30 entries but input_ids has 40"),
        ("TR07 id out of vocab", [{"input_ids": [5] * 39 + [128], "target_mask": [True] * 40}], ValueError, r"row 0: token id 128 is outside .*\[0, 128\)"),
    ],
)
def test_TR_bad_datasets_are_refused_before_training(tmp_path, case, rows, error, match):
    from datasets import Dataset

    from sdtp_adapter.training.trainer import TrainingArguments, train

    data = _rows() if rows == "list" else Dataset.from_list(rows) if rows else Dataset.from_dict({"input_ids": [], "target_mask": []})
    with pytest.raises(error, match=match):
        train(pruned(), data, TrainingArguments(output_dir=str(tmp_path / "out"), steps=8, save_every=3))
    assert not (tmp_path / "out").exists()  # refused before any checkpoint was written


@pytest.mark.parametrize(
    "case, fields, match",
    [
        ("TR08a inf learning rate", dict(learning_rate=float("inf")), "learning_rate=inf"),
        ("TR08b NaN max_grad_norm", dict(max_grad_norm=float("nan")), "max_grad_norm=nan"),
        ("TR08c steps=True", dict(steps=True), "steps=True"),
        ("TR08c max_grad_norm=-1", dict(max_grad_norm=-1.0), "max_grad_norm=-1.0"),
        ("TR08c learning_rate='1e-3'", dict(learning_rate="1e-3"), "learning_rate='1e-3'"),
        ("TR08c seed='x'", dict(seed="x"), "seed='x'"),
        ("TR08c steps=2.0", dict(steps=2.0), "steps=2.0"),
    ],
)
def test_TR08_training_arguments_are_checked(tmp_path, case, fields, match):
    from sdtp_adapter.training.trainer import TrainingArguments

    with pytest.raises(ValueError, match=match):
        TrainingArguments(output_dir=str(tmp_path), **fields)


def test_TR08a_a_nan_loss_stops_training_without_saving_a_nan_adapter(tmp_path, monkeypatch):
    from datasets import Dataset

    from sdtp_adapter.training import objective, trainer

    real = objective.sdtp_loss
    calls = {"n": 0}

    def diverging(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(objective, "sdtp_loss", diverging)
    with pytest.raises(FloatingPointError, match="step 3.*Last good checkpoint: .*checkpoint-2"):
        trainer.train(pruned(), Dataset.from_list(_rows()), trainer.TrainingArguments(output_dir=str(tmp_path), steps=4, save_every=2, warmup_steps=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


def test_TR09_warm_start_on_nothing_is_refused():
    from sdtp_adapter.training.warm_start import fit_to_saliency

    with pytest.raises(ValueError, match="marked is empty"):
        fit_to_saliency(pruned(), [], epochs=1)


def test_TR12_a_non_empty_output_dir_is_refused_unless_overwrite(tmp_path):
    from datasets import Dataset

    from sdtp_adapter.training.trainer import TrainingArguments, train

    (tmp_path / "checkpoint-8").mkdir()
    args = dict(output_dir=str(tmp_path), steps=2, save_every=0, warmup_steps=1)
    with pytest.raises(ValueError, match="is not empty"):
        train(pruned(), Dataset.from_list(_rows()), TrainingArguments(**args))
    train(pruned(), Dataset.from_list(_rows()), TrainingArguments(**args, overwrite_output_dir=True))
    assert not (tmp_path / "checkpoint-8").exists()


def test_R13_a_pruned_cache_continued_without_the_hooks_gets_a_clear_error():
    model = pruned()
    ids = random_ids(40)
    with torch.no_grad():
        cache = cache_of(model(ids, use_cache=True))
        step = ids[:, -1:]
        with model.disable_pruning(), pytest.raises(ValueError, match="holds a pruned prefill"):
            model(step, **cache_kwarg(cache), use_cache=True)
        base = model.unload()
        with pytest.raises(ValueError, match="holds a pruned prefill"):
            base(step, **cache_kwarg(cache), use_cache=True)


def test_A11_an_adapter_for_another_base_of_the_same_shape_warns_with_both_names(tmp_path):
    get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES, base_model_name_or_path="org/base-A")).save_pretrained(tmp_path)
    other = tiny_llama()
    other.config._name_or_path = "other/base-B"
    with pytest.warns(UserWarning, match="trained for 'org/base-A' but is attached to 'other/base-B'"):
        SDTPModel.from_pretrained(other, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = tiny_llama()
        same.config._name_or_path = "org/base-A"
        SDTPModel.from_pretrained(same, tmp_path)


def test_SEC1_model_card_front_matter_cannot_be_injected(tmp_path):
    import yaml

    from sdtp_adapter.hub import write_model_card

    config = SDTPConfig(**STAGES, base_model_name_or_path="org/x\nlicense: evil-license\npipeline_tag: text-to-image")
    card = write_model_card(tmp_path, config, "results", "reproduce").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == config.base_model_name_or_path
    assert "license" not in front and "pipeline_tag" not in front


def test_A13c_a_home_relative_adapter_path_is_local(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        SDTPModel.from_pretrained(tiny_llama(), "~/my-adapter")
    pruned().save_pretrained(tmp_path / "my-adapter")
    SDTPModel.from_pretrained(tiny_llama(), "~/my-adapter")


@pytest.mark.parametrize(
    "case, name, env",
    [
        ("A13a missing org/name", "myorg/my-adapter", {"HF_ENDPOINT": "http://127.0.0.1:9"}),
        ("A13b mistyped relative folder", "adapters/mine", {"HF_ENDPOINT": "http://127.0.0.1:9"}),
        ("A13g org/name offline", "myorg/my-adapter", {"HF_HUB_OFFLINE": "1"}),
        ("a/b/c local-looking", "adapters/mine/v2", {}),
        ("./x", "./my-adapter", {}),
    ],
)
def test_A13_a_missing_adapter_says_it_is_not_a_folder_and_how_the_hub_was_tried(tmp_path, monkeypatch, case, name, env):
    """No network is reachable here: a closed local port stands in for an unreachable Hub."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", env.get("HF_HUB_OFFLINE") == "1")
    monkeypatch.setattr(hub_constants, "ENDPOINT", env.get("HF_ENDPOINT", hub_constants.ENDPOINT))
    with pytest.raises(FileNotFoundError, match=rf"adapter '{name}' is not an existing folder \(relative paths start from"):
        SDTPModel.from_pretrained(tiny_llama(), name)
