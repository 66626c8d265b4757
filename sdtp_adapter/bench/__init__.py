"""Benchmark and evaluation harness: speed, quality, peers, sweeps and the paper's observations.

Each section writes ``docs/benchmarks/<section>.json`` (``{"meta": ..., "results": ...}``) plus PNG
plots, and ``report.write_report`` regenerates ``docs/benchmarks.md`` from every JSON present.
"""
