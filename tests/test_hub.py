"""Sharing on the Hub, offline: loading through the real ``huggingface_hub`` client from a cache laid out
as it lays one out, pushing through a patched ``HfApi``, the ``sdtp push`` / ``sdtp pull`` commands, and
the compatibility checks on load. No network is reachable here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants as hub_constants
import pytest
import torch
import yaml
from huggingface_hub import HfApi

from conftest import tiny_llama
from sdtp_adapter import SDTPConfig, SDTPModel, __version__, cli, get_sdtp_model
from sdtp_adapter.config import CONFIG_NAME
from sdtp_adapter.persistence import WEIGHTS_NAME, load_adapter

REPO = "org/name"
STAGES = dict(prune_layers=[2, 4, 6], keep_ratio=0.7)
MAIN_HASH, BRANCH_HASH = "a" * 40, "b" * 40


def saved_adapter(folder: Path, seed: int, base_name: str | None = None) -> dict[str, torch.Tensor]:
    """Save an adapter with random (seeded) weights into ``folder`` (for a base named ``base_name``, if
    given); returns its state dict."""
    base = tiny_llama()
    if base_name is not None:
        base.config._name_or_path = base_name
    model = get_sdtp_model(base, SDTPConfig(**STAGES))
    torch.manual_seed(seed)
    for param in model.pruners.parameters():
        torch.nn.init.normal_(param)
    model.save_pretrained(folder)
    state = {k: v.clone() for k, v in model.pruners.state_dict().items()}
    model.unload()
    return state


def add_snapshot(repo_dir: Path, commit: str, source: Path, prefix: str = "") -> None:
    """Put ``source``'s files in ``snapshots/<commit>/<prefix>`` as symlinks into ``blobs/`` (huggingface_hub's layout)."""
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo_dir / "snapshots" / commit / prefix / file.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def set_ref(repo_dir: Path, revision: str, commit: str) -> None:
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hub cache holding ``org/name``: ``main`` (adapter seed 1, plus seed 3 under ``sub/``) and the
    branch ``branch`` (seed 2); offline mode on. Returns ``(cache_dir, {variant: state dict})``."""
    cache = tmp_path / "hub"
    repo_dir = cache / "models--org--name"
    states = {}
    for variant, seed in (("main", 1), ("branch", 2), ("sub", 3)):
        states[variant] = saved_adapter(tmp_path / "src" / variant, seed)
    add_snapshot(repo_dir, MAIN_HASH, tmp_path / "src" / "main")
    add_snapshot(repo_dir, MAIN_HASH, tmp_path / "src" / "sub", prefix="sub")
    add_snapshot(repo_dir, BRANCH_HASH, tmp_path / "src" / "branch")
    set_ref(repo_dir, "main", MAIN_HASH)
    set_ref(repo_dir, "branch", BRANCH_HASH)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # constants are read at import
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # a closed port: any request fails
    monkeypatch.chdir(tmp_path)
    return cache, states


def assert_weights(model: SDTPModel, expected: dict[str, torch.Tensor]) -> None:
    found = model.pruners.state_dict()
    assert sorted(found) == sorted(expected)
    assert all(torch.equal(found[k], expected[k]) for k in expected)


# ------------------------------------------------------------------------------------------ the cache itself
def test_the_cache_layout_is_the_one_huggingface_hub_reads(hub_cache):
    cache, _ = hub_cache
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    main = try_to_load_from_cache(REPO, CONFIG_NAME, cache_dir=cache)
    branch = try_to_load_from_cache(REPO, WEIGHTS_NAME, cache_dir=cache, revision="branch")
    sub = try_to_load_from_cache(REPO, f"sub/{CONFIG_NAME}", cache_dir=cache)
    assert Path(main).parent.name == MAIN_HASH and Path(branch).parent.name == BRANCH_HASH
    assert Path(sub).parent.parent.name == MAIN_HASH
    assert Path(snapshot_download(REPO, cache_dir=cache, local_files_only=True)).name == MAIN_HASH
    assert Path(snapshot_download(REPO, revision="branch", local_files_only=True)).name == BRANCH_HASH  # HF_HUB_CACHE


# ------------------------------------------------------------------------------------------ from_pretrained
@pytest.mark.parametrize(
    "kwargs, variant",
    [({}, "main"), ({"revision": "branch"}, "branch"), ({"subfolder": "sub"}, "sub"), ({"revision": BRANCH_HASH}, "branch")],
)
def test_from_pretrained_resolves_repo_ids_offline_from_the_cache(hub_cache, kwargs, variant):
    _, states = hub_cache
    assert_weights(SDTPModel.from_pretrained(tiny_llama(), REPO, **kwargs), states[variant])


def test_explicit_cache_dir_and_local_files_only(hub_cache, monkeypatch):
    cache, states = hub_cache
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache.parent / "elsewhere"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # local_files_only alone keeps it off the network
    model = SDTPModel.from_pretrained(tiny_llama(), REPO, revision="branch", cache_dir=cache, local_files_only=True)
    assert_weights(model, states["branch"])


