"""Scores of the held-out suite (``bench.suite``): answer correctness, token ROUGE-L, degenerate outputs.

- ``is_correct``: a QA answer names the key (``data.eval_tasks``); aggregation needs exactly the
  key's set of surnames, in any order or list format; ``surname_recall`` is its partial credit.
- ``rouge_l_f1``: ROUGE-L F1 of two token sequences (token ids of a summary and of the unpruned
  model's summary), from their longest common subsequence (LCS), as in Lin (2004) with beta = 1.
- ``is_degenerate``: some ``n``-gram (default 3 tokens) occurs ``times`` (default 4) or more times,
  overlapping occurrences counted: the loop a pruned model falls into ("the the the ...").
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence

from ..data.eval_tasks import QA_TASKS, SURNAMES
from ..data.tasks import mentions

DEGENERATE_N, DEGENERATE_TIMES = 3, 4


def named_surnames(text: str) -> set[str]:
    """The surnames of ``eval_tasks.SURNAMES`` that ``text`` names as whole words, in any case."""
    return {name for name in SURNAMES if mentions(text, name)}


def is_correct(sample: dict, text: str) -> bool:
    """Whether generation ``text`` answers the QA ``sample`` (``eval_tasks.build_sample``).

    retrieval / second turn: the key (number or surname) appears as a whole word ("417" is not in
    "4170"). Aggregation: the surnames named are exactly the key's set, whatever the format (commas,
    "and", bullets, numbering, order, case); a missing or an extra surname is wrong.

    Raises:
        ValueError: a summarization sample (it has no right answer).
    """
    if sample["task"] == "aggregation":
        return named_surnames(text) == set(sample["key"])
    if sample["task"] in ("retrieval", "second_turn"):
        return mentions(text, sample["key"])
    raise ValueError(f"task={sample['task']!r} has no right answer; allowed: {list(QA_TASKS)}")


def surname_recall(sample: dict, text: str) -> float:
    """Share of an aggregation sample's surnames that ``text`` names (partial credit; extras not penalised)."""
    if sample["task"] != "aggregation":
        raise ValueError(f"task={sample['task']!r}: recall is defined for 'aggregation' only")
    return len(named_surnames(text) & set(sample["key"])) / len(sample["key"])


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (dynamic programme, one row of memory)."""
    if len(b) > len(a):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0  # row[j - 1] of the previous row
        for j, y in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(row[j], row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l_f1(candidate: Sequence[Hashable], reference: Sequence[Hashable]) -> float:
    """ROUGE-L F1: ``2 P R / (P + R)`` with ``P = LCS / len(candidate)``, ``R = LCS / len(reference)``.

    Two empty sequences agree fully (1.0); one empty sequence scores 0.0.
    """
    if not candidate and not reference:
        return 1.0
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def most_repeated_ngram(tokens: Sequence[Hashable], n: int = DEGENERATE_N) -> int:
    """How often the most frequent ``n``-gram of ``tokens`` occurs (overlaps counted; 0 if shorter than ``n``)."""
    if n < 1:
        raise ValueError(f"n={n} is invalid; allowed: >= 1")
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return max(counts.values(), default=0)


def is_degenerate(tokens: Sequence[Hashable], n: int = DEGENERATE_N, times: int = DEGENERATE_TIMES) -> bool:
    """Whether some ``n``-gram of ``tokens`` occurs ``times`` or more times (a looping output)."""
    return most_repeated_ngram(tokens, n) >= times
