"""Writing and reading files safely: atomic replacement, JSON objects with errors that name the file.

Every module that writes results, adapters or checkpoints goes through here, so a crash never leaves a
half-written file behind and a damaged file is reported by name instead of by a parser's traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable


class CorruptedFileError(ValueError):
    """A file that exists but cannot be read as what it should be."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def publish(tmp: str | os.PathLike, path: Path) -> None:
    """Rename a finished temp file over ``path`` with ordinary permissions (``mkstemp`` makes 0600)."""
    ordinary_permissions(tmp)
    os.replace(tmp, path)


def ordinary_permissions(path: str | os.PathLike) -> None:
    """Give a file the mode a plain ``open`` would (0666 less the umask): ``mkstemp`` and safetensors'
    ``save_file`` (also inside accelerate's ``save_state``) create files readable by their owner only."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def read_json_object(path: Path, what: str) -> dict:
    """Parse ``path`` as a JSON object (a UTF-8 BOM, as some editors write, is accepted).

    Raises:
        CorruptedFileError: naming the file, its folder and ``what`` it should have been.
    """
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptedFileError(
            f"{path.name} in {str(path.parent)!r} is not valid JSON ({err}): the {what} is corrupted or incomplete"
        ) from None
    if not isinstance(data, dict):
        raise CorruptedFileError(
            f"{path.name} in {str(path.parent)!r} holds a JSON {type(data).__name__}, not an object: "
            f"the {what} is corrupted or incomplete"
        )
    return data


def sha256_hex(chunks: Iterable[bytes]) -> str:
    """SHA-256 (hex) of the concatenated ``chunks``: one digest helper for files, token ids, tensors and markings."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    with open(path, "rb") as fh:
        return sha256_hex(iter(lambda: fh.read(1 << 20), b""))
