"""Sharing on the Hub through the real ``huggingface_hub`` client, against a local in-memory Hub
(``hub_server.py``): ``sdtp push`` / ``sdtp pull`` and ``SDTPModel.from_pretrained`` over HTTP, branches,
pull requests, a corrupted download, and offline use of what was pulled.

The client is pointed at the server in-process: ``huggingface_hub.constants`` reads ``HF_ENDPOINT``,
``HF_HUB_CACHE``, ``HF_HUB_DISABLE_XET``... once at import, and every call used here reads them back from
that module at call time (``HfApi()``, ``snapshot_download`` and ``hf_hub_download`` build their URLs from
``constants.ENDPOINT`` / ``constants.HUGGINGFACE_CO_URL_TEMPLATE``; ``is_xet_available()`` checks
``constants.HF_HUB_DISABLE_XET``), so setting the environment *and* those attributes is enough; the one
module-level copy (``huggingface_hub.hf_api.api``, behind the bare ``model_info()``-style functions) is not
used by this library (``huggingface_hub.utils.tqdm`` keeps its own copy of ``HF_HUB_DISABLE_PROGRESS_BARS``,
patched too so that errors on stderr stay one line). A subprocess per call would re-import torch each time: seconds per step here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants as hub_constants
import pytest
import torch
from huggingface_hub import ModelCard

from conftest import tiny_llama
from hub_server import HubServer
from test_hub import saved_adapter
from sdtp_adapter import SDTPConfig, SDTPModel, cli
from sdtp_adapter.config import CONFIG_NAME
from sdtp_adapter.persistence import WEIGHTS_NAME, load_adapter

REPO = "org/name"
BASE = "org/base-model"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running local Hub; the client points at it with a fresh cache, a dummy token, no telemetry, no Xet."""
    server = HubServer()
    url = server.start()
    home = tmp_path / "hf_home"
    settings = {  # environment variable -> (constants attribute, value there)
        "HF_ENDPOINT": ("ENDPOINT", url),
        "HF_HOME": ("HF_HOME", str(home)),
        "HF_HUB_CACHE": ("HF_HUB_CACHE", str(home / "hub")),
        "HF_TOKEN_PATH": ("HF_TOKEN_PATH", str(home / "token")),
        "HF_HUB_DISABLE_TELEMETRY": ("HF_HUB_DISABLE_TELEMETRY", True),
        "HF_HUB_DISABLE_XET": ("HF_HUB_DISABLE_XET", True),  # regular uploads and plain HTTP downloads
        "HF_HUB_OFFLINE": ("HF_HUB_OFFLINE", False),
    }
    for env, (attribute, value) in settings.items():
        monkeypatch.setenv(env, str(int(value)) if isinstance(value, bool) else value)
        monkeypatch.setattr(hub_constants, attribute, value)
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hub_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setenv("HF_TOKEN", "hf_dummy_test_token")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # its module keeps a copy, read at import:
    monkeypatch.setattr(sys.modules["huggingface_hub.utils.tqdm"], "HF_HUB_DISABLE_PROGRESS_BARS", True)
    monkeypatch.chdir(tmp_path)
    yield server
    server.stop()


def adapter_folder(folder: Path, seed: int) -> dict[str, torch.Tensor]:
    """Save an adapter for ``BASE`` with random (seeded) weights into ``folder``; returns its state dict."""
    return saved_adapter(folder, seed, base_name=BASE)


def loaded_state(**kwargs) -> tuple[SDTPConfig, dict[str, torch.Tensor]]:
    """``SDTPModel.from_pretrained`` on a fresh base; returns ``(config, pruner state)``."""
    base = tiny_llama()
    base.config._name_or_path = BASE
    model = SDTPModel.from_pretrained(base, REPO, **kwargs)
    state = {k: v.clone() for k, v in model.pruners.state_dict().items()}
    model.unload()
    return model.sdtp_config, state


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def push(folder: Path, *options: str, capsys) -> str:
    cli.main(["push", str(folder), REPO, *options])
    return capsys.readouterr().out.strip()


