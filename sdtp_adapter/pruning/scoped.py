"""Settings that a context manager overrides for the current thread only.

One ``SDTPModel`` may serve several threads at once (a web server's worker pool). ``disable_pruning``,
``use_scorer``, ``use_schedule`` and the training simulation must therefore change what *this* thread's
next forward does, never another thread's. Each setting keeps a process-wide default plus a per-thread
stack of overrides; the newest active override wins. Exiting a context removes exactly its own entry,
so contexts closed out of order (generators, async code) still leave the right value behind.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class ScopedSetting(Generic[T]):
    """A value with a process-wide ``default`` and per-thread overrides.

    Example::

        >>> enabled = ScopedSetting(True)
        >>> with enabled.override(False):
        ...     enabled.value
        False
        >>> enabled.value
        True
    """

    def __init__(self, default: T):
        self.default = default
        self._local = threading.local()

    def _stack(self) -> list[tuple[object, T]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @property
    def value(self) -> T:
        """The newest override active in this thread, else the default."""
        stack = self._stack()
        return stack[-1][1] if stack else self.default

    @contextlib.contextmanager
    def override(self, value: T) -> Iterator[None]:
        """Use ``value`` in this thread until the block exits."""
        stack, token = self._stack(), object()  # the entry's identity, so non-LIFO exits remove the right one
        stack.append((token, value))
        try:
            yield
        finally:
            stack[:] = [entry for entry in stack if entry[0] is not token]
