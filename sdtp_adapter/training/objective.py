"""One training step's loss: saliency (stage 1) + simulated pruning and the three losses (stage 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import SDTPModel
from ..quantization import prepare_4bit_for_backward
from .losses import lm_loss, saliency_losses, weighted_saliency_loss
from .simulation import MaskSimulation
from .saliency import normalize_saliency, target_span, token_saliency


@dataclass
class LossTerms:
    """Weighted total and its unweighted parts (floats for logging except ``total``)."""

    total: torch.Tensor
    lm: float
    mse: float
    rank: float


def sdtp_loss(
    model: SDTPModel, input_ids: torch.Tensor, target_mask: torch.Tensor, gumbel: bool = True, generator: torch.Generator | None = None
) -> LossTerms:
    """``w_lm * L_lm + w_mse * L_mse + w_rank * L_rank`` for one batch.

    ``L_mse`` and ``L_rank`` are averaged over stages and sequences; each stage compares the module's
    keep probability / margin with the normalised saliency of the tokens it may prune (alive, not
    protected) at that stage.

    Args:
        input_ids: ``[B, N]``.
        target_mask: ``[B, N]`` bool, tokens whose log-likelihood is the saliency objective and the LM loss.
        gumbel: sample Gumbel noise in the simulated pruning (``False``: deterministic).
        generator: source of that noise; ``None`` = torch's global one.
    """
    cfg = model.sdtp_config
    with model.disable_pruning():
        saliency = token_saliency(model.base_model, input_ids, target_mask, list(model.schedule.layers))
    prepare_4bit_for_backward(model.base_model)  # the saliency pass did it too; cheap when nothing is packed
    simulation = MaskSimulation(model.schedule, model.pruner, input_ids.shape[1], cfg.gumbel_temperature, gumbel, generator)
    keep = target_span(target_mask)
    with model.simulate(simulation):
        logits = model(input_ids=input_ids, use_cache=False, logits_to_keep=keep).logits
    lm = lm_loss(logits, input_ids[:, -keep:], target_mask[:, -keep:])
    mse_terms, rank_terms = [], []
    for record in simulation.records:
        for row in range(input_ids.shape[0]):
            candidates = record.candidates[row]
            if int(candidates.sum()) < 2:
                continue
            target = normalize_saliency(saliency[record.layer][row : row + 1], candidates[None])[0][candidates]
            mse, rank = saliency_losses(record.logits[row][candidates], target)
            mse_terms.append(mse)
            rank_terms.append(rank)
    zero = lm.new_zeros(())
    mse = torch.stack(mse_terms).mean() if mse_terms else zero
    rank = torch.stack(rank_terms).mean() if rank_terms else zero
    total = cfg.lm_loss_weight * lm + weighted_saliency_loss(mse, rank, cfg)
    return LossTerms(total, lm.item(), mse.item(), rank.item())
