"""The ways of running a long prompt that the benchmarks compare at the same budget.

A ``Method`` is either the unpruned base, SDTP with some scorer and schedule (the trained modules, a
training-free baseline, the 5-stage "SDTP-low"), or a prompt compressor that shortens the text before
an unpruned prefill (LLMLingua). ``activate`` sets the ``SDTPModel`` up for it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

from ..model import SDTPModel
from ..pruning import scorers
from ..pruning.scorers import Scorer

# the names every report uses for the unpruned model and the trained adapter
BASE = "base (unpruned)"
TRAINED = "SDTP (trained)"

# (document text, question or "") -> shorter document text
Compressor = Callable[[str, str], str]


@dataclass
class Method:
    """One row of a comparison table.

    Attributes:
        name: label in tables and plots.
        prune: ``False`` for the unpruned base and for prompt compressors (they prefill unpruned).
        scorer: training-free scorer for the SDTP stages; ``None`` = the adapter's trained modules.
        layers: stage layers overriding the adapter's (``None`` = the adapter's).
        keep_ratio: per-stage keep ratio overriding the adapter's (``None`` = the adapter's).
        compress: prompt compressor applied to the document before prefill (``None`` = none).
    """

    name: str
    prune: bool = True
    scorer: Scorer | None = None
    layers: tuple[int, ...] | None = None
    keep_ratio: float | None = None
    compress: Compressor | None = None

    @contextlib.contextmanager
    def activate(self, sdtp: SDTPModel) -> Iterator[None]:
        """Configure ``sdtp`` for this method inside the block."""
        with contextlib.ExitStack() as stack:
            if not self.prune or self.compress is not None:
                stack.enter_context(sdtp.disable_pruning())
            else:
                if self.scorer is not None:
                    stack.enter_context(sdtp.use_scorer(self.scorer))
                if self.layers is not None or self.keep_ratio is not None:
                    stack.enter_context(sdtp.use_schedule(self.layers, self.keep_ratio))
            yield


def sdtp_low_layers(layers: tuple[int, ...]) -> tuple[int, ...]:
    """Every other stage of the adapter (10 stages -> 5): the paper's lighter "SDTP-low" variant."""
    return tuple(layers[::2])


def standard_methods(sdtp: SDTPModel) -> list[Method]:
    """Base, trained SDTP, SDTP-low and the training-free scorers on the adapter's schedule."""
    methods = [
        Method(BASE, prune=False),
        Method(TRAINED),
        Method("SDTP-low (5 stages)", layers=sdtp_low_layers(sdtp.schedule.layers)),
    ]
    for name, scorer in scorers.scorers_for(sdtp.base_model).items():
        methods.append(Method(name, scorer=scorer))
    return methods
