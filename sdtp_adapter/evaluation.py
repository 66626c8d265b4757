"""Fidelity of a pruned prefill: continuation NLL, top-1 agreement and KL against the unpruned model.

A long prefix is prefilled (pruned or not); the next ``C`` tokens are then fed on top of the cache in
one chunk, unpruned, as a chat continuation would be. Every continuation token's distribution is
compared with the unpruned model's.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .bench.methods import Method
from .model import SDTPModel


@dataclass
class Fidelity:
    """Means over all continuation tokens of all windows.

    Attributes:
        base_nll: NLL of the unpruned model.
        nll: NLL with the pruned prefix.
        delta_nll_pct: ``100 * (nll - base_nll) / base_nll``.
        top1: share of positions where both models' argmax agree.
        kl: ``KL(base || pruned)`` in nats.
        windows: windows evaluated; tokens: continuation tokens per window.
        kept_share: mean share of the prefix's tokens each layer processed (1.0 = unpruned), i.e. the
            prefill budget; for a prompt compressor, the compressed length over the original.
    """

    base_nll: float
    nll: float
    delta_nll_pct: float
    top1: float
    kl: float
    windows: int
    tokens: int
    kept_share: float = 1.0

    def as_dict(self) -> dict:
        return asdict(self)


def text_windows(tokenizer, texts: list[str], count: int, length: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` random ``[1, length]`` token windows drawn from ``texts``."""
    rng = random.Random(seed)
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    encoded = [e for e in encoded if len(e) > length]
    if not encoded:
        raise ValueError(f"no text is longer than length={length} tokens")
    out = []
    for _ in range(count):
        ids = rng.choice(encoded)
        start = rng.randrange(0, len(ids) - length)
        out.append(torch.tensor([ids[start : start + length]]))
    return out


def continuation_logprobs(model: SDTPModel, window: torch.Tensor, prefix: int, prune: bool) -> torch.Tensor:
    """``[C, V]`` log-probabilities for the tokens after the first ``prefix`` tokens of ``window``."""
    guard = contextlib.nullcontext() if prune else model.disable_pruning()
    with torch.inference_mode(), guard:
        first = model(window[:, :prefix], use_cache=True, logits_to_keep=1)
        rest = model(window[:, prefix:-1], cache=first.cache, use_cache=True)
    logits = torch.cat([first.logits[:, -1:], rest.logits], dim=1)[0]
    return F.log_softmax(logits.float(), dim=-1)


def compressed_window(method: Method, tokenizer, window: torch.Tensor, prefix: int) -> tuple[torch.Tensor, int]:
    """``window`` with its prefix replaced by ``method.compress`` of the prefix text; returns it and the new prefix length."""
    text = tokenizer.decode(window[0, :prefix].tolist())
    short = tokenizer(method.compress(text, ""), add_special_tokens=False)["input_ids"]
    return torch.cat([torch.tensor([short], dtype=window.dtype), window[:, prefix:]], dim=1), len(short)


def compare_methods(
    model: SDTPModel, windows: list[torch.Tensor], prefix: int, methods: list[Method], tokenizer=None
) -> dict[str, Fidelity]:
    """Fidelity of several methods against the unpruned model; the reference is computed once per window.

    Args:
        windows: ``[1, prefix + C]`` token windows.
        methods: pruned variants (a method with ``prune=False`` and no compressor is the reference
            itself and is skipped); prompt compressors need ``tokenizer`` to go through text.
    """
    methods = [m for m in methods if m.prune or m.compress is not None]
    if any(m.compress is not None for m in methods) and tokenizer is None:
        raise ValueError("tokenizer=None: prompt-compression methods need the tokenizer")
    num_layers = model.config.num_hidden_layers
    sums = {m.name: [0.0, 0.0, 0, 0.0, 0.0] for m in methods}  # base nll, nll, agree, kl, kept share
    count = 0
    for window in windows:
        targets = window[0, prefix:, None]
        ref = continuation_logprobs(model, window, prefix, prune=False)
        ref_nll = float(-ref.gather(1, targets).sum())
        for method in methods:
            with method.activate(model):
                if method.compress is not None:
                    short, kept = compressed_window(method, tokenizer, window, prefix)
                    got = continuation_logprobs(model, short, kept, prune=False)
                    share = kept / prefix
                else:
                    got = continuation_logprobs(model, window, prefix, prune=True)
                    share = sum(model.active_schedule.tokens_per_layer(prefix, num_layers)) / (prefix * num_layers)
            acc = sums[method.name]
            acc[0] += ref_nll
            acc[1] += float(-got.gather(1, targets).sum())
            acc[2] += int((ref.argmax(-1) == got.argmax(-1)).sum())
            acc[3] += float((ref.exp() * (ref - got)).sum())
            acc[4] += share * targets.shape[0]
        count += targets.shape[0]
    return {
        name: Fidelity(
            base_nll=b / count,
            nll=n / count,
            delta_nll_pct=100 * (n - b) / b,
            top1=a / count,
            kl=k / count,
            windows=len(windows),
            tokens=count // max(1, len(windows)),
            kept_share=s / count,
        )
        for name, (b, n, a, k, s) in sums.items()
    }


def compare_scorers(model: SDTPModel, windows: list[torch.Tensor], prefix: int, scorers: dict) -> dict[str, Fidelity]:
    """``compare_methods`` for ``{name: scorer}`` on the adapter's schedule (``None`` = the trained modules)."""
    return compare_methods(model, windows, prefix, [Method(name, scorer=scorer) for name, scorer in scorers.items()])


def continuation_fidelity(model: SDTPModel, windows: list[torch.Tensor], prefix: int, scorer=None) -> Fidelity:
    """Fidelity of one scorer (``None`` = the trained modules) over ``windows``."""
    return compare_scorers(model, windows, prefix, {"scorer": scorer})["scorer"]
