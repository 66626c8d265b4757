"""What differs between the transformers 5.x releases this library supports (pyproject.toml's range).

Each difference is one small function or constant, detected from what transformers provides or passes
(never from its version number), with a comment naming the releases on each side.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

# The keyword a model's forward takes its KV cache by, and the output field that returns it:
# ``cache`` from transformers 5.24 on (which still accepts ``past_key_values`` with a deprecation
# warning), ``past_key_values`` in 5.1-5.23 (where ``cache=`` is silently ignored).
CACHE_ARG = "cache" if "cache" in {f.name for f in fields(CausalLMOutputWithPast)} else "past_key_values"


def cache_kwarg(cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for a forward call: ``model(ids, **cache_kwarg(cache), use_cache=True)``."""
    return {CACHE_ARG: cache}


def cache_of(output: Any) -> Any:
    """The KV cache a forward returned (``output.cache``; ``output.past_key_values`` before 5.24)."""
    return getattr(output, CACHE_ARG)


def mask_query_length(query: int | torch.Tensor) -> int:
    """Tokens of the chunk a mask is built for, from the first argument of ``Cache.get_mask_sizes``:
    transformers 5.1-5.3 pass ``cache_position`` (a ``[q]`` tensor), 5.4 and later the length ``q``."""
    return query.shape[0] if isinstance(query, torch.Tensor) else query


def rope_table_flops(flop_counts: dict[str, dict[Any, int]]) -> int:
    """FLOPs that ``FlopCounterMode`` charged to the decoders' RoPE tables (modules named ``rotary_emb``),
    from its ``get_flop_counts()``: transformers 5.1-5.18 compute the angles as a matmul
    ``[head_dim/2, 1] x [1, n]`` (counted), 5.19 and later as a broadcast product (not counted)."""
    return sum(sum(ops.values()) for name, ops in flop_counts.items() if name.rsplit(".", 1)[-1] == "rotary_emb")