def test_sdtp_push_then_from_pretrained_gives_the_same_adapter_and_a_valid_card(hub, tmp_path, capsys):
    state = adapter_folder(tmp_path / "v1", seed=1)
    url = push(tmp_path / "v1", capsys=capsys)
    assert url.startswith(f"{hub.url}/{REPO}/commit/")
    config, loaded = loaded_state()
    assert same(loaded, state) and config == SDTPConfig.from_pretrained(tmp_path / "v1")
    card = ModelCard.load(huggingface_hub.hf_hub_download(REPO, "README.md"))
    assert card.data.library_name == "sdtp-adapter" and card.data.base_model == BASE
    assert f"'{REPO}'" in card.text  # the usage example names the repo
    files = huggingface_hub.HfApi().list_repo_files(REPO)
    assert sorted(files) == [".gitattributes", "README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert not any("xet" in path for _, path in hub.requests)


def test_push_to_a_branch_and_a_pull_request_then_pull_each_back(hub, tmp_path, capsys):
    first = adapter_folder(tmp_path / "v1", seed=1)
    second = adapter_folder(tmp_path / "v2", seed=2)
    third = adapter_folder(tmp_path / "v3", seed=3)
    push(tmp_path / "v1", capsys=capsys)
    assert push(tmp_path / "v2", "--revision", "v2", capsys=capsys).startswith(f"{hub.url}/{REPO}/commit/")
    assert push(tmp_path / "v3", "--create-pr", capsys=capsys) == f"{hub.url}/{REPO}/discussions/1"

    cli.main(["pull", REPO, "--revision", "v2", "--to", "pulled"])
    assert Path(capsys.readouterr().out.strip()) == (tmp_path / "pulled").resolve()
    assert {CONFIG_NAME, WEIGHTS_NAME, "README.md"} <= {p.name for p in (tmp_path / "pulled").iterdir()}
    assert same(load_adapter(tmp_path / "pulled")[1], second)

    assert same(loaded_state()[1], first)  # main still holds the first version
    assert same(loaded_state(revision="v2")[1], second)
    assert same(loaded_state(revision="refs/pr/1")[1], third)


@pytest.mark.parametrize(
    "damage, error, message",
    [
        (lambda b: b[:-10], FileNotFoundError, r"Consistency check failed.*adapter_model\.safetensors"),  # bytes missing
        (lambda b: b"\xff" * 8 + b[8:], ValueError, r"adapter_model\.safetensors in .* cannot be read"),  # same size
    ],
    ids=["truncated", "same-size"],
)
def test_a_corrupted_download_is_refused_naming_the_file(hub, tmp_path, capsys, damage, error, message):
    adapter_folder(tmp_path / "v1", seed=1)
    push(tmp_path / "v1", capsys=capsys)
    hub.corrupt(REPO, WEIGHTS_NAME, damage=damage)
    with pytest.raises(error, match=message):
        loaded_state()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["pull", REPO, "--to", "pulled"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and WEIGHTS_NAME in err and len(err.strip().splitlines()) == 1


def test_offline_after_a_pull_reads_the_cache_without_the_server(hub, tmp_path, capsys, monkeypatch):
    state = adapter_folder(tmp_path / "v1", seed=1)
    push(tmp_path / "v1", capsys=capsys)
    cli.main(["pull", REPO])
    folder = capsys.readouterr().out.strip()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    served = len(hub.requests)
    assert same(loaded_state()[1], state)
    assert len(hub.requests) == served  # offline mode is honoured: not even a revision look-up
    hub.stop()
    assert same(loaded_state()[1], state)
    cli.main(["pull", REPO])
    assert capsys.readouterr().out.strip() == folder



def test_a_pull_request_against_a_branch(hub, tmp_path, capsys):
    first, second = adapter_folder(tmp_path / "v1", seed=1), adapter_folder(tmp_path / "v2", seed=2)
    push(tmp_path / "v1", "--revision", "v2", capsys=capsys)
    assert push(tmp_path / "v2", "--revision", "v2", "--create-pr", capsys=capsys) == f"{hub.url}/{REPO}/discussions/1"
    assert same(loaded_state(revision="v2")[1], first) and same(loaded_state(revision="refs/pr/1")[1], second)
