"""The benchmark harness as a recipe: same as ``sdtp bench <section> ...``.

    python recipes/bench.py speed                 # SmolLM2 1K-8K, base vs SDTP interleaved
    python recipes/bench.py speed --model gemma3-270m
    python recipes/bench.py compare               # SDTP vs baselines and peers, one table
    python recipes/bench.py sweep                 # keep ratios x placements, Pareto plot
    python recipes/bench.py observations          # saliency sparsity / transitivity plots
    python recipes/bench.py report                # regenerate the page of the results folder

Results: ``--out DIR`` (default ./sdtp-bench/) gets <section>.json + PNGs, summarised in DIR.md next
to it. The repository's published page: add ``--out docs/benchmarks`` (regenerates docs/benchmarks.md).
"""

import sys

from sdtp_adapter.cli import main

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]])
