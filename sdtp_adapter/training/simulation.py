"""Stage 2's stand-in for real pruning: Gumbel top-k keep decisions applied as attention masks.

Every token still flows through every layer (so gradients reach every decision), but a token
dropped at stage s stops being attended to by the other tokens in all deeper layers, with the same
budget and protected tokens as at inference. The hard decision uses a straight-through estimator:
forward value 0/1, gradient of the Gumbel-Softmax keep probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..pruning.pruner import keep_probability
from ..pruning.selection import protected_mask, select_mask
from ..schedule import StageSchedule

MASK_EPS = 1e-6  # log(keep + eps): finite bias for dropped keys and DynamicViT's gradient w.r.t. keep


@dataclass
class StageRecord:
    """What one stage decided in a simulated forward.

    Attributes:
        layer: stage layer index.
        logits: ``[B, N, 2]`` module output (drop, keep) for every token.
        candidates: ``[B, N]`` bool, tokens alive before this stage and not protected.
        kept: ``[B, N]`` bool, hard decision after this stage.
    """

    layer: int
    logits: torch.Tensor
    candidates: torch.Tensor
    kept: torch.Tensor


class MaskSimulation:
    """Cumulative keep mask for one training forward of ``length`` tokens.

    Args:
        schedule: stage layers and budgets (shared with inference).
        pruner: stage layer -> its pruning module (``SDTPModel.pruner``).
        length: ``N``.
        temperature: Gumbel-Softmax temperature.
        gumbel: sample Gumbel noise (training) or use the plain logits (deterministic evaluation).
        generator: source of the Gumbel noise (on the hidden states' device); ``None`` = torch's global one.
    """

    def __init__(self, schedule: StageSchedule, pruner: Callable[[int], nn.Module], length: int, temperature: float, gumbel: bool = True, generator: torch.Generator | None = None):
        self.schedule = schedule
        self.pruner = pruner
        self.length = length
        self.temperature = temperature
        self.gumbel = gumbel
        self.generator = generator
        self.budgets = dict(zip(schedule.layers, schedule.budgets(length)))
        self.records: list[StageRecord] = []
        self.keep: torch.Tensor | None = None  # [B, N] straight-through cumulative keep
        self._bias: dict | None = None  # per layer mask, reset at each stage

    def on_stage(self, layer: int, hidden: torch.Tensor) -> None:
        """Decide which tokens survive stage ``layer`` from its input ``hidden [B, N, d]``."""
        batch, n, _ = hidden.shape
        if n != self.length:
            raise ValueError(f"simulation built for {self.length} tokens got {n}")
        positions = torch.arange(n, device=hidden.device).expand(batch, -1)
        protected = protected_mask(positions, n, self.schedule)
        alive = self.records[-1].kept if self.records else torch.ones_like(protected)
        logits = self.pruner(layer)(hidden)
        if self.gumbel:
            u = torch.rand(logits.shape, generator=self.generator, device=logits.device, dtype=logits.dtype).clamp_(1e-9, 1 - 1e-9)
            noisy = logits - torch.log(-torch.log(u))
        else:
            noisy = logits
        soft = keep_probability(noisy / self.temperature)
        hard = select_mask(soft, protected, self.budgets[layer], candidates=alive).to(soft.dtype)
        decision = torch.where(protected, torch.ones_like(soft), hard + soft - soft.detach())
        self.keep = decision if self.keep is None else self.keep * decision
        self.records.append(StageRecord(layer, logits, alive & ~protected, hard.bool()))
        self._bias = None

    def attention_bias(self, hidden: torch.Tensor, layer_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 1, N, N]`` additive mask: the layer's own mask (causal, sliding window; ``None`` = plain
        causal), plus ``log(keep_j)`` on keys; each query always sees itself."""
        key = id(layer_mask) if layer_mask is not None else None
        if self._bias is None:
            self._bias = {}
        if key not in self._bias:
            n = self.length
            minimum = torch.finfo(torch.float32).min
            if layer_mask is None:
                base = torch.full((n, n), minimum, device=hidden.device).triu(1)[None, None]
            elif layer_mask.dtype == torch.bool:
                base = torch.zeros(layer_mask.shape, device=hidden.device).masked_fill(~layer_mask, minimum)
            else:
                base = layer_mask.float()
            bias = base + torch.log(self.keep + MASK_EPS)[:, None, None, :]
            eye = torch.eye(n, dtype=torch.bool, device=hidden.device)
            self._bias[key] = bias.masked_fill(eye, 0.0).to(hidden.dtype)
        return self._bias[key]
