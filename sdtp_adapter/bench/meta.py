"""Where, when and with what a benchmark ran (stored next to every result so each figure is
traceable), and where the results go.

Results go to ``--out DIR`` (default ``./sdtp-bench``, under the current directory: an installed
package never writes into its own source tree); the page regenerated from them sits next to that
folder, named after it (``report_path``): ``--out docs/benchmarks`` rewrites the repository's
``docs/benchmarks.md``. Light: no torch at import time (``sdtp bench --help`` reads ``DEFAULT_OUT``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
from pathlib import Path

# the repository's published results (docs/benchmarks.md is generated from them); for documentation
# and recipes that read them: nothing writes here unless asked with ``--out docs/benchmarks``
REPO_RESULTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
DEFAULT_OUT = "sdtp-bench"  # relative: under the directory the command runs in
PACKAGES = ("torch", "transformers", "peft", "sdtp-adapter", "llmlingua", "kvpress")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def add_out_argument(parser: argparse.ArgumentParser, page: bool = True) -> None:
    """``--out DIR`` on a section (or ``report``) parser; ``page``: the command also regenerates ``DIR.md``."""
    regenerated = (
        "; the page DIR.md next to it is regenerated (`--out docs/benchmarks`: the repository's docs/benchmarks.md)"
        if page else ""
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR",
        help=f"results folder (JSON + PNGs), relative to the current directory{regenerated} (default: %(default)s)",
    )


def results_dir(args: argparse.Namespace) -> Path:
    """The folder a section writes to: ``args.out``, else ``./sdtp-bench`` (never the package's own tree)."""
    return Path(os.path.expanduser(getattr(args, "out", None) or DEFAULT_OUT))


def report_path(directory: Path) -> Path:
    """The page regenerated from ``directory``: next to it, named after it (``docs/benchmarks`` -> ``docs/benchmarks.md``).

    Raises:
        ValueError: ``directory`` has no name (the filesystem root).
    """
    resolved = Path(directory).resolve()
    if not resolved.name:
        raise ValueError(
            f"--out {str(directory)!r} has no folder name to name the page after; pass a folder such as ./sdtp-bench"
        )
    return resolved.parent / f"{resolved.name}.md"


def run_meta(command: str, device: str = "cpu") -> dict:
    """Date, machine, library versions and the exact command of a benchmark run."""
    import torch  # here, not at the top: ``sdtp bench --help`` imports this module

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if device.startswith("cuda"):
        machine = f"{torch.cuda.get_device_name()} (GPU)"
    else:
        machine = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "command": command,
    }


def meta_lines(meta: dict) -> list[str]:
    """Markdown bullet lines for a section's ``meta``."""
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    return [
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']}; {meta['platform']}, Python {meta['python']}",
        f"- versions: {versions}",
        f"- command: `{meta['command']}`",
    ]


def write_results(section: str, meta: dict, results, directory: Path) -> Path:
    """Atomically write ``<directory>/<section>.json``."""
    from ..files import atomic_write_bytes

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{section}.json"
    atomic_write_bytes(path, (json.dumps({"meta": meta, "results": results}, indent=1) + "\n").encode())
    return path


def read_results(section: str, directory: Path) -> dict | None:
    """``<directory>/<section>.json`` as written by ``write_results``, or None if absent."""
    path = directory / f"{section}.json"
    return json.loads(path.read_text()) if path.exists() else None
