"""The filler of the held-out suite (``data.eval_tasks``): whole lines of held-out documents, facts inserted by depth.

Only ``genres.genre_texts(genre, "heldout")`` is read: the documents no adapter of this project
trains on (``data.mixture`` reads the train splits, the shipped adapters trained on Shakespeare's
train split). Code is not a filler genre: a question about a fact hidden in a Python module is not
the reading task the suite measures.
"""

from __future__ import annotations

import bisect
import random
from typing import Mapping, Sequence

from . import genres as genre_registry

FILLER_GENRES = ("plays", "novels", "technical", "bible")  # prose genres with held-out documents
DEFAULT_FILLER_GENRES = ("technical", "novels")


def default_filler_genres() -> list[str]:
    """The genres of ``DEFAULT_FILLER_GENRES`` whose source can be fetched here (downloads nothing)."""
    available = set(genre_registry.available_genres())
    return [g for g in DEFAULT_FILLER_GENRES if g in available]


def suite_documents(genres: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{genre: {document: text}}``: the **held-out** documents of each filler genre (fetched on first use).

    Raises:
        ValueError: no genre, an unknown genre or one that is not prose (code).
        GenreUnavailable: a genre's source cannot be fetched here (the message names the package).
    """
    if not genres:
        raise ValueError(f"filler genres: none given or available; allowed: one or more of {list(FILLER_GENRES)}")
    bad = [g for g in genres if g not in FILLER_GENRES]
    if bad:
        raise ValueError(f"filler genre(s) {bad} are invalid; allowed: {list(FILLER_GENRES)} (prose with held-out documents)")
    return {g: genre_registry.genre_texts(g, "heldout") for g in dict.fromkeys(genres)}


class FillerPool:
    """Whole lines of held-out documents, with each line's token count computed once per tokenizer.

    Args:
        documents: ``{genre: {document: text}}`` (``suite_documents``); empty genres are refused.
    """

    def __init__(self, documents: Mapping[str, Mapping[str, str]]):
        empty = [g for g, docs in documents.items() if not docs]
        if not documents or empty:
            raise ValueError(f"filler genres {empty or list(documents)} have no document; allowed: genres with held-out documents")
        self.documents = {g: dict(docs) for g, docs in documents.items()}
        self._lines: dict[tuple[int, str, str], tuple[list[str], list[int], list[int]]] = {}

    @property
    def genres(self) -> list[str]:
        return list(self.documents)

    def lines(self, tokenizer, genre: str, document: str) -> tuple[list[str], list[int], list[int]]:
        """``(lines, cumulative, starts)`` of a document: its lines, ``cumulative[i]`` = tokens of the lines
        before line ``i`` (each +1 for its newline) and the indices of the lines that start a paragraph."""
        key = (id(tokenizer), genre, document)
        if key not in self._lines:
            lines = self.documents[genre][document].split("\n")
            cumulative = [0]
            for line in lines:
                cumulative.append(cumulative[-1] + len(tokenizer(line, add_special_tokens=False)["input_ids"]) + 1)
            starts = [i for i, line in enumerate(lines) if line.strip() and (i == 0 or not lines[i - 1].strip())]
            self._lines[key] = (lines, cumulative, starts)
        return self._lines[key]

    def draw(self, tokenizer, genre: str, tokens: int, rng: random.Random) -> tuple[str, list[str], list[int]]:
        """``(document, lines, cumulative)``: about ``tokens`` tokens of whole lines from a random offset.

        The window starts at a paragraph of a random document that has ``tokens`` tokens after it;
        ``cumulative`` counts the window's tokens as ``lines`` does.

        Raises:
            ValueError: no document of ``genre`` has ``tokens`` tokens.
        """
        fits = []
        for name in sorted(self.documents[genre]):
            _, cumulative, starts = self.lines(tokenizer, genre, name)
            # a start fits when the tokens after it (cumulative[-1] - cumulative[i]) are enough
            usable = bisect.bisect_right([cumulative[i] for i in starts], cumulative[-1] - tokens)
            if usable:
                fits.append((name, starts[:usable]))
        if not fits:
            raise ValueError(f"genre {genre!r}: no held-out document has {tokens} tokens of filler; "
                             "allowed: shorter --lengths or another filler genre")
        name, starts = rng.choice(fits)
        lines, cumulative, _ = self.lines(tokenizer, genre, name)
        start = rng.choice(starts)
        end = bisect.bisect_left(cumulative, cumulative[start] + tokens, lo=start)
        return name, lines[start:end], [c - cumulative[start] for c in cumulative[start : end + 1]]


def insert_facts(lines: list[str], cumulative: list[int], facts: Sequence[tuple[float, str]]) -> tuple[list[str], list[float]]:
    """``lines`` with each ``(depth, fact)`` inserted as its own line where ``depth`` of the tokens lie before it.

    Returns the new lines and each fact's real depth (tokens before it over all tokens), in ``facts`` order.
    """
    total = cumulative[-1]
    slots = [min(len(lines), bisect.bisect_left(cumulative, depth * total)) for depth, _ in facts]
    out, real = [], [cumulative[slot] / total for slot in slots]
    for i in range(len(lines) + 1):
        out += [fact for slot, (_, fact) in zip(slots, facts) if slot == i]
        if i < len(lines):
            out.append(lines[i])
    return out, real
