"""Counting the aten ops and host synchronisations of a forward (``TorchDispatchMode``).

A pruned forward must not add host round trips (a GPU waits for each) nor many small kernels (a GPU
launches each). Counting them is exact and machine-independent, unlike timing, so the test suite can
hold the pruned forward to a budget on a CPU.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops that copy a device value to the host (``.item()``, ``.tolist()``, ``bool(t)``, data-dependent shapes)
SYNC_OPS = frozenset({"_local_scalar_dense", "equal", "nonzero", "masked_select", "unique", "_unique2", "item", "tolist"})
# ops that only change a view or allocate without computing: free on any device, not counted as work
VIEW_OPS = frozenset(
    {"view", "_unsafe_view", "expand", "alias", "detach", "t", "unsqueeze", "squeeze", "slice", "select", "as_strided", "permute", "transpose", "lift_fresh", "tolist"}
)


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched inside the block, by name (overload stripped).

    ``Tensor.tolist`` reads memory directly on a CPU tensor without dispatching an op (on a GPU it
    is a device-to-host copy), so the counter also wraps it while active and counts it as ``tolist``.
    """

    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()
        self._tolist = None

    def __enter__(self):
        self._tolist, counter = torch.Tensor.tolist, self

        def tolist(tensor, *args, **kwargs):
            counter.ops["tolist"] += 1
            return counter._tolist(tensor, *args, **kwargs)

        torch.Tensor.tolist = tolist  # only while counting; restored on exit
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def syncs(self) -> int:
        """Device-to-host synchronisations."""
        return sum(n for name, n in self.ops.items() if name in SYNC_OPS)

    @property
    def work(self) -> int:
        """Ops that launch work (everything but views)."""
        return sum(n for name, n in self.ops.items() if name not in VIEW_OPS)


def count_ops(fn: Callable[[], object]) -> OpCounter:
    """Run ``fn`` under an ``OpCounter`` (no grad) and return the counter."""
    counter = OpCounter()
    with torch.no_grad(), counter:
        fn()
    return counter
