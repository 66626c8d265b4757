"""Stage 1 as a pass over a dataset: saliency targets and stage inputs under the full model.

The result lets the pruning modules be fitted to saliency (``fit_to_saliency``) in seconds per
epoch without running the base model again; the joint stage-2 loop then fine-tunes them under
simulated pruning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..model import SDTPModel
from ..pruning.selection import protected_mask
from .saliency import normalize_saliency, token_saliency


@dataclass
class MarkedSample:
    """One sequence after token marking.

    Attributes:
        stages: ``{layer: (hidden [n_c, d], saliency [n_c])}`` for the ``n_c`` tokens a stage may
            prune (not protected); hidden states are the stage layer's input under the full model,
            saliency is normalised to [0, 1].
    """

    stages: dict[int, tuple[torch.Tensor, torch.Tensor]]


def mark_tokens(model: SDTPModel, dataset, dtype: torch.dtype = torch.bfloat16) -> list[MarkedSample]:
    """Run token marking on every row (``input_ids``, ``target_mask``) of ``dataset``.

    Hidden states are stored in ``dtype``: bf16 by default (160 samples of 640 tokens on a
    576-wide, 10-stage model take about 1 GB; fp16 would overflow on Gemma's large residual stream).
    """
    layers = list(model.schedule.layers)
    marked = []
    captured: dict[int, torch.Tensor] = {}
    for row in tqdm(dataset, desc="token marking"):
        ids = torch.tensor([row["input_ids"]], device=model.device)
        target = torch.tensor([row["target_mask"]], dtype=torch.bool, device=model.device)
        with model.disable_pruning():
            saliency = token_saliency(model.base_model, ids, target, layers, captured=captured)
        n = ids.shape[1]
        candidates = ~protected_mask(torch.arange(n, device=ids.device)[None], n, model.schedule)
        marked.append(
            MarkedSample(
                {
                    layer: (
                        captured[layer][0][candidates[0]].detach().to(dtype),
                        normalize_saliency(saliency[layer], candidates)[0][candidates[0]],
                    )
                    for layer in layers
                }
            )
        )
    return marked
