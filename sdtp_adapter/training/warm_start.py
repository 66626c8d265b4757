"""The warm start: fit every pruning module to its stage's saliency on token-marked samples.

The base model does not run: each step is a few small MLP forwards on stored hidden states, so an
epoch over hundreds of marked samples takes seconds (docs/training.md, "Why the warm start").
"""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..model import SDTPModel
from ..schedule import is_int
from .batches import EpochSampler
from .marking import MarkedSample
from .objective import TrainingObjective


def fit_to_saliency(
    model: SDTPModel,
    marked: list[MarkedSample],
    epochs: int,
    learning_rate: float = 2e-3,
    seed: int = 0,
    batch_size: int = 1,
    objective: torch.nn.Module | None = None,
    accelerator: Accelerator | None = None,
    total: int | None = None,
) -> list[float]:
    """Warm start: fit every module to its stage's saliency on token-marked samples (MSE + ranking,
    weights from the config), without running the base model. Returns the mean loss of each epoch.

    Args:
        marked: this process's marked samples.
        batch_size: marked samples per step on this process.
        objective: the (prepared) ``TrainingObjective``; with several processes its gradients are averaged.
        accelerator: for the process count and the progress bar; ``None`` = one process.
        total: marked samples over all processes (sets the steps per epoch so that every process
            takes the same number; ``None`` = this process's count).
    """
    if not is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} is invalid: expected an integer >= 1")
    if not marked:
        raise ValueError("marked is empty: fit_to_saliency needs at least one token-marked sample")
    objective = objective or TrainingObjective(model)
    processes = accelerator.num_processes if accelerator else 1
    largest_shard = math.ceil(total / processes) if total else len(marked)
    steps = math.ceil(largest_shard / batch_size)
    params = [p for p in model.pruners.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sampler = EpochSampler(len(marked), seed)
    model.pruners.train()
    history = []
    main = accelerator.is_main_process if accelerator else True
    bar = tqdm(total=epochs * steps, desc="warm start", disable=not main)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        order = list(sampler)
        total_loss = torch.zeros(())
        for step in range(steps):
            picked = [marked[order[(step * batch_size + k) % len(order)]] for k in range(batch_size)]
            loss = objective(marked=picked)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.detach().float().cpu()
            bar.update(1)
        mean = total_loss / steps
        if accelerator is not None:
            mean = accelerator.reduce(mean.to(accelerator.device), "mean").cpu()
        history.append(float(mean))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    bar.close()
    model.pruners.eval()
    return history
