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

    Rows may be left-padded (``attention_mask``): each row keeps its own budget from its real length,
    with its own protected tokens, exactly as it would alone.

    Args:
        schedule: stage layers and budgets (shared with inference).
        pruner: stage layer -> its pruning module (``SDTPModel.pruner``).
        length: ``N``.
        temperature: Gumbel-Softmax temperature.
        gumbel: sample Gumbel noise (training) or use the plain logits (deterministic evaluation).
        attention_mask: ``[B, N]`` 1 for real tokens, 0 for left padding; ``None`` = no padding.
        noise_seeds: one seed per row for its Gumbel noise, drawn over the row's real tokens only, so
            a sample gets the same noise whatever batch, padding or process it lands in; ``None`` =
            torch's global generator.
    """

    def __init__(
        self,
        schedule: StageSchedule,
        pruner: Callable[[int], nn.Module],
        length: int,
        temperature: float,
        gumbel: bool = True,
        attention_mask: torch.Tensor | None = None,
        noise_seeds: list[int] | None = None,
    ):
        self.schedule = schedule
        self.pruner = pruner
        self.length = length
        self.temperature = temperature
        self.gumbel = gumbel
        self.pads = None if attention_mask is None else (attention_mask.shape[1] - attention_mask.sum(dim=1)).tolist()
        if self.pads is not None and attention_mask.shape[1] != length:
            raise ValueError(f"attention_mask has {attention_mask.shape[1]} columns for a simulation of {length} tokens")
        self.lengths = [length] if self.pads is None else [length - p for p in self.pads]
        self.noise_seeds = noise_seeds
        self._generators: list[torch.Generator] | None = None
        # stage layer -> one budget per row (one entry when unpadded: broadcast over rows)
        per_row = [schedule.budgets(n) for n in self.lengths]
        self.budgets = {layer: [row[i] for row in per_row] for i, layer in enumerate(schedule.layers)}
        self.records: list[StageRecord] = []
        self.keep: torch.Tensor | None = None  # [B, N] straight-through cumulative keep
        self._bias: dict | None = None  # per layer mask, reset at each stage

    def on_stage(self, layer: int, hidden: torch.Tensor) -> None:
        """Decide which tokens survive stage ``layer`` from its input ``hidden [B, N, d]``."""
        batch, n, _ = hidden.shape
        if n != self.length:
            raise ValueError(f"simulation built for {self.length} tokens got {n}")
        positions = torch.arange(n, device=hidden.device).expand(batch, -1)
        if self.pads is not None:
            positions = positions - torch.tensor(self.pads, device=hidden.device)[:, None]
        real = positions >= 0
        lengths = self.lengths if self.pads is not None else self.lengths * batch
        protected = protected_mask(positions, lengths, self.schedule)
        alive = self.records[-1].kept if self.records else real
        logits = self.pruner(layer)(hidden)
        noisy = logits - torch.log(-torch.log(self._uniform(logits, real))) if self.gumbel else logits
        soft = keep_probability(noisy / self.temperature)
        budgets = self.budgets[layer] if self.pads is not None else self.budgets[layer] * batch
        hard = select_mask(soft, protected, budgets, candidates=alive).to(soft.dtype)
        decision = torch.where(protected, torch.ones_like(soft), hard + soft - soft.detach())
        decision = torch.where(real, decision, torch.zeros_like(soft))  # padding: never a key, no gradient
        self.keep = decision if self.keep is None else self.keep * decision
        self.records.append(StageRecord(layer, logits, alive & ~protected, hard.bool()))
        self._bias = None

    def _uniform(self, logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """``[B, N, 2]`` uniform noise in (0, 1); with ``noise_seeds``, row b's real tokens get the draws
        of its own generator, in order (padding gets 0.5, which is never used)."""
        if self.noise_seeds is None:
            u = torch.rand(logits.shape, device=logits.device, dtype=logits.dtype)
        else:
            if self._generators is None:
                if len(self.noise_seeds) != logits.shape[0]:
                    raise ValueError(f"noise_seeds has {len(self.noise_seeds)} seeds for {logits.shape[0]} rows")
                self._generators = [torch.Generator(device=logits.device).manual_seed(s) for s in self.noise_seeds]
            u = torch.full_like(logits, 0.5)
            for row, generator in enumerate(self._generators):
                count = self.lengths[row] if self.pads is not None else self.length
                u[row, self.length - count :] = torch.rand((count, 2), generator=generator, device=logits.device, dtype=logits.dtype)
        return u.clamp_(1e-9, 1 - 1e-9)

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
