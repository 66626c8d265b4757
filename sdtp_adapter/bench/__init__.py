"""Benchmark and evaluation harness: speed, quality, peers, sweeps and the paper's observations.

Each section writes ``<out>/<section>.json`` (``{"meta": ..., "results": ...}``) plus PNG plots, and
``report.write_report`` regenerates the page ``<out>.md`` from every JSON present. ``--out`` defaults
to ``./sdtp-bench``; the repository's own page is ``--out docs/benchmarks``.
"""
