"""Where, when and with what a benchmark ran: stored next to every result so each figure is traceable."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
PACKAGES = ("torch", "transformers", "peft", "sdtp-adapter", "llmlingua", "kvpress")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_meta(command: str, device: str = "cpu") -> dict:
    """Date, machine, library versions and the exact command of a benchmark run."""
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


def write_results(section: str, meta: dict, results, directory: Path = RESULTS_DIR) -> Path:
    """Atomically write ``<directory>/<section>.json``."""
    from ..files import atomic_write_bytes

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{section}.json"
    atomic_write_bytes(path, (json.dumps({"meta": meta, "results": results}, indent=1) + "\n").encode())
    return path


def read_results(section: str, directory: Path = RESULTS_DIR) -> dict | None:
    path = directory / f"{section}.json"
    return json.loads(path.read_text()) if path.exists() else None
