"""The press interface: score the cached entries of a layer, keep the best ones within a budget.

A press is a frozen config object, like a kvpress press, used as a context manager on an ``SDTPModel``::

    press = H2OPress(max_tokens=256)
    with press(sdtp):                                  # SDTP pruning + eviction
        out = sdtp.generate(ids, max_new_tokens=64)
    with sdtp.disable_pruning(), press(sdtp):          # the press alone
        out = sdtp.generate(ids, max_new_tokens=64)

After every chunk (the prefill, each decode step, a later turn) each full-attention layer's cache is
brought back under ``budget(positions seen)``: per key/value head, the first ``sink_tokens`` and the
last ``recent_tokens`` entries are kept, then the highest-scored others. Heads keep different
positions (as kvpress's and the papers' presses do) but the same number of them. The scoring and the
bookkeeping live in ``compression.eviction``; this module only defines what a press is.
"""

from __future__ import annotations

import abc
import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator

import torch

from ..schedule import is_int, is_number
from .attention import attention_received, attention_weights

if TYPE_CHECKING:
    from torch import nn


@dataclass
class AttentionStats:
    """What a press may score one layer's cached entries with, right after a chunk was cached there.

    Attention is computed on demand from the layer's queries and the cached keys (``compression.attention``),
    so a press pays only for what it reads.

    Attributes:
        layer: the decoder layer.
        keys: ``[B, H_kv, n, d]`` the layer's cache, this chunk's ``c`` entries last.
        key_positions: ``[B, H_kv, n]`` original position of every entry of every head.
        positions: ``[B, c]`` original positions of the chunk's tokens at this layer (after SDTP's pruning).
        scaling: the layer's factor on ``q . k``.
        previous: ``[B, H_kv, n - c]`` the scores this press returned for the older entries at the
            previous chunk (``None`` on the first chunk, and for presses that do not ``accumulate``).
        window_queries: ``[B, H, w, d]`` the last ``w <= observation_window`` queries this layer saw,
            this chunk's included (``None`` when the press has no observation window).
        window_positions: ``[B, w]`` their original positions.
    """

    layer: int
    keys: torch.Tensor
    key_positions: torch.Tensor
    positions: torch.Tensor
    scaling: float
    previous: torch.Tensor | None
    queries_of: Callable[[int], torch.Tensor]  # last -> [B, H, last, d] rotated queries of the chunk's last tokens
    window_queries: torch.Tensor | None = None
    window_positions: torch.Tensor | None = None

    @property
    def kv_heads(self) -> int:
        return self.keys.shape[1]

    def attention_received(self) -> torch.Tensor:
        """``[B, H, n]``: the attention each entry received from the chunk's queries, summed over them."""
        c = self.positions.shape[1]
        return attention_received(self.queries_of(c), self.positions, self.keys, self.key_positions, self.scaling)

    def window_attention(self) -> torch.Tensor:
        """``[B, H, w, n]``: the attention of the observation window's queries onto the current entries."""
        if self.window_queries is None:
            raise ValueError("window_attention() needs a press with observation_window >= 1")
        return attention_weights(self.window_queries, self.window_positions, self.keys, self.key_positions, self.scaling)


