"""The eviction policies: H2O-style accumulated attention and SnapKV-style observation window.

Both score per key/value head; with grouped heads (GQA) a key head's score is the mean over its query
heads (kvpress's rule). Each is tested against a plain reference in ``tests/test_compression.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..schedule import is_int
from .attention import per_kv_head
from .press import AttentionStats, KVPress

POOLINGS = ("avg", "max")


@dataclass(frozen=True, kw_only=True)
class H2OPress(KVPress):
    """Heavy-Hitter Oracle (Zhang et al., 2023): an entry's score is the attention it has received
    from every query so far, summed (the prompt's queries at the prefill, then one per decoded token);
    the lowest-scored entries outside the sink and recent window are evicted after every chunk.

    Under SDTP a layer's prefill queries are the tokens that reached it. Scores are float32 sums
    carried in the cache with the entries they belong to.

    Example::

        >>> H2OPress(max_tokens=128, recent_tokens=32).budget(4096)
        128
    """

    recent_tokens: int = field(default=32, metadata={"help": "Most recent cached entries of each layer that are never evicted."})

    accumulates = True

    def score(self, layer: int, keys: torch.Tensor, values: torch.Tensor, stats: AttentionStats) -> torch.Tensor:
        received = per_kv_head(stats.attention_received(), stats.kv_heads)  # [B, H_kv, n]
        if stats.previous is None:
            return received
        # entries cached before this chunk keep their sums; the chunk's own start from zero
        return received + F.pad(stats.previous, (0, received.shape[-1] - stats.previous.shape[-1]))


@dataclass(frozen=True, kw_only=True)
class SnapKVPress(KVPress):
    """SnapKV (Li et al., 2024): the last ``window_size`` queries (the observation window) vote for the
    entries before them; their attention is averaged over the window's queries, smoothed along the
    sequence by a ``kernel_size`` pooling (zero-padded, as kvpress's ``avg_pool1d``), and the window's
    own entries are always kept.

    The prefill is scored as in the paper and kvpress. During decoding the layer keeps the last
    ``window_size`` queries it saw and, whenever the cache exceeds its budget, scores the entries again
    with them (the window slides with the generated tokens), so the cache never exceeds the budget.

    Example::

        >>> SnapKVPress(compression_ratio=0.75, window_size=64).budget(4096)
        1024
    """

    window_size: int = field(default=64, metadata={"help": "Observation window: the last queries that score the entries; their entries are kept."})
    kernel_size: int = field(default=5, metadata={"help": "Pooling width along the sequence (odd, >= 1)."})
    pooling: str = field(default="avg", metadata={"help": "Pooling of the window's attention: 'avg' (kvpress) or 'max' (the paper's option)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_int(self.kernel_size) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"SnapKVPress.kernel_size={self.kernel_size!r} is invalid: expected an odd integer >= 1")
        if self.pooling not in POOLINGS:
            raise ValueError(f"SnapKVPress.pooling={self.pooling!r} is invalid; allowed: {list(POOLINGS)}")

    @property
    def recent_tokens(self) -> int:
        return self.window_size

    @property
    def observation_window(self) -> int:
        return self.window_size

    def score(self, layer: int, keys: torch.Tensor, values: torch.Tensor, stats: AttentionStats) -> torch.Tensor:
        votes = stats.window_attention().mean(dim=2)  # [B, H, n]
        n = votes.shape[-1]
        older = n - min(n, self.window_size)  # the window's own entries are protected: not pooled into the rest
        if older == 0:
            return torch.zeros_like(votes[:, : stats.kv_heads])
        pool = F.avg_pool1d if self.pooling == "avg" else F.max_pool1d
        scores = per_kv_head(pool(votes[..., :older], self.kernel_size, stride=1, padding=self.kernel_size // 2), stats.kv_heads)
        # the window's entries: any value would do (they are protected); above the rest keeps the ranking readable
        top = scores.amax(dim=-1, keepdim=True) + 1
        return torch.cat([scores, top.expand(-1, -1, n - older)], dim=-1)
