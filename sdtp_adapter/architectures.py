"""The one place that knows model families.

Each supported ``model_type`` maps to an ``Architecture`` that says where the decoder stack, its
layers and its final norm live, and how to read the shapes the FLOPs model needs. Everything else in
the library asks this module instead of testing model types.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .schedule import ModelDims


@dataclass(frozen=True)
class Architecture:
    """Where the pieces SDTP touches live inside a ``*ForCausalLM`` model.

    Attributes:
        decoder: attribute path from the causal-LM model to the decoder stack (e.g. ``"model"``).
        layers: attribute of the decoder holding the ``nn.ModuleList`` of decoder layers.
        final_norm: attribute of the decoder holding the norm applied before the LM head.
    """

    decoder: str = "model"
    layers: str = "layers"
    final_norm: str = "norm"


# Families whose decoder layers take (hidden_states, attention_mask=, position_embeddings=,
# position_ids=, cache=) and keep the stack at ``model.layers`` and the final norm at ``model.norm``.
ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(),
    "mistral": Architecture(),
    "qwen2": Architecture(),
    "qwen3": Architecture(),
    "phi3": Architecture(),
    "gemma3_text": Architecture(),  # interleaved sliding/global layers, RoPE per layer type: handled generically
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


def model_dims(model: nn.Module) -> ModelDims:
    """Shapes of the text decoder, for the FLOPs model and for sizing the pruning modules."""
    architecture_of(model)
    cfg = model.config.get_text_config(decoder=True)
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
