"""Stage 1 as a pass over a dataset: saliency targets and stage inputs under the full model.

The result lets the pruning modules be fitted to saliency (``fit_to_saliency``) in seconds per
epoch without running the base model again; the joint stage-2 loop then fine-tunes them under
simulated pruning.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..files import publish, sha256_hex
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


def mark_tokens(
    model: SDTPModel, dataset, dtype: torch.dtype = torch.bfloat16, shard: tuple[int, int] = (0, 1), progress: bool = True
) -> list[MarkedSample]:
    """Run token marking on the rows (``input_ids``, ``target_mask``) of ``dataset`` in ``shard``.

    Hidden states are stored in ``dtype``: bf16 by default (160 samples of 640 tokens on a
    576-wide, 10-stage model take about 1 GB; fp16 would overflow on Gemma's large residual stream).

    Args:
        shard: ``(rank, processes)``: this process marks rows ``rank, rank + processes, ...`` (data
            parallel marking; ``(0, 1)`` = every row).
        progress: show a progress bar with ETA.
    """
    rank, processes = shard
    rows = range(rank, len(dataset), processes)
    bar = tqdm(total=len(rows), desc="token marking", disable=not progress)
    marked = mark_rows(model, dataset, rows, dtype, bar)
    bar.close()
    return marked


def mark_rows(model: SDTPModel, dataset, rows, dtype: torch.dtype, bar=None) -> list[MarkedSample]:
    """The marked samples of ``dataset``'s ``rows`` (indices), in order; ``bar`` advances once per row."""
    layers = list(model.schedule.layers)
    marked = []
    captured: dict[int, torch.Tensor] = {}
    for i in rows:
        row = dataset[i]
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
        if bar is not None:
            bar.update(1)
    return marked


def mark_to_disk(
    model: SDTPModel, dataset, directory: Path, shard: tuple[int, int] = (0, 1), chunk: int = 8,
    dtype: torch.dtype = torch.bfloat16, progress: bool = True,
) -> list[MarkedSample]:
    """``mark_tokens`` saved as it goes, so that a killed marking resumes instead of starting over.

    Every ``chunk`` rows are written to ``directory/.parts-<rank>-of-<processes>/part-<start>.safetensors``
    (atomically) with a digest of what they were marked from: the rows' indices, token ids and target
    masks, the model's name and depth, and the stage schedule. A rerun reads back the parts whose digest
    matches and marks only the rest; at the end the shard file ``save_marking`` writes replaces the parts.

    Raises:
        ValueError: a saved part was marked from other rows, another model or schedule (the message
            names the part and what to do).
    """
    rank, processes = shard
    rows = list(range(rank, len(dataset), processes))
    parts = Path(directory) / f".parts-{rank}-of-{processes}"
    parts.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(rows), desc="token marking", disable=not progress)
    marked: list[MarkedSample] = []
    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk]
        path, digest = parts / f"part-{start:06d}.safetensors", marking_digest(model, dataset, block)
        if path.exists():
            saved, found = read_samples(path)
            if found.get("digest") != digest:
                raise ValueError(f"{path} was marked from other rows, another model or another schedule; delete "
                                 f"{parts} (or pass another marking_dir) to mark afresh")
            marked += saved
            bar.update(len(block))
            continue
        samples = mark_rows(model, dataset, block, dtype, bar)
        write_samples(samples, path, {"digest": digest})
        marked += samples
    bar.close()
    save_marking(marked, Path(directory), shard)
    shutil.rmtree(parts)
    return marked


def marking_digest(model: SDTPModel, dataset, rows: list[int]) -> str:
    """SHA-256 of what marking ``rows`` depends on: their indices and tokens, the model, the schedule."""
    schedule = model.schedule
    header = [getattr(model.config, "_name_or_path", ""), model.config.num_hidden_layers, list(schedule.layers),
              schedule.protected_first, schedule.local_window_ratio]

    def chunks():
        yield json.dumps(header).encode()
        for i in rows:
            row = dataset[i]
            yield json.dumps([i, list(row["input_ids"]), [bool(t) for t in row["target_mask"]]]).encode()
    return sha256_hex(chunks())


def save_marking(marked: list[MarkedSample], directory: Path, shard: tuple[int, int]) -> Path:
    """Write one process's marked samples to ``directory/shard-<rank>-of-<processes>.safetensors``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"shard-{shard[0]}-of-{shard[1]}.safetensors"
    write_samples(marked, path)
    return path


def write_samples(marked: list[MarkedSample], path: Path, metadata: dict[str, str] | None = None) -> None:
    """``marked`` as ``<i>.<layer>.hidden`` / ``.saliency`` tensors in one safetensors file, written atomically."""
    tensors = {}
    for i, sample in enumerate(marked):
        for layer, (hidden, saliency) in sample.stages.items():
            tensors[f"{i}.{layer}.hidden"] = hidden.detach().cpu().contiguous()
            tensors[f"{i}.{layer}.saliency"] = saliency.detach().cpu().contiguous()
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"samples": str(len(marked))} | (metadata or {}))
    publish(tmp, path)


def read_samples(path: Path) -> tuple[list[MarkedSample], dict[str, str]]:
    """The marked samples of one file ``write_samples`` wrote, in order, and its metadata."""
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    samples: dict[int, dict[int, list]] = {}
    for key, tensor in load_file(str(path)).items():
        i, layer, kind = key.split(".")
        samples.setdefault(int(i), {}).setdefault(int(layer), [None, None])[kind == "saliency"] = tensor
    return [MarkedSample({layer: tuple(pair) for layer, pair in sorted(samples[i].items())}) for i in sorted(samples)], metadata


def load_marking(directory: Path, shard: tuple[int, int]) -> list[MarkedSample]:
    """The marked samples a process of ``shard = (rank, processes)`` trains on: the saved shards whose
    number is ``rank`` modulo ``processes`` (any earlier process count works).

    Raises:
        FileNotFoundError: ``directory`` holds no saved marking.
    """
    files = sorted(Path(directory).glob("shard-*-of-*.safetensors"))
    if not files:
        raise FileNotFoundError(f"marking_dir={str(directory)!r} holds no saved marking (shard-*-of-*.safetensors); run the 'mark' phase first")
    rank, processes = shard
    marked = []
    for path in files:
        if int(path.name.split("-")[1]) % processes != rank:
            continue
        marked += read_samples(path)[0]
    return marked