def test_a_repo_missing_from_the_cache_offline_says_it_is_not_a_folder(hub_cache):
    with pytest.raises(FileNotFoundError, match=r"adapter 'org/other' is not an existing folder \(relative paths start from.*LocalEntryNotFoundError"):
        SDTPModel.from_pretrained(tiny_llama(), "org/other")
    with pytest.raises(FileNotFoundError, match="not an existing folder.*revision 'no-such-branch' it could not be fetched"):
        SDTPModel.from_pretrained(tiny_llama(), REPO, revision="no-such-branch")


@pytest.mark.parametrize("name", ["./my-adapter", "~/my-adapter", "/abs/my-adapter", "a/b/c", "org/name/", "my-adapter"])
def test_local_looking_paths_never_reach_the_hub(tmp_path, monkeypatch, name):
    def no_hub(*args, **kwargs):
        raise AssertionError(f"snapshot_download called for {name!r}")

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    with pytest.raises(FileNotFoundError, match=r"is not an existing folder \(relative paths start from"):
        SDTPModel.from_pretrained(tiny_llama(), name)


def test_an_invalid_repo_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"adapter 'org/bad name!' is not an existing folder.*HFValidationError"):
        SDTPModel.from_pretrained(tiny_llama(), "org/bad name!")


def test_a_local_folder_wins_and_subfolder_applies_inside_it(hub_cache, tmp_path):
    state = saved_adapter(tmp_path / "org" / "name" / "sub", seed=7)  # ./org/name exists: local, not the Hub
    assert_weights(SDTPModel.from_pretrained(tiny_llama(), "org/name", subfolder="sub"), state)
    with pytest.raises(FileNotFoundError, match="adapter folder .* does not exist"):
        SDTPModel.from_pretrained(tiny_llama(), "org/name", subfolder="missing")


# ------------------------------------------------------------------------------------------ push
class Recorder:
    """Replaces ``HfApi``'s network methods; keeps a copy of each uploaded folder."""

    def __init__(self, monkeypatch, tmp_path: Path):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.uploaded = tmp_path / "uploaded"
        recorder = self

        def create_repo(api, repo_id, **kwargs):
            recorder.calls.append(("create_repo", (repo_id,), kwargs))
            return f"https://hub.example/{repo_id}"

        def create_branch(api, repo_id, **kwargs):
            recorder.calls.append(("create_branch", (repo_id,), kwargs))

        def create_commit(api, **kwargs):
            recorder.calls.append(("create_commit", (), kwargs))
            recorder.uploaded.mkdir()
            for op in kwargs["operations"]:
                shutil.copy(op.path_or_fileobj, recorder.uploaded / op.path_in_repo)
            return f"https://hub.example/{kwargs['repo_id']}/commit/1"

        for name, fn in (("create_repo", create_repo), ("create_branch", create_branch), ("create_commit", create_commit)):
            monkeypatch.setattr(HfApi, name, fn)

    def named(self, name: str) -> list[tuple[tuple, dict]]:
        return [(args, kwargs) for call, args, kwargs in self.calls if call == name]

    def front_matter(self) -> dict:
        return yaml.safe_load((self.uploaded / "README.md").read_text().split("---")[1])


def test_push_to_hub_uploads_config_weights_and_a_model_card(tmp_path, monkeypatch):
    hub = Recorder(monkeypatch, tmp_path)
    base = tiny_llama()
    base.config._name_or_path = "org/base-model"
    model = get_sdtp_model(base, SDTPConfig(**STAGES))
    url = model.push_to_hub("me/tiny-sdtp", private=True, revision="v2", commit_message="first", token="t")
    assert url == "https://hub.example/me/tiny-sdtp/commit/1"
    assert hub.named("create_repo") == [(("me/tiny-sdtp",), {"private": True, "exist_ok": True})]
    assert hub.named("create_branch") == [(("me/tiny-sdtp",), {"branch": "v2", "exist_ok": True})]
    (_, upload), = hub.named("create_commit")
    assert upload["revision"] == "v2" and upload["commit_message"] == "first" and upload["create_pr"] is False
    assert sorted(os.listdir(hub.uploaded)) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    front = hub.front_matter()
    assert front == {"base_model": "org/base-model", "library_name": "sdtp-adapter", "tags": ["sdtp", "token-pruning", "prefill"]}
    body = (hub.uploaded / "README.md").read_text()
    assert "Stages: [2, 4, 6]; keep ratio 0.7" in body and "'me/tiny-sdtp'" in body
    config, weights = load_adapter(hub.uploaded)
    assert config == model.sdtp_config
    assert all(torch.equal(weights[k], v) for k, v in model.pruners.state_dict().items())


def test_push_with_create_pr_makes_no_branch(tmp_path, monkeypatch):
    hub = Recorder(monkeypatch, tmp_path)
    get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES)).push_to_hub("me/tiny-sdtp", revision="v2", create_pr=True)
    assert hub.named("create_branch") == [] and hub.named("create_commit")[0][1]["create_pr"] is True
    assert hub.named("create_repo")[0][1]["private"] is None  # an existing repo keeps its visibility


