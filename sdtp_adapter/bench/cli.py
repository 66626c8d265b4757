"""``sdtp bench <section>``: run one benchmark section, write its JSON/PNGs, regenerate docs/benchmarks.md.

Every section module exposes ``add_arguments(parser)``, ``run(args) -> dict`` (writes
``docs/benchmarks/<section>.json`` and its plots) and ``render(data) -> list[str]`` (markdown).

Section modules import torch, which takes seconds: ``add_parsers`` imports only the section about to
be run (or asked for ``--help``), so ``sdtp --help`` and ``sdtp demo ...`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

# subcommand -> (module, help)
COMMANDS = {
    "speed": ("speed", "prefill latency, time to first token, decode tokens/s, peak memory, KV bytes, FLOPs"),
    "compare": ("compare", "fidelity and long-context accuracy of SDTP, baselines and peers at the same budget"),
    "tasks": ("longcontext", "synthetic long-context suite (passkey, needles, key-value, variable tracking)"),
    "kvpress": ("peers.kvpress", "kvpress presses in their own environment: KV memory, decode speed, fidelity"),
    "sweep": ("sweep", "quality against speed over keep ratios and stage placements (Pareto plot)"),
    "observations": ("observations", "saliency sparsity per layer and transitivity across stages"),
}


def add_parsers(sub, only: str | None = None) -> None:
    """Add ``bench`` and its section subcommands to the ``sdtp`` subparsers ``sub``.

    Args:
        only: the one section whose options are added (its module imported); ``None`` adds every
            section's options. The other sections are still listed, with their help line.
    """
    bench = sub.add_parser("bench", help="benchmarks and evaluation; results go to docs/benchmarks/",
                           description="Run one benchmark section and regenerate docs/benchmarks.md.")
    sections = bench.add_subparsers(dest="section", required=True, metavar="SECTION")
    for name, (module, help_text) in COMMANDS.items():
        parser = sections.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            importlib.import_module(f"{__package__}.{module}").add_arguments(parser)
    sections.add_parser("report", help="regenerate docs/benchmarks.md from the JSON results")


def run(args: argparse.Namespace) -> None:
    """Run the section chosen in ``args`` and rewrite the benchmarks page."""
    args.command_line = "sdtp " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    from .report import write_report

    if args.section != "report":
        importlib.import_module(f"{__package__}.{COMMANDS[args.section][0]}").run(args)
    print(f"wrote {write_report()}")
