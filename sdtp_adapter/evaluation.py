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
    """

    base_nll: float
    nll: float
    delta_nll_pct: float
    top1: float
    kl: float
    windows: int
    tokens: int

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


def compare_scorers(model: SDTPModel, windows: list[torch.Tensor], prefix: int, scorers: dict) -> dict[str, Fidelity]:
    """Fidelity of several scorers on the same schedule; the unpruned reference is computed once per window.

    Args:
        windows: ``[1, prefix + C]`` token windows.
        scorers: ``{name: scorer}``; ``None`` means the trained pruning modules.
    """
    sums = {name: [0.0, 0.0, 0, 0.0] for name in scorers}  # base nll, nll, agree, kl
    count = 0
    for window in windows:
        targets = window[0, prefix:, None]
        ref = continuation_logprobs(model, window, prefix, prune=False)
        ref_nll = float(-ref.gather(1, targets).sum())
        for name, scorer in scorers.items():
            guard = model.use_scorer(scorer) if scorer is not None else contextlib.nullcontext()
            with guard:
                got = continuation_logprobs(model, window, prefix, prune=True)
            acc = sums[name]
            acc[0] += ref_nll
            acc[1] += float(-got.gather(1, targets).sum())
            acc[2] += int((ref.argmax(-1) == got.argmax(-1)).sum())
            acc[3] += float((ref.exp() * (ref - got)).sum())
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
        )
        for name, (b, n, a, k) in sums.items()
    }


def continuation_fidelity(model: SDTPModel, windows: list[torch.Tensor], prefix: int, scorer=None) -> Fidelity:
    """Fidelity of one scorer (``None`` = the trained modules) over ``windows``."""
    return compare_scorers(model, windows, prefix, {"scorer": scorer})["scorer"]
