"""From training rows to left-padded micro-batches, in an order fixed by the seed and the epoch alone.

The order does not depend on the number of processes: accelerate hands process r the micro-batches
r, r + P, r + 2P, ... of one global sequence, so one process with micro-batch ``P * b`` and P processes
with micro-batch ``b`` see the same samples at every optimisation step (and, with the per-sample
Gumbel seeds of ``noise_seed``, compute the same loss).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler


class IndexedRows(TorchDataset):
    """``dataset[i]`` as ``(i, row)``: the index travels with the row (noise seed, error messages)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return index, self.rows[index]


class EpochSampler(Sampler[int]):
    """A permutation of ``range(size)`` drawn from ``(seed, epoch)``; ``set_epoch`` picks the epoch
    (accelerate's prepared loader forwards it)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(noise_seed(self.seed, self.epoch, -1))
        return iter(torch.randperm(self.size, generator=generator).tolist())


def noise_seed(seed: int, epoch: int, index: int) -> int:
    """The Gumbel seed of sample ``index`` in ``epoch`` (also the epoch's shuffle seed, index -1):
    a fixed function of its arguments (Python hashes tuples of ints the same way in every process)."""
    return hash((seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF


def collate_left_padded(items: list[tuple[int, dict]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Stack ``(index, row)`` items into a left-padded batch.

    Returns:
        ``input_ids`` ``[B, N]`` long (``pad_id`` on padding), ``attention_mask`` ``[B, N]`` long,
        ``target_mask`` ``[B, N]`` bool (False on padding), ``index`` ``[B]`` long; ``N`` = the longest row;
        ``padded``: whether any row is shorter (known here on the host, so the loss never syncs to ask).
    """
    lengths = [len(row["input_ids"]) for _, row in items]
    width = max(lengths)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    target = torch.zeros((len(items), width), dtype=torch.bool)
    for b, (_, row) in enumerate(items):
        n = len(row["input_ids"])
        ids[b, width - n :] = torch.as_tensor(row["input_ids"], dtype=torch.long)
        mask[b, width - n :] = 1
        target[b, width - n :] = torch.as_tensor(row["target_mask"], dtype=torch.bool)
    return {"input_ids": ids, "attention_mask": mask, "target_mask": target, "index": torch.tensor([i for i, _ in items]),
            "padded": min(lengths) < width}
