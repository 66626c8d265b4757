"""The per-stage token pruning module: a two-layer GELU MLP giving (drop, keep) logits per token."""

from __future__ import annotations

import torch
from torch import nn


class TokenPruner(nn.Module):
    """Scores tokens from a decoder layer's input hidden states.

    ``LayerNorm -> Linear(d, h) -> GELU -> Linear(h, 2)``. The input norm is our addition to the
    paper's MLP: residual streams carry a few huge "massive activation" tokens whose raw scale would
    otherwise dominate the first linear layer.

    Args:
        hidden_size: ``d``, the decoder's hidden size.
        inner_size: ``h``, the MLP's hidden width.
    """

    def __init__(self, hidden_size: int, inner_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, inner_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(inner_size, 2)
        # keep-minus-drop as a dot product; not saved (adapters hold only the four layers' weights)
        self.register_buffer("margin_weights", torch.tensor([-1.0, 1.0]), persistent=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[B, n, d]`` hidden states (any dtype) -> ``[B, n, 2]`` logits in the module's dtype."""
        x = hidden_states.to(self.fc1.weight.dtype)
        return self.fc2(self.act(self.fc1(self.norm(x))))

    def keep_margin(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[B, n, d]`` -> ``[B, n]`` keep-minus-drop margin (``keep_margin(self(hidden_states))``).

        The inference path: on 2-D rows each linear layer is one matmul, and the margin is one
        matrix-vector product with ``[-1, 1]`` (the same rounding as the subtraction), so a stage
        launches 9 kernels instead of 13.
        """
        batch, n, d = hidden_states.shape
        x = hidden_states.reshape(batch * n, d).to(self.fc1.weight.dtype)
        logits = self.fc2(self.act(self.fc1(self.norm(x))))  # [B * n, 2]
        return logits.mv(self.margin_weights.to(logits.dtype)).view(batch, n)


def keep_margin(logits: torch.Tensor) -> torch.Tensor:
    """``[..., 2]`` logits -> ``[...]`` keep-minus-drop margin, the score that ranks tokens."""
    return logits[..., 1] - logits[..., 0]


def keep_probability(logits: torch.Tensor) -> torch.Tensor:
    """``[..., 2]`` logits -> ``[...]`` softmax probability of the keep class."""
    return torch.softmax(logits, dim=-1)[..., 1]


class ModuleScorer:
    """The trained scorer: stage ``layer``'s module's keep margin, ``[B, n, d] -> [B, n]``.

    Holds the modules, not the ``SDTPModel``, so the hooks on the base model never keep the wrapper alive.
    """

    def __init__(self, pruners: nn.ModuleDict):
        self.pruners = pruners

    def __call__(self, layer: int, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if str(layer) not in self.pruners:
            raise ValueError(
                f"layer {layer} has no trained pruning module; the adapter's stage layers are "
                f"{sorted(int(k) for k in self.pruners)} (use a subset of them, or use_scorer() with a training-free scorer)"
            )
        return self.pruners[str(layer)].keep_margin(hidden)