@dataclass(frozen=True, kw_only=True)
class KVPress(abc.ABC):
    """A KV-cache eviction policy on ``SDTPCache``: a budget plus a score per cached entry.

    Exactly one of ``max_tokens`` and ``compression_ratio`` sets the budget of every full-attention
    layer (sliding-window layers are already bounded by their window and are left alone). Protected
    entries count inside the budget, and the budget never drops below them.

    Subclasses set ``recent_tokens`` (the protected recent window), may set ``observation_window``
    (queries kept per layer for ``AttentionStats.window_attention``) and ``accumulates`` (scored after
    every chunk, scores carried over as ``AttentionStats.previous``), and implement ``score``.
    """

    max_tokens: int | None = field(default=None, metadata={"help": "Entries each layer may hold per key/value head (>= sink_tokens + recent_tokens)."})
    compression_ratio: float | None = field(
        default=None,
        metadata={"help": "Share in [0, 1) of the positions seen that is evicted: a layer keeps ceil((1 - ratio) * positions seen)."},
    )
    sink_tokens: int = field(default=4, metadata={"help": "First cached entries of each layer that are never evicted (attention sinks)."})

    accumulates: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def recent_tokens(self) -> int:
        """Last cached entries of each layer that are never evicted."""

    @property
    def observation_window(self) -> int:
        """Queries the runtime keeps per layer for ``AttentionStats.window_attention`` (0 = none)."""
        return 0

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> None:
            raise ValueError(f"{type(self).__name__}.{name}={getattr(self, name)!r} is invalid: {allowed}")

        if (self.max_tokens is None) == (self.compression_ratio is None):
            raise ValueError(
                f"{type(self).__name__} needs exactly one of max_tokens and compression_ratio; got "
                f"max_tokens={self.max_tokens!r}, compression_ratio={self.compression_ratio!r}"
            )
        if not is_int(self.sink_tokens) or self.sink_tokens < 0:
            bad("sink_tokens", "expected an integer >= 0")
        if not is_int(self.recent_tokens) or self.recent_tokens < 1:
            raise ValueError(f"{type(self).__name__} recent window {self.recent_tokens!r} is invalid: expected an integer >= 1")
        if self.max_tokens is not None and (not is_int(self.max_tokens) or self.max_tokens < self.protected_tokens):
            bad("max_tokens", f"expected an integer >= sink_tokens + recent window = {self.protected_tokens}")
        if self.compression_ratio is not None and (not is_number(self.compression_ratio) or not 0 <= self.compression_ratio < 1):
            bad("compression_ratio", "expected a number in [0, 1)")

    @property
    def protected_tokens(self) -> int:
        return self.sink_tokens + self.recent_tokens

    def budget(self, seen: int) -> int:
        """Entries a layer may keep per key/value head once ``seen`` original positions were processed."""
        if self.max_tokens is not None:
            return self.max_tokens
        return max(self.protected_tokens, math.ceil((1 - self.compression_ratio) * seen - 1e-9))

    @abc.abstractmethod
    def score(self, layer: int, keys: torch.Tensor, values: torch.Tensor, stats: AttentionStats) -> torch.Tensor:
        """Importance of every cached entry, higher = kept first.

        Args:
            keys, values: ``[B, H_kv, n, d]`` the layer's cache (this chunk's entries last).
            stats: the attention this layer's queries pay to the entries (``AttentionStats``).

        Returns:
            ``[B, H_kv, n]`` floating scores (NaN ranks lowest).
        """

    def __call__(self, model: "nn.Module") -> contextlib.AbstractContextManager[None]:
        """Evict with this press inside the block, in this thread (``with press(sdtp): sdtp.generate(...)``).

        ``model`` is an ``SDTPModel`` (or the base model it is attached to); a cache must be filled and
        continued under the same press. For the press alone, add ``sdtp.disable_pruning()``.
        """
        return _override(model, self)


@contextlib.contextmanager
def _override(model: "nn.Module", press: KVPress) -> Iterator[None]:
    from ..model import _ATTACHED  # the wrapper a base model carries

    wrapper = model if hasattr(model, "controller") else _ATTACHED.get(model, lambda: None)()
    if wrapper is None:
        raise TypeError(
            f"{type(press).__name__}(...)(model) needs an SDTPModel (or a base model with one attached), got "
            f"{type(model).__name__}: attach SDTP first (get_sdtp_model / SDTPModel.from_pretrained); for the press "
            "alone use `with sdtp.disable_pruning(), press(sdtp):`"
        )
    wrapper._check_attached(f"{type(press).__name__}(...)(model)")
    with wrapper.controller.press.override(press):
        yield
