"""A user's own data as a ``datasets.Dataset``: a Hub dataset, a saved dataset folder, or local files.

``load_rows`` is what ``sdtp train --dataset`` and ``sdtp bench ... --dataset`` read; it is
``datasets.load_dataset`` (or ``load_from_disk``) with the forms checked and every failure turned into
one error that names the source.
"""

from __future__ import annotations

import os
from pathlib import Path

# file suffix -> the datasets builder that reads it
FILE_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_rows(source: str, *, config: str | None = None, split: str = "train", revision: str | None = None):
    """The rows of ``source``.

    Args:
        source: a local file (``.txt``: the whole file is one row, column ``text``; ``.jsonl`` / ``.json`` /
            ``.parquet`` / ``.csv``), a folder written by ``Dataset.save_to_disk``, a folder of such
            files, or a ``datasets`` Hub name.
        config: the dataset configuration (Hub datasets with several).
        split: which split.
        revision: Hub branch, tag or commit.
    Returns:
        a ``datasets.Dataset``.
    Raises:
        FileNotFoundError: a path that does not exist, or a Hub name that cannot be fetched.
        ValueError: an unknown file type or split, or an empty dataset.
    """
    import datasets

    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"dataset={source!r} is invalid: expected a file, a folder or a datasets Hub name")
    path = Path(os.path.expanduser(source))
    try:
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise ValueError(f"dataset={source!r} has suffix {path.suffix!r}; allowed files: {sorted(FILE_BUILDERS)}")
            options = {"sample_by": "document"} if builder == "text" else {}  # a text file is one document
            rows = datasets.load_dataset(builder, data_files={"train": str(path)}, split="train", **options)
        elif path.is_dir() and (path / "dataset_info.json").is_file():
            rows = datasets.load_from_disk(str(path))
            if isinstance(rows, datasets.DatasetDict):
                rows = _pick_split(rows, split, source)
        elif path.is_dir():
            rows = _pick_split(datasets.load_dataset(str(path)), split, source)
        elif source.startswith((".", "/", "~")) or path.suffix.lower() in FILE_BUILDERS or (path.suffix and "/" not in source):
            # a path, or a bare "name.ext": a file name, never a Hub dataset ("owner/name")
            raise FileNotFoundError(f"dataset={source!r} does not exist; allowed: a file {sorted(FILE_BUILDERS)}, a folder or a Hub name")
        else:
            rows = datasets.load_dataset(source, config, split=split, revision=revision)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many types for "cannot fetch"
        raise FileNotFoundError(f"cannot load dataset={source!r}: {type(err).__name__}: {err}") from err
    if len(rows) == 0:
        raise ValueError(f"dataset={source!r} (split {split!r}) is empty: it needs at least one row")
    return rows


def _pick_split(splits, split: str, source: str):
    if split not in splits:
        raise ValueError(f"split={split!r} is not in dataset={source!r}; allowed: {sorted(splits)}")
    return splits[split]


def texts_of(rows, text_column: str = "text") -> list[str]:
    """The non-empty strings of ``rows[text_column]``.

    Raises:
        ValueError: the column is missing (the error lists the columns) or holds no non-empty string.
    """
    if text_column not in rows.column_names:
        raise ValueError(f"text_column={text_column!r} is not a column of the dataset; its columns: {rows.column_names}")
    texts = [t for t in rows[text_column] if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError(f"text_column={text_column!r} holds no non-empty text")
    return texts
