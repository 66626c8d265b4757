"""The training road: token marking, warm start and joint training under accelerate, resumable.

One process or many (``accelerate launch``): the trainable state is ``TrainingObjective`` (the pruning
modules only) prepared by accelerate with its optimizer, scheduler and ``DataLoader``; the frozen base
model runs inside its forward. Marking is sharded across processes; only the main process writes
files or prints.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..model import SDTPModel
from ..persistence import save_adapter
from . import checkpoints as ckpt
from .arguments import TrainingArguments
from .batches import EpochSampler, IndexedRows, collate_left_padded
from .checks import check_dataset
from .curves import write_curves
from .marking import MarkedSample, load_marking, mark_to_disk, mark_tokens
from .objective import TrainingObjective
from .warm_start import fit_to_saliency


@dataclass
class TrainingResult:
    """What ``train`` did.

    Attributes:
        output_dir: the folder holding the adapter (when a training phase ran), curves and state.
        warm_start: mean warm-start loss per epoch.
        joint: one dict per joint step: ``step``, ``loss``, ``lm``, ``mse``, ``rank``, ``lr``,
            ``seconds`` (wall time of the step), ``samples`` (global batch size) and ``rows`` (the
            dataset rows of the global batch, process by process).
        marked_rows: the dataset rows each process marked (one list per process).
        files: the files written into ``output_dir`` (main process).
    """

    output_dir: Path
    warm_start: list[float] = field(default_factory=list)
    joint: list[dict] = field(default_factory=list)
    marked_rows: list[list[int]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def make_accelerator(args: TrainingArguments) -> Accelerator:
    """The ``Accelerator`` of a run. The LR schedule is per optimisation step whatever the process
    count (accelerate would otherwise step it once per process)."""
    return Accelerator(mixed_precision=args.mixed_precision, step_scheduler_with_optimizer=False)


def train(model: SDTPModel, dataset, args: TrainingArguments, accelerator: Accelerator | None = None) -> TrainingResult:
    """Run ``args.phases`` on ``model``'s pruning modules over ``dataset`` (rows with ``input_ids`` and
    ``target_mask``; ``training.samples.build_samples`` makes them from text or chats).

    Writes into ``args.output_dir``: the adapter (``save_pretrained`` layout), ``trainer_state.json``,
    ``loss_curves.json`` / ``.png`` and ``checkpoint-<step>/`` folders.

    Raises:
        ValueError: bad dataset rows, a non-empty output folder without ``overwrite_output_dir``, or a
            checkpoint from another setup.
        FloatingPointError: a non-finite loss (nothing is saved from that step; the message names the
            last good checkpoint).
    """
    accelerator = accelerator or make_accelerator(args)
    out = Path(args.output_dir)
    shard = (accelerator.process_index, accelerator.num_processes)
    resume_state, resume_dir = None, None
    if args.resume_from_checkpoint is not None:
        resume_dir = ckpt.resolve_checkpoint(args.resume_from_checkpoint, out)
        resume_state = ckpt.read_state(resume_dir)
        ckpt.check_resumable(resume_state, model.sdtp_config.to_dict(), args.to_dict(), accelerator.num_processes, resume_dir)
    else:
        refuse_earlier_run(out, args)
    if "mark" in args.phases or "joint" in args.phases:
        check_dataset(dataset, model.config.vocab_size, model.schedule)
    if resume_state is None:
        _clear_output_dir(out, accelerator)
    _place(model, accelerator)
    objective = accelerator.prepare_model(TrainingObjective(model))
    marking_dir = Path(args.marking_dir) if args.marking_dir else out / "marking"
    main = accelerator.is_main_process
    result = TrainingResult(out)
    marked: list[MarkedSample] | None = None
    if resume_state is not None:
        result.warm_start = resume_state.get("warm_start", [])
        result.marked_rows = resume_state.get("marked_rows", [])
    else:
        if "mark" in args.phases:
            if "warm" in args.phases:  # used at once, never saved
                marked = mark_tokens(model, dataset, shard=shard, progress=main)
            else:  # saved for later runs, part by part: a killed marking resumes
                marked = mark_to_disk(model, dataset, marking_dir, shard, progress=main)
            result.marked_rows = gather_object([list(range(shard[0], len(dataset), shard[1]))])
        if "warm" in args.phases:
            if marked is None:
                marked = load_marking(marking_dir, shard)
            total = len(dataset) if "mark" in args.phases else None
            result.warm_start = fit_to_saliency(
                model, marked, args.warm_start_epochs, args.warm_start_learning_rate, args.seed,
                args.per_device_batch_size, objective, accelerator, total,
            )
        del marked
    if "joint" in args.phases:
        result.joint = _joint(model, objective, dataset, args, accelerator, out, resume_dir, resume_state, result)
    accelerator.wait_for_everyone()
    trained = "warm" in args.phases or "joint" in args.phases
    weights = _adapter_weights(accelerator, objective) if trained else None  # every process: FSDP gathers shards
    if main and trained:
        save_adapter(out, model.sdtp_config, weights)
        ckpt.write_state(out, _state(model, args, accelerator, len(result.joint), result))
        result.files = [out / "adapter_config.json", out / "adapter_model.safetensors", out / ckpt.STATE_NAME]
        result.files += write_curves(out, result.warm_start, result.joint)
    accelerator.wait_for_everyone()
    return result


def _joint(model, objective, dataset, args, accelerator, out, resume_dir, resume_state, result: TrainingResult) -> list[dict]:
    """The joint phase: ``args.steps`` optimisation steps of the SDTP loss under simulated pruning."""
    loader = DataLoader(
        IndexedRows(dataset), batch_size=args.per_device_batch_size, sampler=EpochSampler(len(dataset), args.seed),
        collate_fn=collate_left_padded,
    )
    params = [p for p in model.pruners.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, args))
    optimizer, scheduler, loader = accelerator.prepare(optimizer, scheduler, loader)
    step, history = 0, []
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        step, history = resume_state["step"], resume_state["joint"]
    accum = args.gradient_accumulation_steps
    batches = _micro_batches(loader, accelerator, step * accum)
    global_batch = args.global_batch_size_per_process * accelerator.num_processes
    main = accelerator.is_main_process
    bar = tqdm(total=args.steps, initial=step, desc="joint training", disable=not main)
    model.pruners.train()
    while step < args.steps:
        started = time.perf_counter()
        sums = torch.zeros(5, device=accelerator.device)
        seen = []
        for k in range(accum):
            epoch, batch = next(batches)
            seen.append(batch["index"])
            with accelerator.no_sync(objective) if k < accum - 1 else nullcontext():
                terms = objective(batch=batch, epoch=epoch, seed=args.seed)
                accelerator.backward(terms["loss"] / accum)
            sums += torch.tensor([float(terms["loss"].detach()), terms["lm"], terms["mse"], terms["rank"], terms["distill"]], device=accelerator.device) / accum
        total, lm, mse, rank, distill = accelerator.reduce(sums, "mean").tolist()
        rows = accelerator.gather(torch.cat(seen).to(accelerator.device)).tolist()  # process order
        if not math.isfinite(total):
            optimizer.zero_grad(set_to_none=True)
            saved = ckpt.checkpoint_dirs(out)
            raise FloatingPointError(
                f"training loss is {total} at joint step {step + 1}; stopped without saving this adapter. Last good "
                f"checkpoint: {str(saved[-1]) if saved else 'none'}. Lower learning_rate or check the data."
            )
        accelerator.clip_grad_norm_(params, args.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        history.append({"step": step, "loss": total, "lm": lm, "distill": distill, "mse": mse, "rank": rank, "lr": lr,
                        "seconds": time.perf_counter() - started, "samples": global_batch, "rows": rows})
        bar.update(1)
        bar.set_postfix(lm=f"{lm:.3f}", mse=f"{mse:.3f}", rank=f"{rank:.3f}")
        if args.save_every and step % args.save_every == 0 and step != args.steps:
            _save_checkpoint(model, objective, args, accelerator, out, step, TrainingResult(out, result.warm_start, history, result.marked_rows))
    bar.close()
    model.pruners.eval()
    return history


def _micro_batches(loader, accelerator: Accelerator, start: int):
    """Endless ``(epoch, batch)`` from micro-batch number ``start`` of this process (epochs reshuffle)."""
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError("the dataset gives no micro-batch; it needs at least one row per process")
    epoch, skip = divmod(start, per_epoch)
    while True:
        loader.set_epoch(epoch)
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            yield epoch, batch
        epoch, skip = epoch + 1, 0


def lr_factor(step: int, args: TrainingArguments) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 10% at ``steps``."""
    if step < args.warmup_steps:
        return (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _save_checkpoint(model, objective, args, accelerator, out: Path, step: int, result: TrainingResult) -> None:
    """Every process saves its part (RNG states) into a partial folder; the main one adds the adapter
    and the trainer state, then publishes it under its final name."""
    partial = ckpt.partial_dir(out, step)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    weights = _adapter_weights(accelerator, objective)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_adapter(partial, model.sdtp_config, weights)
        ckpt.write_state(partial, _state(model, args, accelerator, step, result))
        ckpt.publish_checkpoint(partial, out, step, args.save_total_limit)
    accelerator.wait_for_everyone()


def _adapter_weights(accelerator: Accelerator, objective) -> dict[str, torch.Tensor]:
    """The pruning modules' full state dict (``ModuleDict`` keys), unwrapped from DDP / FSDP."""
    state = accelerator.get_state_dict(objective)
    return {key.removeprefix("pruners."): value for key, value in state.items()}


def _state(model, args, accelerator, step: int, result: TrainingResult) -> dict:
    return {
        "step": step,
        "processes": accelerator.num_processes,
        "args": args.to_dict(),
        "config": model.sdtp_config.to_dict(),
        "marked_rows": result.marked_rows,
        "warm_start": result.warm_start,
        "joint": result.joint,
    }


def refuse_earlier_run(out: Path, args: TrainingArguments) -> None:
    """Refuse an output folder holding an earlier run unless ``overwrite_output_dir``. A saved marking
    is not a run: a 'warm' phase reads it from there."""
    earlier = sorted(p.name for p in out.iterdir() if p.name != "marking") if out.is_dir() else []
    if earlier and not args.overwrite_output_dir:
        raise ValueError(
            f"TrainingArguments.output_dir={args.output_dir!r} is not empty (an earlier run's files, e.g. "
            f"{earlier[0]!r}): choose another folder, set overwrite_output_dir=True, or resume_from_checkpoint='latest'"
        )


def _clear_output_dir(out: Path, accelerator: Accelerator) -> None:
    """Create the output folder and remove an earlier run's checkpoints (main process)."""
    accelerator.wait_for_everyone()  # every process checked before the main one clears
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.clear_earlier_run(out)
    accelerator.wait_for_everyone()


def _place(model: SDTPModel, accelerator: Accelerator) -> None:
    """Move a plain (unquantised, not dispatched) model to this process's device (one GPU per process)."""
    base = model.base_model
    if accelerator.device.type == "cpu" or getattr(base, "hf_device_map", None) or getattr(base, "is_loaded_in_4bit", False):
        return
    base.to(accelerator.device)
    model.pruners.to(accelerator.device)
