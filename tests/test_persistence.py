"""Adapters save only their own weights, atomically, and reload bit for bit."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, SDTPModel, get_sdtp_model
from sdtp_adapter.persistence import WEIGHTS_NAME

CONFIG = dict(prune_layers=[2, 4, 6], keep_ratio=0.7)


def test_save_writes_only_the_adapter_and_reload_is_exact(tmp_path):
    model = get_sdtp_model(tiny_llama(seed=0), SDTPConfig(**CONFIG))
    for p in model.pruners.parameters():
        torch.nn.init.normal_(p)
    ids = random_ids(60, batch=2)
    with torch.no_grad():
        ref = model(ids).logits
        ref_tokens = model.generate(ids, max_new_tokens=8, do_sample=False)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", WEIGHTS_NAME]
    keys = set(load_file(tmp_path / WEIGHTS_NAME))
    assert keys == set(model.pruners.state_dict()) and all(k.split(".")[0] in {"2", "4", "6"} for k in keys)

    fresh = SDTPModel.from_pretrained(tiny_llama(seed=0), tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, ref)
        assert torch.equal(fresh.generate(ids, max_new_tokens=8, do_sample=False), ref_tokens)


def test_loading_onto_a_different_base_fails_clearly(tmp_path):
    get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        SDTPModel.from_pretrained(tiny_llama(layers=10), tmp_path)


def test_missing_or_mismatched_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        SDTPModel.from_pretrained(tiny_llama(), tmp_path / "nope")
    get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG)).save_pretrained(tmp_path)
    config = SDTPConfig.from_pretrained(tmp_path)
    config.prune_layers = [2, 4]
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="different saves"):
        SDTPModel.from_pretrained(tiny_llama(), tmp_path)
    # weights written without the embedded config (older releases) are still matched to the config
    weights = load_file(tmp_path / WEIGHTS_NAME)
    save_file(weights, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="unexpected"):
        SDTPModel.from_pretrained(tiny_llama(), tmp_path)


def test_interrupted_save_keeps_the_previous_adapter(tmp_path, monkeypatch):
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG))
    model.save_pretrained(tmp_path)
    before = (tmp_path / WEIGHTS_NAME).read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("sdtp_adapter.persistence.save_file", boom)
    with pytest.raises(OSError):
        model.save_pretrained(tmp_path)
    assert (tmp_path / WEIGHTS_NAME).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", WEIGHTS_NAME]


def test_base_is_frozen_and_trainable_count_is_the_modules():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG))
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == sum(p.numel() for p in model.pruners.parameters())
    assert total == trainable + sum(p.numel() for p in model.base_model.parameters())
    assert model.config is model.base_model.config and model.device == model.base_model.device


def test_unload_restores_the_base_model():
    base = tiny_llama()
    ids = random_ids(40)
    with torch.no_grad():
        ref = base(ids).logits
    model = get_sdtp_model(base, SDTPConfig(**CONFIG))
    unloaded = model.unload()
    with torch.no_grad():
        assert torch.equal(unloaded(ids).logits, ref)


def test_unsupported_architecture_lists_supported():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match=r"model_type='gpt2' is not supported.*llama"):
        get_sdtp_model(gpt2)


def test_push_to_hub_uploads_the_saved_adapter_folder(monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, private, exist_ok)

        def create_commit(self, repo_id, operations, commit_message, revision=None, create_pr=False):
            calls["files"] = sorted(op.path_in_repo for op in operations)
            folder = os.path.dirname(operations[0].path_or_fileobj)
            calls["config"] = SDTPConfig.from_pretrained(folder)
            return f"https://hub.example/{repo_id}/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG))
    url = model.push_to_hub("me/tiny-sdtp", private=True, token="t")
    assert url.endswith("me/tiny-sdtp/commit/1") and calls["repo"] == ("me/tiny-sdtp", True, True)
    assert calls["files"] == ["README.md", "adapter_config.json", WEIGHTS_NAME] and calls["config"].prune_layers == [2, 4, 6]


def test_from_pretrained_resolves_a_hub_repo_id(monkeypatch, tmp_path):
    import huggingface_hub

    get_sdtp_model(tiny_llama(), SDTPConfig(**CONFIG)).save_pretrained(tmp_path / "snap")
    seen = {}

    def fake_snapshot(repo_id, revision=None, token=None, allow_patterns=None, **hub_options):
        seen["repo"] = repo_id
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    model = SDTPModel.from_pretrained(tiny_llama(), "me/tiny-sdtp")
    assert seen["repo"] == "me/tiny-sdtp" and sorted(model.pruners) == ["2", "4", "6"]
