"""Refuse, before any long work, a dataset the training loop cannot train on (names the row and field)."""

from __future__ import annotations

from ..schedule import StageSchedule


def min_trainable_length(schedule: StageSchedule) -> int:
    """Shortest sample with at least two tokens a stage may prune (the saliency losses compare pairs)."""
    length = 2
    while length - schedule.protected_count(length) < 2:
        length += 1
    return length


def check_dataset(dataset, vocab_size: int, schedule: StageSchedule | None = None) -> None:
    """Check every row of ``dataset`` (``input_ids``, ``target_mask``); with ``schedule``, also that every
    row is long enough for a stage to have tokens to rank.

    Raises:
        TypeError: not a ``datasets.Dataset``.
        ValueError: a missing column, no rows, or a row with mismatched lengths, no target, an
            out-of-vocabulary id or too few tokens; the message names the row.
    """
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
    shortest = min_trainable_length(schedule) if schedule is not None else 2
    for i, row in enumerate(dataset):
        ids, target = row["input_ids"], row["target_mask"]
        if len(target) != len(ids):
            raise ValueError(f"dataset row {i}: target_mask has {len(target)} entries but input_ids has {len(ids)}; they must match")
        if len(ids) < shortest:
            raise ValueError(
                f"dataset row {i} has {len(ids)} tokens; this schedule needs at least {shortest} (protected_first="
                f"{schedule.protected_first}, local_window_ratio={schedule.local_window_ratio} leave fewer than 2 prunable tokens)"
            )
        if not any(target[1:]):
            raise ValueError(f"dataset row {i}: target_mask selects no token after position 0; nothing to learn from")
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"dataset row {i}: token id {bad[0]} is outside the model's vocabulary [0, {vocab_size})")
