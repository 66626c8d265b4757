"""Stage 1 as a pass over a dataset: saliency targets and stage inputs under the full model.

The result lets the pruning modules be fitted to saliency (``fit_to_saliency``) in seconds per
epoch without running the base model again; the joint stage-2 loop then fine-tunes them under
simulated pruning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..files import publish
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
    layers = list(model.schedule.layers)
    marked = []
    captured: dict[int, torch.Tensor] = {}
    rows = range(rank, len(dataset), processes)
    for row in tqdm((dataset[i] for i in rows), total=len(rows), desc="token marking", disable=not progress):
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


def save_marking(marked: list[MarkedSample], directory: Path, shard: tuple[int, int]) -> Path:
    """Write one process's marked samples to ``directory/shard-<rank>-of-<processes>.safetensors``."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, sample in enumerate(marked):
        for layer, (hidden, saliency) in sample.stages.items():
            tensors[f"{i}.{layer}.hidden"] = hidden.detach().cpu().contiguous()
            tensors[f"{i}.{layer}.saliency"] = saliency.detach().cpu().contiguous()
    path = directory / f"shard-{shard[0]}-of-{shard[1]}.safetensors"
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"samples": str(len(marked))})
    publish(tmp, path)
    return path


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
        tensors = load_file(str(path))
        samples: dict[int, dict[int, list]] = {}
        for key, tensor in tensors.items():
            i, layer, kind = key.split(".")
            samples.setdefault(int(i), {}).setdefault(int(layer), [None, None])[kind == "saliency"] = tensor
        marked += [MarkedSample({layer: tuple(pair) for layer, pair in sorted(samples[i].items())}) for i in sorted(samples)]
    return marked
