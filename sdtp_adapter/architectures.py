"""The one place that knows model families.

Each supported ``model_type`` maps to an ``Architecture`` that says where the decoder stack, its
layers and its final norm live, and how to read the shapes the FLOPs model needs. Everything else in
the library asks this module instead of testing model types.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn



@dataclass(frozen=True)
class Architecture:
    """Where the pieces SDTP touches live inside a ``*ForCausalLM`` model.

    Attributes:
        decoder: attribute path from the causal-LM model to the decoder stack (e.g. ``"model"``).
        layers: attribute of the decoder holding the ``nn.ModuleList`` of decoder layers.
        final_norm: attribute of the decoder holding the norm applied before the LM head.
        fused_qkv: attribute of the attention module holding one fused q|k|v projection (Phi-3);
            ``None`` = separate ``q_proj`` / ``k_proj``.
        qk_norm: the attention normalises each head of q and k (``q_norm`` / ``k_norm``) before RoPE.
        rope_per_layer_type: the decoder's ``rotary_emb`` takes the layer type (``sliding_attention``
            or ``full_attention``) as a third argument, with different frequencies per type.
    """

    decoder: str = "model"
    layers: str = "layers"
    final_norm: str = "norm"
    fused_qkv: str | None = None
    qk_norm: bool = False
    rope_per_layer_type: bool = False


# Families whose decoder layers take (hidden_states, attention_mask=, position_embeddings=,
# position_ids=, cache=) and keep the stack at ``model.layers`` and the final norm at ``model.norm``.
ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(),
    "mistral": Architecture(),
    "qwen2": Architecture(),
    "qwen3": Architecture(qk_norm=True),
    "phi3": Architecture(fused_qkv="qkv_proj"),
    # interleaved sliding/global layers, RoPE per layer type: the pruning hooks handle it generically
    "gemma3_text": Architecture(qk_norm=True, rope_per_layer_type=True),
}


def architecture_of(model: nn.Module) -> Architecture:
    """Return the ``Architecture`` of ``model`` or raise a ``ValueError`` listing the supported families."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"model_type={model_type!r} is not supported by sdtp_adapter; supported: {sorted(ARCHITECTURES)} "
            "(see docs/architectures.md to add a family)"
        )
    return ARCHITECTURES[model_type]


def _resolve(root: nn.Module, path: str) -> nn.Module:
    for name in path.split("."):
        root = getattr(root, name)
    return root


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT ``PeftModel`` (LoRA...), or ``model`` itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder stack (``LlamaModel`` for a ``LlamaForCausalLM``, also inside a ``PeftModel``)."""
    return _resolve(unwrap(model), architecture_of(model).decoder)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    arch = architecture_of(model)
    return getattr(decoder_of(model), arch.layers)


def final_norm(model: nn.Module) -> nn.Module:
    arch = architecture_of(model)
    return getattr(decoder_of(model), arch.final_norm)


@dataclass(frozen=True)
class ModelDims:
    """The shapes the FLOPs model needs (read from a transformers config by ``model_dims``)."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_layers: int
    vocab_size: int



def model_dims(model: nn.Module) -> ModelDims:
    """Shapes of the text decoder, for the FLOPs model and for sizing the pruning modules."""
    architecture_of(model)
    return config_dims(model.config)


def config_dims(config) -> ModelDims:
    """``model_dims`` from a transformers ``PretrainedConfig`` alone (planning a schedule needs no weights)."""
    architecture_of(SimpleNamespace(config=config))  # the same family check and message as for a model
    cfg = config.get_text_config(decoder=True)
    heads = cfg.num_attention_heads
    return ModelDims(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_attention_heads=heads,
        num_key_value_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        num_layers=cfg.num_hidden_layers,
        vocab_size=cfg.vocab_size,
    )


def cache_windows(config) -> list[int | None]:
    """Per decoder layer, the sliding window that bounds its cache (``None``: full attention, caches every token).

    Read from the layers ``DynamicCache(config=...)`` (and so ``SDTPCache``) builds, empty until a forward
    fills them: a sliding layer keeps the last ``window - 1`` keys of a prefill (Gemma 3's interleaved
    layers, Mistral's ``sliding_window``, Qwen2's ``use_sliding_window``). Every supported transformers
    release builds them the same way (its ``get_layer_types_and_kwargs`` helper exists only from 5.14 on).
    """
    from transformers import DynamicCache

    architecture_of(SimpleNamespace(config=config))
    layers = DynamicCache(config=config.get_text_config(decoder=True)).layers
    return [getattr(layer, "sliding_window", None) for layer in layers]


def rotated_query_key(
    model: nn.Module, layer: int, hidden: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer ``layer``'s RoPE-rotated queries and keys for the hidden states entering that layer.

    Runs the layer's own modules (input norm, q/k projections, per-head q/k norms where the family
    has them) and the family's own ``apply_rotary_pos_emb``, with each token at its real position,
    so tokens gathered after pruning are rotated exactly as in the full forward.

    Args:
        hidden: ``[B, n, d]`` residual stream entering the layer.
        positions: ``[B, n]`` original positions; negative values (padding) are rotated as position 0.

    Returns:
        ``q [B, H, n, head_dim]`` and ``k [B, KV, n, head_dim]``, in the model's dtype.
    """
    arch = architecture_of(model)
    block = decoder_layers(model)[layer]
    attn = block.self_attn
    head_dim = attn.head_dim
    x = block.input_layernorm(hidden)
    if arch.fused_qkv is not None:
        dims = model_dims(model)
        q_width, k_width = dims.num_attention_heads * head_dim, dims.num_key_value_heads * head_dim
        qkv = getattr(attn, arch.fused_qkv)(x)  # [B, n, (H + 2 KV) * hd], q then k then v
        q, k = qkv[..., :q_width], qkv[..., q_width : q_width + k_width]
    else:
        q, k = attn.q_proj(x), attn.k_proj(x)
    q = q.view(*x.shape[:-1], -1, head_dim)  # [B, n, H, hd]
    k = k.view(*x.shape[:-1], -1, head_dim)
    if arch.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)  # per-head RMSNorm over the last dimension
    position_ids = positions.clamp(min=0)
    rotary = decoder_of(model).rotary_emb
    if arch.rope_per_layer_type:
        cos, sin = rotary(x, position_ids, model.config.get_text_config(decoder=True).layer_types[layer])
    else:
        cos, sin = rotary(x, position_ids)
    # the family's own helper (partial rotary for Phi-3 included)
    apply_rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    return apply_rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin)


def attention_scaling(model: nn.Module, layer: int) -> float:
    """The factor layer ``layer`` multiplies ``q . k`` by before the softmax (``head_dim ** -0.5``, or
    ``query_pre_attn_scalar ** -0.5`` for Gemma 3): read from the attention module itself."""
    return float(decoder_layers(model)[layer].self_attn.scaling)
