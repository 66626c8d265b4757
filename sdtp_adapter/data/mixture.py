"""A multi-genre training mixture: text windows of several genres plus synthetic retrieval chats (issue 12).

``genre_mixture`` generalises ``tasks.mixed_samples`` (Shakespeare only) to the genres of
``genres.py``: ``task_share`` of the rows are passkey / key-value / needle chats (``tasks.retrieval_sample``)
hidden in prose filler, optionally two-turn chats asking about such a fact in a second turn
(``followup.followup_sample``), the rest are windows (``tasks.text_window``) whose last ``tail_ratio`` is the
target. Both are drawn from the genres' **train** splits only, in proportion to the weights; the
held-out documents of every genre (``genre_texts(genre, "heldout")``) are never used (only their names
are asked for), and a train split that names one is refused. Code is a genre for windows, never
filler for a chat (a question about a fact hidden in a Python module is not the reading task the
chats train).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Callable, Mapping, Sequence

from .genres import GENRES, genre_texts
from .followup import followup_sample
from .tasks import retrieval_sample, text_window

# genres whose text can be filler for a retrieval chat (prose, not code)
PROSE_GENRES = ("plays", "novels", "technical", "bible")
TASK_KINDS = ("passkey", "kv", "needle")  # the default chat kinds, cycled in this order
CHAT_KINDS = TASK_KINDS + ("followup",)  # every kind a mixture can hold
# the chats' filler is this share of ``length`` tokens; question, facts and answer fill the rest
FILLER_SHARE = 0.9

TextsOf = Callable[[str, str], Mapping[str, str]]


def genre_mixture(
    tokenizer,
    genres: Mapping[str, float] | Sequence[str],
    count: int,
    length: int,
    tail_ratio: float,
    task_share: float = 0.5,
    seed: int = 0,
    texts_of: TextsOf = genre_texts,
    task_kinds: Sequence[str] = TASK_KINDS,
) -> list[dict]:
    """``count`` training rows of about ``length`` tokens from the train splits of ``genres``.

    Args:
        tokenizer: the model's tokenizer (a chat template, if any, formats the chats).
        genres: ``{genre: weight}`` (positive weights, any scale) or a list of genres (equal weights);
            genres are keys of ``genres.GENRES``.
        count: number of rows, at least 1.
        length: tokens per text window (exactly); chats are about this long.
        tail_ratio: share of a window that is the target (its end).
        task_share: share of the rows that are retrieval chats, in [0, 1]; ``floor(task_share * count)``
            chats, the rest windows (0.5 matches ``mixed_samples``).
        seed: the whole result (counts, documents, offsets, order) is a function of the arguments and seed.
        texts_of: ``(genre, split) -> {document: text}``; ``genres.genre_texts`` by default (tests pass a fake).
        task_kinds: the chat kinds, cycled in this order over the chats: ``passkey``, ``kv``, ``needle``
            (single-turn, ``tasks.retrieval_sample``) and ``followup`` (two turns, the question in the
            second, ``followup.followup_sample``).

    Returns:
        Rows as ``mixed_samples`` gives them (``input_ids``, ``target_mask``, ``kind``, ...) plus
        ``genre`` and ``source`` (the document's name), in a seeded random order. Windows are split
        over all genres by weight, chats over the prose genres (``PROSE_GENRES``) among them by
        weight, each with the largest-remainder method; chat kinds cycle through ``task_kinds``.
        Documents shorter than ``length`` tokens are skipped.

    Raises:
        ValueError: unknown or repeated genre, a weight that is not a positive number, ``count < 1``,
            ``task_share`` outside [0, 1], chats asked with no prose genre, a genre with no document of
            ``length`` tokens, a held-out document in a genre's train split, or ``task_kinds`` empty,
            repeating a kind or naming one outside ``CHAT_KINDS``.
    """
    weights = normalise_genres(genres)
    _check_sizes(count, task_share)
    kinds = _check_kinds(task_kinds)
    chats = math.floor(task_share * count + 1e-9)
    window_counts = largest_remainder(weights, count - chats)
    chat_counts = largest_remainder(_prose_weights(weights, chats), chats) if chats else {}
    documents = {g: train_documents(tokenizer, g, length, texts_of) for g in weights}
    rng = random.Random(seed)
    plan = [("text", g) for g, n in window_counts.items() for _ in range(n)]
    chat_genres = [g for g, n in chat_counts.items() for _ in range(n)]
    plan += [(kinds[i % len(kinds)], g) for i, g in enumerate(chat_genres)]
    rng.shuffle(plan)
    return [_row(tokenizer, kind, genre, documents[genre], length, tail_ratio, rng) for kind, genre in plan]


def normalise_genres(genres: Mapping[str, float] | Sequence[str]) -> dict[str, float]:
    """``{genre: weight}`` from a mapping or a list (equal weights), validated against ``GENRES``."""
    if isinstance(genres, str):
        raise ValueError(f"genres={genres!r} is a string; pass a list of genres or a {{genre: weight}} dict")
    names = list(genres)
    if not names:
        raise ValueError(f"genres={genres!r} is empty; allowed: one or more of {sorted(GENRES)}")
    unknown = [g for g in names if g not in GENRES]
    if unknown:
        raise ValueError(f"genre(s) {unknown} are unknown; allowed: {sorted(GENRES)}")
    repeated = sorted(g for g, n in Counter(names).items() if n > 1)
    if repeated:
        raise ValueError(f"genre(s) {repeated} are named more than once in {names}; name each once")
    weights = dict(genres) if isinstance(genres, Mapping) else dict.fromkeys(names, 1.0)
    for genre, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"weight {weight!r} of genre {genre!r} is invalid; allowed: a finite number > 0")
    return {g: float(w) for g, w in weights.items()}


def largest_remainder(weights: Mapping[str, float], total: int) -> dict[str, int]:
    """``total`` split over the keys in proportion to ``weights``: floors, then one more to the largest
    remainders (ties: the earlier key). The counts sum to ``total``."""
    scale = sum(weights.values())
    quotas = {k: total * w / scale for k, w in weights.items()}
    counts = {k: math.floor(q) for k, q in quotas.items()}
    order = sorted(weights, key=lambda k: -(quotas[k] - counts[k]))  # stable: ties keep the given order
    for k in order[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def train_documents(tokenizer, genre: str, length: int, texts_of: TextsOf = genre_texts) -> dict[str, str]:
    """``{document: text}`` of ``genre``'s train split with at least ``length`` tokens.

    The held-out split is only asked for its document names (their texts are not read); a train
    document among them, or among ``GENRES[genre].held_out``, raises ``ValueError``.
    """
    train = texts_of(genre, "train")
    held = set(texts_of(genre, "heldout").keys()) | set(GENRES[genre].held_out)
    leaked = sorted(set(train.keys()) & held)
    if leaked:
        raise ValueError(f"genre {genre!r}: held-out document(s) {leaked} are in its train split; "
                         f"refusing to train on them (held out: {sorted(held)})")
    kept = {name: train[name] for name in sorted(train.keys()) if _token_count(tokenizer, train[name]) >= length}
    if not kept:
        raise ValueError(f"genre {genre!r} has no train document of length={length} tokens or more "
                         f"({len(train)} documents); allowed: a shorter length or another genre")
    return kept


def mixture_counts(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    """``{genre: {"text": n, "chat": m}}`` of ``genre_mixture``'s rows, genres in first-seen order."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        kind = "text" if row["kind"] == "text" else "chat"
        counts.setdefault(row["genre"], {"text": 0, "chat": 0})[kind] += 1
    return counts


def _check_sizes(count: int, task_share: float) -> None:
    """Refuse a ``count`` below 1 or a ``task_share`` outside [0, 1], quoting the value."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count={count!r} is invalid; allowed: an integer >= 1")
    if not isinstance(task_share, (int, float)) or not 0.0 <= task_share <= 1.0:
        raise ValueError(f"task_share={task_share!r} is invalid; allowed: 0 <= task_share <= 1")


def _check_kinds(task_kinds: Sequence[str]) -> tuple[str, ...]:
    """``task_kinds`` as a tuple (a string is one kind); refuse an empty list, a repeat or an unknown kind."""
    kinds = (task_kinds,) if isinstance(task_kinds, str) else tuple(task_kinds)
    unknown = [k for k in kinds if k not in CHAT_KINDS]
    if not kinds or unknown or len(set(kinds)) != len(kinds):
        raise ValueError(f"task_kinds={list(kinds)} is invalid; allowed: one or more distinct kinds of {list(CHAT_KINDS)}")
    return kinds


def _prose_weights(weights: Mapping[str, float], chats: int) -> dict[str, float]:
    """The weights of the prose genres (chat filler); none while chats are asked is an error."""
    prose = {g: w for g, w in weights.items() if g in PROSE_GENRES}
    if not prose:
        raise ValueError(f"{chats} retrieval chat(s) need a prose genre for filler and genres {list(weights)} have "
                         f"none; allowed: add one of {list(PROSE_GENRES)} or pass task_share=0")
    return prose


def _token_count(tokenizer, text: str) -> int:
    """Tokens of ``text`` without special tokens (what ``text_window`` counts)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _row(tokenizer, kind: str, genre: str, documents: dict[str, str], length: int, tail_ratio: float,
         rng: random.Random) -> dict:
    """One window (``kind == "text"``) or chat of ``kind`` from a random document of ``documents``."""
    name = rng.choice(sorted(documents))
    if kind == "text":
        row = text_window(tokenizer, documents[name], length, tail_ratio, rng)
    elif kind == "followup":
        row = followup_sample(tokenizer, [documents[name]], int(length * FILLER_SHARE), rng)
    else:
        row = retrieval_sample(tokenizer, [documents[name]], int(length * FILLER_SHARE), kind, rng)
    return row | {"genre": genre, "source": name}
