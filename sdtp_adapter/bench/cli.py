"""``sdtp bench <section>``: run one benchmark section, write its JSON/PNGs to ``--out DIR``, regenerate ``DIR.md``.

The sections are listed in ``bench.sections``. Section modules import torch, which takes seconds:
``add_parsers`` imports only the section about to be run (or asked for ``--help``), so ``sdtp --help``
and ``sdtp demo ...`` stay fast. Every section and ``report`` take ``--out DIR`` (default
``./sdtp-bench``); the page is ``meta.report_path(DIR)``, next to the folder and named after it, so
``--out docs/benchmarks`` regenerates the repository's ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .meta import DEFAULT_OUT, add_out_argument, report_path, results_dir
from .sections import SECTIONS, get_section


def add_parsers(sub, only: str | None = None) -> None:
    """Add ``bench`` and its section subcommands to the ``sdtp`` subparsers ``sub``.

    Args:
        only: the one section whose options are added (its module imported); ``None`` adds every
            section's options. The other sections are still listed, with their help line.
    """
    bench = sub.add_parser(
        "bench", help=f"benchmarks and evaluation; results go to ./{DEFAULT_OUT}/ (or --out DIR)",
        description=f"Run one benchmark section: its JSON and PNGs go to --out DIR (default ./{DEFAULT_OUT}/, under "
        "the current directory) and the page DIR.md next to that folder is regenerated from every result in it "
        "(`--out docs/benchmarks` regenerates the repository's docs/benchmarks.md).",
    )
    sections = bench.add_subparsers(dest="section", required=True, metavar="SECTION")
    for section in SECTIONS:
        parser = sections.add_parser(section.name, help=section.help, description=section.help)
        if only is None or only == section.name:
            section.load().add_arguments(parser)
        add_out_argument(parser)
    report = sections.add_parser("report", help="regenerate DIR.md from the JSON results in --out DIR",
                                 description="Regenerate the page DIR.md from the JSON results in --out DIR.")
    add_out_argument(report)


def run(args: argparse.Namespace) -> None:
    """Run the section chosen in ``args`` and rewrite the page of its results folder."""
    args.command_line = "sdtp " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    from .report import write_report

    directory = results_dir(args)
    page = report_path(directory)  # checked before a long run, not after
    if args.section != "report":
        get_section(args.section).load().run(args)
    elif not directory.is_dir():
        raise FileNotFoundError(f"--out {str(directory)!r} is not a folder of benchmark results; run a section with it first")
    print(f"wrote {write_report(page, directory)}")