def test_push_refuses_an_invalid_repo_id_before_any_call(tmp_path, monkeypatch):
    hub = Recorder(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match="bad id!"):
        get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES)).push_to_hub("me/bad id!")
    assert hub.calls == []


def test_sdtp_push_uploads_a_folder_with_its_eval_results_summary(tmp_path, monkeypatch, capsys):
    hub = Recorder(monkeypatch, tmp_path)
    folder = tmp_path / "adapter"
    state = saved_adapter(folder, seed=4)
    rows = [{"method": "base (unpruned)", "kept_share": 1.0, "prefill_speedup": 1.0, "delta_nll_pct": 0.0, "top1": 1.0},
            {"method": "SDTP (trained)", "kept_share": 0.59, "prefill_speedup": 1.69, "delta_nll_pct": 1.35, "top1": 0.911}]
    (folder / "eval_results.json").write_text(json.dumps(rows))
    cli.main(["push", str(folder), "me/tiny-sdtp", "--private", "--create-pr", "--message", "m"])
    assert capsys.readouterr().out.strip() == "https://hub.example/me/tiny-sdtp/commit/1"
    (_, upload), = hub.named("create_commit")
    assert upload["create_pr"] is True and upload["commit_message"] == "m" and hub.named("create_repo")[0][1]["private"] is True
    assert sorted(os.listdir(hub.uploaded)) == ["README.md", CONFIG_NAME, WEIGHTS_NAME, "eval_results.json"]
    body = (hub.uploaded / "README.md").read_text()
    assert "| SDTP (trained) | 0.59 | 1.69x | +1.35% | 0.911 |" in body
    assert hub.front_matter()["library_name"] == "sdtp-adapter"
    _, weights = load_adapter(hub.uploaded)
    assert all(torch.equal(weights[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    "argv, message",
    [(["push", "missing-folder", "me/x"], "does not exist"), (["pull", "org/not-cached"], "cannot fetch adapter 'org/not-cached'")],
)
def test_sdtp_push_and_pull_user_errors_are_one_line(hub_cache, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_sdtp_pull_prints_the_cached_folder_offline(hub_cache, capsys):
    cli.main(["pull", REPO, "--revision", "branch"])
    assert Path(capsys.readouterr().out.strip()).name == BRANCH_HASH


# ------------------------------------------------------------------------------------------ compatibility
def test_a_depth_mismatch_names_both_models_and_both_values(tmp_path):
    base = tiny_llama(layers=8)
    base.config._name_or_path = "org/eight-layers"
    get_sdtp_model(base, SDTPConfig(**STAGES)).save_pretrained(tmp_path)
    other = tiny_llama(layers=6)
    other.config._name_or_path = "org/six-layers"
    with pytest.raises(ValueError, match=r"num_hidden_layers=8.*org/eight-layers.*'org/six-layers' \(num_hidden_layers=6\)"):
        SDTPModel.from_pretrained(other, tmp_path)


def test_another_base_with_the_same_shape_warns_naming_both(tmp_path):
    base = tiny_llama()
    base.config._name_or_path = "org/base-A"
    get_sdtp_model(base, SDTPConfig(**STAGES)).save_pretrained(tmp_path)
    other = tiny_llama()
    other.config._name_or_path = "org/base-B"
    with pytest.warns(UserWarning, match="trained for 'org/base-A' but is attached to 'org/base-B'"):
        SDTPModel.from_pretrained(other, tmp_path)


def _rewrite_config(folder: Path, **changes) -> None:
    """Edit ``adapter_config.json`` (and the copy in the weights would differ: only used on errors raised first)."""
    data = json.loads((folder / CONFIG_NAME).read_text())
    data.update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(data))


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"format_version": 2, "library_version": "0.9.0"}, r"format_version=2.*library_version='0\.9\.0'.*upgrade"),
        ({"library_version": "99.0.0"}, rf"library_version='99\.0\.0'.*newer major version than this release \({__version__}"),
        ({"format_version": 3, "library_version": "5.0.0", "new_field": 1}, r"format_version=3.*library_version='5\.0\.0'"),
    ],
)
def test_an_adapter_from_a_newer_release_is_refused_naming_the_version(tmp_path, changes, pattern):
    get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES)).save_pretrained(tmp_path)
    _rewrite_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=pattern):
        SDTPModel.from_pretrained(tiny_llama(), tmp_path)


def test_an_older_or_same_major_library_version_loads():
    for version in ("0.0.1", __version__, "0.99.0", "0.2.0.dev1"):
        assert SDTPConfig(library_version=version).library_version == version


def test_the_hub_module_names_the_same_weights_file_as_persistence():
    from sdtp_adapter import hub

    assert hub.WEIGHTS_FILE == WEIGHTS_NAME and CONFIG_NAME in hub.ADAPTER_FILES
