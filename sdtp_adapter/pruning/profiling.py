"""Profiler labels for the parts of a pruned forward, active only while a benchmark asks for them.

``sdtp bench speed`` wraps one prefill per length in ``torch.profiler`` with labelling on, and reports
how much of the prefill each component took. Outside that, ``component`` is a null context: no label,
no dispatched op, nothing for a GPU to launch.
"""

from __future__ import annotations

import contextlib
import threading
from typing import ContextManager, Iterator

import torch

COMPONENTS = ("sdtp.score", "sdtp.select", "sdtp.gather", "sdtp.early_exit")
_state = threading.local()


def component(name: str) -> ContextManager:
    """A ``record_function`` label for ``name`` while ``labelled()`` is active in this thread, else a no-op."""
    if getattr(_state, "on", False):
        return torch.profiler.record_function(name)
    return contextlib.nullcontext()


@contextlib.contextmanager
def labelled() -> Iterator[None]:
    """Label the components of pruned forwards run inside this block (this thread)."""
    previous, _state.on = getattr(_state, "on", False), True
    try:
        yield
    finally:
        _state.on = previous
