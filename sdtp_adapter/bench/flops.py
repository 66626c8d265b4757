"""The analytic prefill FLOPs model, and counted FLOPs (``torch.utils.flop_counter.FlopCounterMode``) against it.

What ``FlopCounterMode`` counts (torch 2.13, checked on Llama-family models): only matrix products,
as ``2 * m * n * k`` per ``mm``/``addmm``/``bmm`` (biases, norms, RoPE, softmax, activations and
gathers are free). It sees the decoder's projections and MLPs, the LM head on the positions kept by
``logits_to_keep`` and the pruning modules' two linear layers. Attention is counted as *full*
``s_q x s_k`` products: eager attention's ``matmul``s decompose to ``bmm``; the fused SDPA kernels it
knows (CUDA flash / memory-efficient / cuDNN) get ``4 * b * h_q * s_q * s_k * d`` with the comment
"we aren't accounting for causal attention". The CPU SDPA kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``) has no formula and would count as 0, so
``count_flops`` maps it to the same full-attention formula; every backend then counts alike and
``prefill_flops(..., attention="full")`` reproduces the count exactly.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..architectures import ModelDims, model_dims
from ..compat import rope_table_flops
from ..model import SDTPModel
from ..schedule import StageSchedule

# How attention products are counted: "causal" = the work a causal kernel needs (query i meets the
# keys up to itself); "full" = every query times every key, which dense kernels with an explicit mask
# compute and torch's FlopCounterMode counts (its SDPA formulas ignore causality).
ATTENTION_COUNTS = ("causal", "full")


def _check_attention_count(attention: str) -> None:
    if attention not in ATTENTION_COUNTS:
        raise ValueError(f"attention={attention!r} is not a counting convention; allowed: {list(ATTENTION_COUNTS)}")


def layer_flops(dims: ModelDims, tokens: int, past: int = 0, attention: str = "causal") -> float:
    """Multiply-accumulate FLOPs (x2) of one decoder layer over ``tokens`` queries.

    Counts the q/k/v/o projections, the gated MLP (3 matrices) and the score and value products;
    norms, RoPE, softmax and biases are ignored (a few percent at these sizes). ``attention``
    ("causal" or "full", see ``ATTENTION_COUNTS``) says how many keys each query is multiplied with.
    """
    _check_attention_count(attention)
    q_dim = dims.num_attention_heads * dims.head_dim
    kv_dim = dims.num_key_value_heads * dims.head_dim
    projections = 2 * tokens * dims.hidden_size * (2 * q_dim + 2 * kv_dim)
    mlp = 2 * tokens * 3 * dims.hidden_size * dims.intermediate_size
    if attention == "causal":
        # query i (0-based among the new tokens) sees past + i + 1 keys
        keys_seen = tokens * past + tokens * (tokens + 1) / 2
    else:
        keys_seen = tokens * (past + tokens)
    attention_flops = 2 * 2 * keys_seen * q_dim
    return projections + mlp + attention_flops


def prefill_flops(
    dims: ModelDims, tokens_per_layer: list[int], pruner_flops: float = 0.0, attention: str = "causal"
) -> float:
    """Prefill FLOPs of the decoder stack plus the LM head on the last position."""
    body = sum(layer_flops(dims, n, attention=attention) for n in tokens_per_layer)
    return body + 2 * dims.hidden_size * dims.vocab_size + pruner_flops


def scoring_flops(dims: ModelDims, schedule: StageSchedule, length: int, pruner_hidden: int) -> float:
    """FLOPs of the stage scoring MLPs (``d -> pruner_hidden -> 2``, biases ignored) in a pruned prefill.

    Each stage scores the tokens that entered the layer before it (all ``length`` at layer 0).
    """
    per_layer = schedule.tokens_per_layer(length, dims.num_layers)
    scored = [per_layer[layer - 1] if layer > 0 else length for layer in schedule.layers]
    return sum(2 * n * (dims.hidden_size * pruner_hidden + pruner_hidden * 2) for n in scored)


def pruned_prefill_flops(
    dims: ModelDims, schedule: StageSchedule, length: int, pruner_hidden: int = 0, attention: str = "causal"
) -> float:
    """Prefill FLOPs of a ``length``-token prompt pruned by ``schedule``, scoring modules included."""
    per_layer = schedule.tokens_per_layer(length, dims.num_layers)
    pruner = scoring_flops(dims, schedule, length, pruner_hidden)
    return prefill_flops(dims, per_layer, pruner, attention=attention)


def flops_speedup_bound(
    dims: ModelDims, schedule: StageSchedule, length: int, pruner_hidden: int = 0, attention: str = "causal"
) -> float:
    """Analytic upper bound on the prefill speedup of ``schedule`` at ``length`` tokens."""
    full = prefill_flops(dims, [length] * dims.num_layers, attention=attention)
    return full / pruned_prefill_flops(dims, schedule, length, pruner_hidden, attention=attention)


COUNTER = (
    "torch.utils.flop_counter.FlopCounterMode (matrix products only, attention as full s_q x s_k products; "
    "the CPU SDPA kernel mapped to the same formula as the CUDA ones)"
)


def full_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """``q @ k^T`` and ``p @ v`` of SDPA over every (query, key) pair, as FlopCounterMode's CUDA formulas.

    Shapes: query ``[B, H_q, S_q, D]``, key ``[B, H_kv, S_k, D]``, value ``[B, H_kv, S_k, D_v]``; grouped
    KV heads are broadcast to the ``H_q`` query heads by the kernel, so they cost ``H_q`` heads.
    """
    batch, heads, queries, dim = query_shape
    keys, value_dim = key_shape[2], value_shape[3]
    return 2 * batch * heads * queries * keys * dim + 2 * batch * heads * queries * keys * value_dim


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs ``FlopCounterMode`` counts while ``fn()`` runs, CPU SDPA included (see module docstring),
    less the RoPE tables, which only some transformers releases compute with a matmul."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: full_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops() - rope_table_flops(counter.get_flop_counts())


def prefill_call(sdtp: SDTPModel, ids: torch.Tensor, prune: bool) -> Callable[[], object]:
    """A no-grad prefill of ``ids [1, N]`` with ``logits_to_keep=1``, pruned or with pruning disabled."""

    def call():
        with torch.inference_mode(), (contextlib.nullcontext() if prune else sdtp.disable_pruning()):
            return sdtp(input_ids=ids, use_cache=True, logits_to_keep=1)

    return call


def flops_check(sdtp: SDTPModel, ids: torch.Tensor) -> dict:
    """Counted vs analytic prefill FLOPs of the base and of the pruned prefill of ``ids [1, N]``.

    Returns ``{"tokens", "counter", "base": {...}, "sdtp": {...}}`` where each side holds ``counted``,
    ``analytic_full`` (the counter's convention, should equal ``counted``), ``analytic_causal`` (the
    model used for the FLOPs bound) and ``relative_difference`` = ``counted / analytic_full - 1``.
    """
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"ids has shape {tuple(ids.shape)}; the FLOPs check needs one row, shape [1, N]")
    dims = model_dims(sdtp.base_model)
    length = ids.shape[1]
    schedule, hidden = sdtp.active_schedule, sdtp.sdtp_config.pruner_hidden_size

    def analytic(prune: bool, attention: str) -> float:
        if prune:
            return pruned_prefill_flops(dims, schedule, length, hidden, attention=attention)
        return prefill_flops(dims, [length] * dims.num_layers, attention=attention)

    out = {"tokens": length, "counter": COUNTER}
    for name, prune in (("base", False), ("sdtp", True)):
        counted = count_flops(prefill_call(sdtp, ids, prune))
        full = analytic(prune, "full")
        out[name] = {
            "counted": counted,
            "analytic_full": full,
            "analytic_causal": analytic(prune, "causal"),
            "relative_difference": counted / full - 1.0,
        }
    return out
