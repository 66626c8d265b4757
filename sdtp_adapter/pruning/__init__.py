"""Inference-time pruning: the scoring module, the keep rule, per-forward state, layer hooks, the cache."""
