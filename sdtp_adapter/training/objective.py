"""One training step's loss: saliency (stage 1) + simulated pruning and the three losses (stage 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..model import SDTPModel
from ..quantization import prepare_4bit_for_backward
from .batches import noise_seed
from .losses import distill_loss, lm_loss, saliency_losses, weighted_saliency_loss
from .marking import MarkedSample
from .simulation import MaskSimulation
from .saliency import normalize_saliency, padded_inputs, target_span, token_saliency


@dataclass
class LossTerms:
    """Weighted total and its unweighted parts (floats for logging except ``total``)."""

    total: torch.Tensor
    lm: float
    mse: float
    rank: float
    distill: float = 0.0


def sdtp_loss(
    model: SDTPModel,
    input_ids: torch.Tensor,
    target_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    gumbel: bool = True,
    noise_seeds: list[int] | None = None,
) -> LossTerms:
    """``w_lm * L_lm + w_kl * L_kl + w_mse * L_mse + w_rank * L_rank`` for one batch, the mean of its rows' losses.

    Each row's ``L_lm`` is the mean over its target tokens, and so is its ``L_kl`` (the distillation
    term, computed only when ``distill_loss_weight > 0``: KL from the unpruned model's next-token
    distributions, whose logits the saliency pass already produced); its ``L_mse`` and ``L_rank`` are means over
    stages, each stage comparing the module's keep probability / margin with the normalised saliency
    of the tokens it may prune (alive, not protected) at that stage. A batch's loss is the plain mean
    of its rows' losses, so that data-parallel ranks averaging their gradients compute what one
    process would on the whole batch.

    Args:
        input_ids: ``[B, N]``, left-padded when rows differ in length.
        target_mask: ``[B, N]`` bool, tokens whose log-likelihood is the saliency objective and the LM
            loss (False on padding).
        attention_mask: ``[B, N]`` 1 on real tokens, 0 on left padding; ``None`` = no padding.
        gumbel: sample Gumbel noise in the simulated pruning (``False``: deterministic).
        noise_seeds: one Gumbel seed per row (``MaskSimulation``); ``None`` = torch's global generator.
    """
    cfg = model.sdtp_config
    padding = padded_inputs(attention_mask)
    teacher: dict[str, torch.Tensor] | None = {} if cfg.distill_loss_weight > 0 else None
    with model.disable_pruning():
        saliency = token_saliency(
            model.base_model, input_ids, target_mask, list(model.schedule.layers), attention_mask=attention_mask, logits_out=teacher
        )
    prepare_4bit_for_backward(model.base_model)  # the saliency pass did it too; cheap when nothing is packed
    simulation = MaskSimulation(
        model.schedule, model.pruner, input_ids.shape[1], cfg.gumbel_temperature, gumbel, attention_mask, noise_seeds
    )
    keep = target_span(target_mask)
    with model.simulate(simulation):
        logits = model(input_ids=input_ids, use_cache=False, logits_to_keep=keep, **padding).logits
    rows = input_ids.shape[0]
    lm = torch.stack([lm_loss(logits[r : r + 1], input_ids[r : r + 1, -keep:], target_mask[r : r + 1, -keep:]) for r in range(rows)])
    zero = lm.new_zeros(())
    distill = zero
    if teacher is not None:
        distill = torch.stack(
            [distill_loss(logits[r : r + 1], teacher["logits"][r : r + 1], target_mask[r : r + 1, -keep:]) for r in range(rows)]
        ).mean()
    mse_rows, rank_rows = [], []
    for row in range(rows):
        mse_terms, rank_terms = [], []
        for record in simulation.records:
            candidates = record.candidates[row]
            if int(candidates.sum()) < 2:
                continue
            target = normalize_saliency(saliency[record.layer][row : row + 1], candidates[None])[0][candidates]
            mse, rank = saliency_losses(record.logits[row][candidates], target)
            mse_terms.append(mse)
            rank_terms.append(rank)
        mse_rows.append(torch.stack(mse_terms).mean() if mse_terms else zero)
        rank_rows.append(torch.stack(rank_terms).mean() if rank_terms else zero)
    lm, mse, rank = lm.mean(), torch.stack(mse_rows).mean(), torch.stack(rank_rows).mean()
    total = cfg.lm_loss_weight * lm + cfg.distill_loss_weight * distill + weighted_saliency_loss(mse, rank, cfg)
    return LossTerms(total, lm.item(), mse.item(), rank.item(), distill.item())


def warm_start_loss(model: SDTPModel, marked: list[MarkedSample]) -> torch.Tensor:
    """``w_mse * L_mse + w_rank * L_rank`` of each marked sample, averaged over its stages, then over
    the samples (the base model does not run)."""
    per_sample = []
    for sample in marked:
        terms = []
        for layer, (hidden, target) in sample.stages.items():
            module = model.pruner(layer)
            mse, rank = saliency_losses(module(hidden.to(module.fc1.weight.device)), target.to(module.fc1.weight.device))
            terms.append(weighted_saliency_loss(mse, rank, model.sdtp_config))
        per_sample.append(torch.stack(terms).mean())
    return torch.stack(per_sample).mean()


class TrainingObjective(nn.Module):
    """The trainable part of an ``SDTPModel`` as one module whose ``forward`` returns the loss, so that
    ``accelerator.prepare`` (DDP, FSDP, mixed precision) wraps the computation that uses the modules.

    Its only submodule is ``pruners``: DDP broadcasts and all-reduces the pruning modules, never the
    frozen base model, which the forward reaches through the ``SDTPModel`` held outside the module tree.
    """

    def __init__(self, model: SDTPModel):
        super().__init__()
        self.pruners = model.pruners
        self.__dict__["sdtp_model"] = model  # not registered: the base is no part of the trained state

    def forward(self, batch: dict | None = None, marked: list[MarkedSample] | None = None, epoch: int = 0, seed: int = 0) -> dict:
        """Joint loss of a collated ``batch`` (``batches.collate_left_padded``) under simulated pruning, or
        the warm-start loss of ``marked`` samples.

        Returns:
            ``{"loss": scalar tensor}``, plus the float terms ``lm``, ``distill``, ``mse``, ``rank`` for a batch.
        """
        if marked is not None:
            return {"loss": warm_start_loss(self.sdtp_model, marked)}
        device = self.pruners[next(iter(self.pruners))].fc1.weight.device
        ids = batch["input_ids"].to(device)
        target = batch["target_mask"].to(device)
        mask = batch["attention_mask"].to(device)
        seeds = [noise_seed(seed, epoch, i) for i in batch["index"].tolist()]
        # unpadded batches take the model's plain causal path
        terms = sdtp_loss(self.sdtp_model, ids, target, attention_mask=mask if batch["padded"] else None, noise_seeds=seeds)
        return {"loss": terms.total, "lm": terms.lm, "distill": terms.distill, "mse": terms.mse, "rank": terms.rank}
