"""The training loop: AdamW on the pruning modules only, progress bar, checkpoints, loss history."""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..files import atomic_write_bytes
from ..model import SDTPModel
from ..schedule import is_int, is_number
from .losses import saliency_losses, weighted_saliency_loss
from .marking import MarkedSample
from .objective import sdtp_loss


@dataclass
class TrainingArguments:
    """How to run stage 2.

    Attributes:
        output_dir: where checkpoints (``checkpoint-<step>/``) and the final adapter are written.
        steps: optimisation steps (one sample per step; samples have different lengths).
        learning_rate: AdamW learning rate, cosine-decayed to 10% over ``steps``.
        warmup_steps: linear warm-up steps.
        max_grad_norm: gradient clipping.
        save_every: checkpoint period in steps (0 = only the final adapter).
        seed: shuffling and Gumbel noise seed.
        overwrite_output_dir: train into a non-empty ``output_dir`` (its earlier checkpoints are removed).
    """

    output_dir: str
    steps: int = 300
    learning_rate: float = 2e-3
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    save_every: int = 100
    seed: int = 0
    overwrite_output_dir: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "warmup_steps", "save_every", "seed"):
            value = getattr(self, name)
            if not is_int(value) or value < 0 or (name == "steps" and value == 0):
                raise ValueError(f"TrainingArguments.{name}={value!r} is invalid: expected an integer >= {int(name == 'steps')}")
        for name in ("learning_rate", "max_grad_norm"):
            value = getattr(self, name)
            if not is_number(value) or not value > 0:
                raise ValueError(f"TrainingArguments.{name}={value!r} is invalid: expected a finite number > 0")
        if not isinstance(self.overwrite_output_dir, bool):
            raise ValueError(f"TrainingArguments.overwrite_output_dir={self.overwrite_output_dir!r} is invalid: expected True or False")


def train(model: SDTPModel, dataset, args: TrainingArguments) -> list[dict]:
    """Train ``model``'s pruning modules on ``dataset`` (rows with ``input_ids`` and ``target_mask``).

    Returns the per-step loss history, also written to ``output_dir/trainer_state.json``.
    """
    check_dataset(dataset, model.config.vocab_size)
    out = Path(args.output_dir)
    if out.is_dir() and any(out.iterdir()):
        if not args.overwrite_output_dir:
            raise ValueError(
                f"TrainingArguments.output_dir={args.output_dir!r} is not empty (an earlier run's files): "
                "choose another folder or set overwrite_output_dir=True"
            )
        for old in out.glob("checkpoint-*"):
            shutil.rmtree(old)  # stale checkpoints of the earlier run would mix with this run's
    accelerator = Accelerator()
    # a local generator: the seed fixes the Gumbel noise without reseeding the caller's global state
    generator = torch.Generator(device=accelerator.device).manual_seed(args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, args))
    model.pruners.train()
    order = list(range(len(dataset)))
    rng = random.Random(args.seed)
    history: list[dict] = []
    bar = tqdm(range(1, args.steps + 1), desc="sdtp train", disable=not accelerator.is_local_main_process)
    for step in bar:
        if (step - 1) % len(order) == 0:
            rng.shuffle(order)
        row = dataset[order[(step - 1) % len(order)]]
        ids = torch.tensor([row["input_ids"]], device=accelerator.device)
        target = torch.tensor([row["target_mask"]], dtype=torch.bool, device=accelerator.device)
        terms = sdtp_loss(model, ids, target, generator=generator)
        if not math.isfinite(terms.total.item()):
            saved = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
            raise FloatingPointError(
                f"training loss is {terms.total.item()} at step {step} (row {order[(step - 1) % len(order)]}); stopped "
                f"without saving this adapter. Last good checkpoint: {str(saved[-1]) if saved else 'none'}. "
                "Lower learning_rate or check the data."
            )
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(terms.total)
        accelerator.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()
        schedule.step()
        history.append({"step": step, "loss": terms.total.item(), "lm": terms.lm, "mse": terms.mse, "rank": terms.rank})
        bar.set_postfix(lm=f"{terms.lm:.3f}", mse=f"{terms.mse:.3f}", rank=f"{terms.rank:.3f}")
        if args.save_every and step % args.save_every == 0 and step != args.steps:
            _checkpoint(model, out / f"checkpoint-{step}", args, history)
    model.pruners.eval()
    _checkpoint(model, out, args, history)
    return history


def fit_to_saliency(model: SDTPModel, marked: list[MarkedSample], epochs: int, learning_rate: float = 2e-3, seed: int = 0) -> list[float]:
    """Stage-2 warm start: fit every module to its stage's saliency on token-marked samples.

    Minimises ``w_mse * L_mse + w_rank * L_rank`` averaged over stages (weights from the config),
    one sample per step, without running the base model. Returns the mean loss of each epoch.
    """
    if not is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} is invalid: expected an integer >= 1")
    if not marked:
        raise ValueError("marked is empty: fit_to_saliency needs at least one token-marked sample")
    cfg = model.sdtp_config
    params = [p for p in model.pruners.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    order = list(range(len(marked)))
    rng = random.Random(seed)
    model.pruners.train()
    history = []
    for epoch in tqdm(range(epochs), desc="fit to saliency"):
        rng.shuffle(order)
        total = 0.0
        for i in order:
            terms = []
            for layer, (hidden, target) in marked[i].stages.items():
                mse, rank = saliency_losses(model.pruner(layer)(hidden), target)
                terms.append(weighted_saliency_loss(mse, rank, cfg))
            loss = torch.stack(terms).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        history.append(total / len(order))
    model.pruners.eval()
    return history


def check_dataset(dataset, vocab_size: int) -> None:
    """Refuse, before any work, a dataset the loop cannot train on, naming the row and the field."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        raise TypeError(
            f"dataset must be a datasets.Dataset with 'input_ids' and 'target_mask' columns, got {type(dataset).__name__} "
            "(a list of dicts becomes one with datasets.Dataset.from_list(rows))"
        )
    missing = {"input_ids", "target_mask"} - set(columns)
    if missing:
        raise ValueError(f"dataset lacks columns {sorted(missing)}; it needs 'input_ids' and 'target_mask'")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: it needs at least one row")
    for i, row in enumerate(dataset):
        ids, target = row["input_ids"], row["target_mask"]
        if len(target) != len(ids):
            raise ValueError(f"dataset row {i}: target_mask has {len(target)} entries but input_ids has {len(ids)}; they must match")
        if not any(target[1:]):
            raise ValueError(f"dataset row {i}: target_mask selects no token after position 0; nothing to learn from")
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"dataset row {i}: token id {bad[0]} is outside the model's vocabulary [0, {vocab_size})")


def _lr_factor(step: int, args: TrainingArguments) -> float:
    if step < args.warmup_steps:
        return (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _checkpoint(model: SDTPModel, directory: Path, args: TrainingArguments, history: list[dict]) -> None:
    model.save_pretrained(directory)
    state = {"args": asdict(args), "history": history}
    atomic_write_bytes(directory / "trainer_state.json", (json.dumps(state, indent=1) + "\n").encode())
