"""What a pruned forward checks before it runs: the attention backend, the prompt, the scorer's output.

Every check names the bad value and what is allowed, so a user error never surfaces as a shape error
deep inside torch.
"""

from __future__ import annotations

import torch


SUPPORTED_ATTENTION = ("sdpa", "eager")


def check_attention(config) -> None:
    """Refuse attention backends whose masks or position handling the gathers do not cover."""
    impl = getattr(config, "_attn_implementation", None)
    if impl not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"attn_implementation={impl!r} is not supported by SDTP pruning; allowed: {list(SUPPORTED_ATTENTION)} "
            "(flash-attention reads position ids with gaps as packed sequences)"
        )


def refuse_unaligned_outputs(config, kwargs) -> None:
    """Per-layer hidden states and attention maps of a pruned forward cover only the kept tokens, so
    a client reading them by position would be misled: refuse them instead."""
    for name in ("output_hidden_states", "output_attentions"):
        if kwargs.get(name, getattr(config, name, False)):
            raise ValueError(
                f"{name}=True is not supported while pruning: layers after a stage see only the kept tokens, "
                "so their outputs are not aligned with the input positions; wrap the call in "
                "`with sdtp_model.disable_pruning():` to get them from the unpruned model"
            )


def inspect_prompt(ids, mask, batch: int, length: int, past: int, vocab_size: int, device) -> tuple[torch.Tensor, list[int]]:
    """Check a prompt about to be pruned and return the left-padding slots per row (``[B]`` on the device,
    and the same on the host).

    Refuses, naming the problem: a 4-D mask (its padding cannot be told from causality), a 2-D mask
    whose shape does not match ``[B, past + N]``, right or interior padding, a row without real
    tokens, and token ids outside ``[0, vocab_size)``. One host transfer for all checks.
    """
    if isinstance(mask, torch.Tensor) and mask.dim() != 2:
        raise ValueError(
            f"attention_mask has shape {list(mask.shape)}: SDTP pruning needs the 2-D padding mask [batch, tokens] "
            "(1 = token, 0 = left padding) to budget each row; pass that mask (transformers builds the 4-D one) "
            "or run the call under disable_pruning()"
        )
    if isinstance(mask, torch.Tensor) and tuple(mask.shape) != (batch, past + length):
        raise ValueError(
            f"attention_mask has shape {list(mask.shape)} but the input has {batch} row(s) of {length} tokens"
            + (f" on top of {past} cached positions" if past else "")
            + f"; expected [{batch}, {past + length}]"
        )
    checks = []
    if isinstance(mask, torch.Tensor):
        chunk = mask[:, -length:].to(device=device, dtype=torch.bool)
        pad = length - chunk.sum(dim=1)
        slots = torch.arange(length, device=device)[None]
        checks.append((chunk != (slots >= pad[:, None])).any(dim=1))
    else:
        pad = torch.zeros(batch, dtype=torch.long, device=device)
    if ids is not None:
        checks.append(torch.stack(torch.aminmax(ids)))
    host = torch.cat([pad] + [c.long() for c in checks]).tolist()  # the one sync of these checks
    pads, rest = host[:batch], host[batch:]
    if isinstance(mask, torch.Tensor):
        bad_rows = [row for row, bad in enumerate(rest[:batch]) if bad]
        rest = rest[batch:]
        if bad_rows:
            raise ValueError(
                f"attention_mask is not left-padded in row(s) {bad_rows}: SDTP budgets each row from its real length "
                "and needs padding on the left (tokenizer.padding_side = 'left'); right or interior padding is not supported"
            )
        empty = [row for row, p in enumerate(pads) if p >= length]
        if empty:
            raise ValueError(f"attention_mask has no real token in row(s) {empty}")
    if ids is not None:
        low, high = rest
        bad = low if low < 0 else high if high >= vocab_size else None
        if bad is not None:
            raise ValueError(f"input_ids holds token id {bad}, outside the model's vocabulary [0, {vocab_size})")
    return pad, pads


def check_scores(scores, scorer, layer: int, hidden: torch.Tensor) -> torch.Tensor:
    """A scorer's output must be a floating ``[B, n]`` tensor on the hidden states' device."""
    batch, n = hidden.shape[:2]
    if (
        not isinstance(scores, torch.Tensor)
        or tuple(scores.shape) != (batch, n)
        or not scores.is_floating_point()
        or scores.device != hidden.device
    ):
        got = (
            f"a {scores.dtype} tensor of shape {list(scores.shape)} on {scores.device}"
            if isinstance(scores, torch.Tensor)
            else f"a {type(scores).__name__}"
        )
        name = getattr(scorer, "__qualname__", None) or type(scorer).__name__
        raise ValueError(
            f"scorer {name} returned {got} at layer {layer}; expected a floating tensor of shape "
            f"[B, n] = [{batch}, {n}] on {hidden.device} (one score per token, higher = keep)"
        )
    return scores
