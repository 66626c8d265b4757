"""``sdtp bench <section>``: run one benchmark section, write its JSON/PNGs, regenerate docs/benchmarks.md.

Every section module exposes ``add_arguments(parser)``, ``run(args) -> dict`` (writes
``docs/benchmarks/<section>.json`` and its plots) and ``render(data) -> list[str]`` (markdown).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from .report import write_report

# subcommand -> (module, help)
COMMANDS = {
    "speed": ("speed", "prefill latency, time to first token, decode tokens/s, peak memory, KV bytes, FLOPs"),
    "compare": ("compare", "fidelity and long-context accuracy of SDTP, baselines and peers at the same budget"),
    "tasks": ("longcontext", "synthetic long-context suite (passkey, needles, key-value, variable tracking)"),
    "kvpress": ("peers.kvpress", "kvpress presses in their own environment: KV memory, decode speed, fidelity"),
    "sweep": ("sweep", "quality against speed over keep ratios and stage placements (Pareto plot)"),
    "observations": ("observations", "saliency sparsity per layer and transitivity across stages"),
}


def add_parsers(sub) -> None:
    """Add ``bench`` and its section subcommands to the ``sdtp`` subparsers ``sub``."""
    bench = sub.add_parser("bench", help="benchmarks and evaluation; results go to docs/benchmarks/")
    sections = bench.add_subparsers(dest="section", required=True)
    for name, (module, help_text) in COMMANDS.items():
        parser = sections.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"{__package__}.{module}").add_arguments(parser)
    sections.add_parser("report", help="regenerate docs/benchmarks.md from the JSON results")


def run(args: argparse.Namespace) -> None:
    """Run the section chosen in ``args`` and rewrite the benchmarks page."""
    args.command_line = "sdtp " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.section != "report":
        importlib.import_module(f"{__package__}.{COMMANDS[args.section][0]}").run(args)
    print(f"wrote {write_report()}")
