"""KV-cache compression that composes with SDTP: eviction policies (presses) applied to an ``SDTPCache``
after a pruned prefill and during decoding (``with press(sdtp): sdtp.generate(...)``)."""

from .press import AttentionStats, KVPress
from .presses import H2OPress, SnapKVPress

__all__ = ["AttentionStats", "KVPress", "H2OPress", "SnapKVPress"]
