"""The one table of benchmark sections, read by ``bench.cli`` (subcommands) and ``bench.report`` (page order).

Every section module exposes ``add_arguments(parser)``, ``run(args) -> dict`` (writes
``<args.out>/<result>.json`` and its plots; ``meta.results_dir``) and ``render(data) -> list[str]``
(markdown; plots linked as ``benchmarks/<png>``, which ``report.relink`` points at the results folder).
``bench.cli`` adds ``--out`` to every section's parser.
Section modules import torch, which takes seconds, so each entry holds a loader with an ordinary
(deferred) import: ``sdtp --help`` lists every section without importing any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable


@dataclass(frozen=True)
class Section:
    """One ``sdtp bench <name>`` section.

    Attributes:
        name: the subcommand.
        load: imports and returns the section's module.
        results: glob (without ``.json``) of its result files in the results folder.
        help: one line for ``sdtp bench --help``.
    """

    name: str
    load: Callable[[], ModuleType]
    results: str
    help: str


def _speed() -> ModuleType:
    from . import speed

    return speed


def _planned_speed() -> ModuleType:
    from . import planned_speed

    return planned_speed


def _compare() -> ModuleType:
    from . import compare

    return compare


def _longcontext() -> ModuleType:
    from . import longcontext

    return longcontext


def _suite() -> ModuleType:
    from . import suite

    return suite


def _compose() -> ModuleType:
    from . import composition

    return composition


def _kvpress() -> ModuleType:
    from .peers import kvpress

    return kvpress


def _sweep() -> ModuleType:
    from . import sweep

    return sweep


def _observations() -> ModuleType:
    from . import observations

    return observations


# in the order of the CLI listing and of docs/benchmarks.md
SECTIONS: tuple[Section, ...] = (
    Section("speed", _speed, "speed-*", "prefill latency, time to first token, decode tokens/s, peak memory, KV bytes, FLOPs"),
    Section("plan-speed", _planned_speed, "plan-speed-*", "predicted (planner, FLOPs bound) against measured prefill speedup of planned schedules"),
    Section("compare", _compare, "compare-*", "fidelity and long-context accuracy of SDTP, baselines and peers at the same budget"),
    Section("tasks", _longcontext, "tasks*", "synthetic long-context suite (passkey, needles, key-value, variable tracking)"),
    Section("suite", _suite, "suite-*", "held-out long-context suite: retrieval, aggregation, second turn, summaries, with intervals"),
    Section("compose", _compose, "compose-*", "SDTP, KV presses (H2O, SnapKV) and both at one KV budget: quality, speed, KV after decoding"),
    Section("kvpress", _kvpress, "kvpress*", "kvpress presses in their own environment: KV memory, decode speed, fidelity"),
    Section("sweep", _sweep, "sweep*", "quality against speed over keep ratios and stage placements (Pareto plot)"),
    Section("observations", _observations, "observations*", "saliency sparsity per layer and transitivity across stages"),
)


def get_section(name: str) -> Section:
    """The section called ``name`` (``ValueError`` listing the names otherwise)."""
    for section in SECTIONS:
        if section.name == name:
            return section
    raise ValueError(f"benchmark section {name!r} is unknown; allowed: {[s.name for s in SECTIONS]}")
