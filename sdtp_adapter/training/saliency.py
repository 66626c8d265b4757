"""Stage 1, token marking: gradient x input saliency at every stage layer from one backward pass."""

from __future__ import annotations

import torch
from torch import nn

from ..architectures import decoder_layers
from ..quantization import prepare_4bit_for_backward


def target_log_likelihood(logits: torch.Tensor, input_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of the target tokens.

    Args:
        logits: ``[B, N, V]``; row t predicts token t + 1.
        input_ids: ``[B, N]``.
        target_mask: ``[B, N]`` bool, True where token t is a target (t >= 1).
    Returns:
        scalar ``T``.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (picked * target_mask[:, 1:].to(picked.dtype)).sum()


def target_span(target_mask: torch.Tensor) -> int:
    """Number of trailing positions whose logits cover every target (the LM head runs only there)."""
    columns = target_mask[:, 1:].any(dim=0).nonzero()
    if columns.numel() == 0:
        raise ValueError("target_mask selects no target token after position 0; nothing to differentiate")
    return target_mask.shape[1] - int(columns[0])


def padded_inputs(attention_mask: torch.Tensor | None) -> dict:
    """Forward kwargs for a left-padded batch: the mask, and positions that restart at 0 on each row's
    first real token, so that a padded row computes what it computes alone (``{}`` when unpadded).

    Args:
        attention_mask: ``[B, N]`` 1 for real tokens, 0 for left padding, or ``None``.
    """
    if attention_mask is None:
        return {}
    return {"attention_mask": attention_mask, "position_ids": (attention_mask.long().cumsum(-1) - 1).clamp(min=0)}


def token_saliency(
    model: nn.Module,
    input_ids: torch.Tensor,
    target_mask: torch.Tensor,
    layers: list[int],
    captured: dict[int, torch.Tensor] | None = None,
    attention_mask: torch.Tensor | None = None,
    logits_out: dict[str, torch.Tensor] | None = None,
) -> dict[int, torch.Tensor]:
    """``|sum_d dT/dx * x|`` per token at the input of each layer in ``layers``.

    ``T`` is the summed log-likelihood of the target tokens under the full, unpruned model; one
    backward pass yields the saliency at every layer. Callers disable pruning around this.

    Args:
        model: a causal LM whose parameters may be frozen.
        input_ids: ``[B, N]``.
        target_mask: ``[B, N]`` bool.
        captured: optional dict that receives each layer's input hidden states ``[B, N, d]``.
        attention_mask: ``[B, N]`` for a left-padded batch (``None``: no padding). Rows are
            independent: row b's saliency is the gradient of its own targets' log-likelihood.
        logits_out: optional dict that receives ``"logits"``, the full model's detached logits over
            the last ``target_span`` positions ``[B, n, V]`` (the distillation teacher, at no extra pass).
    Returns:
        ``{layer: [B, N] float32}`` raw (unnormalised) saliency.
    """
    prepare_4bit_for_backward(model)
    captured = {} if captured is None else captured
    stack = decoder_layers(model)

    def capture(layer: int):
        def hook(module, args, kwargs):
            captured[layer] = args[0] if args else kwargs["hidden_states"]

        return hook

    handles = [stack[layer].register_forward_pre_hook(capture(layer), with_kwargs=True) for layer in layers]
    try:
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
            keep = target_span(target_mask)
            logits = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=keep, **padded_inputs(attention_mask)).logits
            objective = target_log_likelihood(logits, input_ids[:, -keep:], target_mask[:, -keep:])
            grads = torch.autograd.grad(objective, [captured[layer] for layer in layers])
            if logits_out is not None:
                logits_out["logits"] = logits.detach()
    finally:
        for handle in handles:
            handle.remove()
    return {
        layer: (g.float() * captured[layer].detach().float()).sum(-1).abs() for layer, g in zip(layers, grads)
    }


def normalize_saliency(raw: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Scale each row to [0, 1] by its maximum over ``candidates`` (the tokens a stage may prune).

    Protected tokens (attention sinks above all) often carry saliency orders of magnitude larger than
    the rest; they are never pruned, so they are left out of the maximum and clipped to 1.

    Args:
        raw: ``[B, N]`` non-negative saliency.
        candidates: ``[B, N]`` bool.
    """
    top = raw.masked_fill(~candidates, 0).amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return (raw / top).clamp(max=1.0)
