"""Figure output shared by the benchmark sections: headless backend, atomic PNG writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..files import publish


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend (benchmarks run on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, name: str, directory: Path) -> Path:
    """Save ``fig`` as ``<directory>/<name>`` through a temp file and a rename, then close it."""
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        publish(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
