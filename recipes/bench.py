"""The benchmark harness as a recipe: same as ``sdtp bench <section> ...``.

    python recipes/bench.py speed                 # SmolLM2 1K-8K, base vs SDTP interleaved
    python recipes/bench.py speed --model gemma3-270m
    python recipes/bench.py compare               # SDTP vs baselines and peers, one table
    python recipes/bench.py sweep                 # keep ratios x placements, Pareto plot
    python recipes/bench.py observations          # saliency sparsity / transitivity plots
    python recipes/bench.py report                # regenerate docs/benchmarks.md

Results: docs/benchmarks/<section>.json + PNGs, summarised in docs/benchmarks.md.
"""

import sys

from sdtp_adapter.cli import main

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]])
