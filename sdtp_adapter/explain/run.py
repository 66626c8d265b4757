"""``explain``: one pruned prefill of one prompt, recorded stage by stage.

The kept positions come from the forward's own ``PruningRecord`` (``SDTPModel.last_pruning``), so they are
exactly what a normal forward keeps. The record holds no scores; instead of recording them in every
forward (a device-to-host copy per stage), ``explain`` wraps the thread's scorer in a ``ScoreRecorder``
for this one forward only (``use_scorer``): the normal forward is untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..pruning.selection import protected_mask
from .data import Explanation

if TYPE_CHECKING:  # pragma: no cover
    from ..model import SDTPModel


class ScoreRecorder:
    """A scorer that calls ``scorer`` and keeps what it saw: ``calls[layer] = (positions [n], scores [n])``
    on the CPU, row 0 only (``explain`` runs one prompt)."""

    def __init__(self, scorer):
        self.scorer = scorer
        self.calls: dict[int, tuple[list[int], list[float]]] = {}

    def __call__(self, layer: int, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        scores = self.scorer(layer, hidden, positions)
        self.calls[layer] = (positions[0].tolist(), scores[0].float().tolist())
        return scores


def check_prompt(input_ids, attention_mask) -> None:
    """``input_ids`` must be one unpadded prompt ``[1, N]``.

    Raises:
        TypeError: ``input_ids`` is not an integer tensor.
        ValueError: a batch of several prompts, a wrong shape, or padding in ``attention_mask``.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must be an integer tensor of shape [1, N]; got {type(input_ids).__name__}"
                        f"{'' if not isinstance(input_ids, torch.Tensor) else ' of dtype ' + str(input_ids.dtype)}")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids has shape {list(input_ids.shape)}; explain takes one prompt of shape [1, N] "
                         "(N >= 1): explain each prompt of a batch on its own")
    if attention_mask is not None:
        if tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask has shape {list(attention_mask.shape)}; expected that of input_ids "
                             f"{list(input_ids.shape)}")
        if not bool((attention_mask == 1).all()):
            raise ValueError("attention_mask has padding (zeros); explain takes one unpadded prompt: pass its real tokens only")


def explain(sdtp: "SDTPModel", input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            tokenizer=None) -> Explanation:
    """Run one pruned prefill of ``input_ids`` ``[1, N]`` and return what each stage kept and scored.

    Uses this thread's settings (``use_schedule``, ``use_scorer``). ``tokenizer`` (optional) decodes
    each token on its own for ``Explanation.tokens``.

    Raises:
        ValueError: see ``check_prompt``.
        RuntimeError: the forward did not prune (inside ``disable_pruning`` or ``simulate``).
    """
    check_prompt(input_ids, attention_mask)
    controller = sdtp.controller
    schedule = sdtp.active_schedule
    recorder = ScoreRecorder(controller.scorer.value)
    with sdtp.use_scorer(recorder), torch.inference_mode():
        # logits_to_keep=1: the logits are not needed, so skip the vocabulary projection of every row
        sdtp(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
    record = sdtp.last_pruning
    if sorted(recorder.calls) != list(schedule.layers) or record is None:
        raise RuntimeError(
            f"explain's forward scored stages {sorted(recorder.calls)} instead of {list(schedule.layers)}: pruning is "
            "off in this thread (disable_pruning or simulate is active); call explain outside those blocks"
        )
    n, num_layers = input_ids.shape[1], sdtp.sdtp_config.num_hidden_layers
    scored, scores, kept = [], [], []
    last_layer = [num_layers] * n
    for layer in schedule.layers:
        positions, values = recorder.calls[layer]
        order = sorted(range(len(positions)), key=positions.__getitem__)  # ascending positions
        scored.append([positions[i] for i in order])
        scores.append([values[i] for i in order])
        survivors = sorted(record.kept_positions[layer][0].tolist())
        kept.append(survivors)
        for position in set(scored[-1]).difference(survivors):
            last_layer[position] = layer
    protected = protected_mask(torch.arange(n)[None], n, schedule)[0].nonzero()[:, 0].tolist()
    tokens = [tokenizer.decode([i]) for i in input_ids[0].tolist()] if tokenizer is not None else None
    return Explanation(
        input_ids=input_ids[0].tolist(), num_layers=num_layers, stage_layers=list(schedule.layers),
        scored_positions=scored, scores=scores, kept_positions=kept, protected=protected, last_layer=last_layer,
        tokens=tokens,
        schedule={"keep_ratio": schedule.keep_ratio, "protected_first": schedule.protected_first,
                  "local_window_ratio": schedule.local_window_ratio},
        meta={"base_model": sdtp.sdtp_config.base_model_name_or_path},
    )
