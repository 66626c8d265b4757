"""``sdtp bench <section>``: run one benchmark section, write its JSON/PNGs, regenerate docs/benchmarks.md.

The sections are listed in ``bench.sections``. Section modules import torch, which takes seconds:
``add_parsers`` imports only the section about to be run (or asked for ``--help``), so ``sdtp --help``
and ``sdtp demo ...`` stay fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .sections import SECTIONS, get_section


def add_parsers(sub, only: str | None = None) -> None:
    """Add ``bench`` and its section subcommands to the ``sdtp`` subparsers ``sub``.

    Args:
        only: the one section whose options are added (its module imported); ``None`` adds every
            section's options. The other sections are still listed, with their help line.
    """
    bench = sub.add_parser("bench", help="benchmarks and evaluation; results go to docs/benchmarks/",
                           description="Run one benchmark section and regenerate docs/benchmarks.md.")
    sections = bench.add_subparsers(dest="section", required=True, metavar="SECTION")
    for section in SECTIONS:
        parser = sections.add_parser(section.name, help=section.help, description=section.help)
        if only is None or only == section.name:
            section.load().add_arguments(parser)
    sections.add_parser("report", help="regenerate docs/benchmarks.md from the JSON results")


def run(args: argparse.Namespace) -> None:
    """Run the section chosen in ``args`` and rewrite the benchmarks page."""
    args.command_line = "sdtp " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    from .report import write_report

    if args.section != "report":
        get_section(args.section).load().run(args)
    print(f"wrote {write_report()}")
