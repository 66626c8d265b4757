"""Held-out long-context evaluation tasks (``sdtp bench suite``), disjoint from the training templates.

The training chats (``data.tasks``: passkey, key-value, needle, variable chains) hide facts phrased
"The pass key is 12345." / "The value of key 'amber' is 4821." / "The silver key is hidden in the
cellar." in prose, ask "What is ...?" / "Where is ...?" after "Answer the question using the text
above." and answer with a full sentence. Everything here differs, so the suite measures
generalisation rather than recall of the training mix (``tests/test_eval_suite.py`` checks that no
word 3-gram is shared):

- **phrasing**: other fact sentences (rooms, parcels, tickets, a visitor book, a roster, shelves,
  archive boxes) and other questions ("In which room ...", "Which three volunteers ..."), put right
  after the document;
- **vocabulary**: surnames and 3-digit numbers (training: common nouns, places, 4- and 5-digit numbers);
- **answer format**: a bare 3-digit number, a comma-separated list of surnames, or a summary;
- **filler**: whole lines of the *held-out* documents of prose genres (``genres.genre_texts(genre,
  "heldout")``; default technical prose and novels), never those of any train split, never code.

Tasks (each prompt is one chat, rendered with the tokenizer's chat template, or ``User:`` /
``Assistant:`` lines without one):

- ``retrieval``: one fact at a stratified depth; the question asks for its number.
- ``aggregation``: ``AGGREGATION_FACTS`` facts spread over the document (one per equal slice); the
  question asks for all of their surnames, and only an answer naming exactly that set is correct.
- ``second_turn``: turn 1 holds the document plus an unrelated request with a fixed assistant reply;
  turn 2 asks about a fact near the start of the document (depth in ``START_DEPTHS``).
- ``summarization``: a request to summarise the document; scored against the unpruned model's output.

Each sample records its ``depth`` (share of the filler's tokens before the asked fact; ``None`` for
aggregation and summarization) and ``bucket`` (``start`` / ``middle`` / ``end`` thirds, ``spread``
or ``whole``), the filler's genre and document, and the ``key`` a correct answer names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

from .eval_filler import FillerPool, insert_facts
from .tasks import mentions, template_ids

TASKS = ("retrieval", "aggregation", "second_turn", "summarization")
QA_TASKS = ("retrieval", "aggregation", "second_turn")  # scored by accuracy
DEPTHS = (0.05, 0.95)  # retrieval depths are stratified over this range
START_DEPTHS = (0.02, 0.2)  # the second-turn fact sits near the start
BUCKETS = ("start", "middle", "end")  # thirds of the document
SPREAD, WHOLE = "spread", "whole"  # aggregation facts cover every third; a summary reads everything
AGGREGATION_FACTS = 3  # the aggregation questions say "three"
LENGTH_TOLERANCE = 0.02  # a prompt further than this share from its length gets one corrected filler draw
NUMBERS = (100, 999)  # keys: 3-digit numbers (the training keys have 4 or 5 digits)
SURNAMES = (
    "Okafor", "Lindqvist", "Moreau", "Tanaka", "Ferreira", "Novak", "Haddad", "Kowalski", "Brennan",
    "Castillo", "Petrov", "Nakamura", "Osei", "Varga", "Dubois", "Jensen", "Rossi", "Abbott", "Quinn",
    "Mendez", "Sato", "Fischer", "Olsen", "Kaur",
)


@dataclass(frozen=True)
class QATemplate:
    """A fact hidden in the document and the question about it.

    Attributes:
        fact: sentence with ``{name}`` and/or ``{number}`` slots.
        question: the request, with the same slots.
        key: the slot a correct answer names (``"number"`` or ``"name"``).
    """

    fact: str
    question: str
    key: str


RETRIEVAL = (
    QATemplate("Office note: Dr. {name} works in room {number} on the third floor.",
               "In which room does Dr. {name} work? Reply with just the room number.", "number"),
    QATemplate("For the record, the parcel addressed to {name} weighed {number} grams.",
               "How many grams did the parcel for {name} weigh? Give only the number.", "number"),
    QATemplate("{name} was issued ticket number {number} at the front desk.",
               "Which ticket number did {name} receive? Reply with the digits only.", "number"),
)
AGGREGATION = (
    QATemplate("Visitor book: {name} signed in.",
               "Three people signed in to the visitor book. Write their three surnames, separated by commas.", "name"),
    QATemplate("Volunteer roster: {name} joined the crew.",
               "Which three volunteers joined the crew, according to the roster? Reply with their surnames as a "
               "comma-separated list.", "name"),
)
SECOND_TURN = (
    QATemplate("Preliminary remark: this copy belongs on shelf {number} of the reading room.",
               "One more thing about the document I sent earlier: which shelf does the copy belong on? "
               "Just the shelf number, please.", "number"),
    QATemplate("Archive label: {name} filed this document under box {number}.",
               "Going back to the document from my first message: under which box was it filed? "
               "Only the box number, please.", "number"),
)
# (unrelated first request, the fixed assistant reply to it)
FIRST_TURNS = (
    ("Before anything else, what is 17 plus 25?", "17 plus 25 makes 42."),
    ("Could you suggest a name for a pet goldfish?", "How about Bubbles?"),
    ("How do you say 'thank you' in Spanish?", "In Spanish, 'thank you' is 'gracias'."),
)
SUMMARY_REQUESTS = (
    "Summarize the passage above in two or three sentences.",
    "Write a brief summary of the preceding passage.",
)
PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def bucket_of(depth: float | None, task: str) -> str:
    """``start`` / ``middle`` / ``end`` (thirds) for a depth; ``spread`` (aggregation), ``whole`` (summaries)."""
    if task == "aggregation":
        return SPREAD
    if task == "summarization":
        return WHOLE
    return BUCKETS[min(2, int(depth * 3))]


def stratified_depth(index: int, count: int, low: float, high: float, rng: random.Random) -> float:
    """A depth drawn uniformly inside the ``index``-th of ``count`` equal strata of ``[low, high]``."""
    return low + (high - low) * (index + rng.random()) / count


def render_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """The prompt ids of a chat (ends where the assistant's answer begins).

    The tokenizer's chat template with a generation prompt; without one, ``plain_prompt``'s text after BOS.
    """
    if getattr(tokenizer, "chat_template", None):
        return template_ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
    return bos + tokenizer(plain_prompt(messages), add_special_tokens=False)["input_ids"]


def plain_prompt(messages: list[dict]) -> str:
    """``User: ...`` / ``Assistant: ...`` paragraphs, ending with ``Assistant:`` (no chat template; lm-eval)."""
    return "".join(f"{PLAIN_ROLES[m['role']]}: {m['content']}\n\n" for m in messages) + "Assistant:"


def _fresh(draw: Callable[[], str], avoid: str, taken: Sequence[str] = ()) -> str:
    """A value from ``draw`` not mentioned in ``avoid`` (the filler) nor in ``taken``."""
    for _ in range(200):
        value = draw()
        if value not in taken and not mentions(avoid, value):
            return value
    raise RuntimeError("could not draw a key absent from the filler in 200 tries")


def build_sample(tokenizer, pool: FillerPool, task: str, length: int, index: int, count: int, seed: int) -> dict:
    """Prompt ``index`` of ``count`` for ``task`` at ``length`` tokens, from its own RNG.

    Returns:
        ``{task, length, index, genre, source, template, depth, bucket, key, facts, document,
        messages, prompt_ids, prompt_length}``; ``key`` is a string (the number or surname), a sorted
        list of surnames (aggregation) or ``None`` (summarization); ``facts`` the inserted sentences.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is invalid; allowed: {list(TASKS)}")
    rng = random.Random(f"eval/{seed}/{task}/{length}/{index}")
    genre = pool.genres[index % len(pool.genres)]
    first = FIRST_TURNS[index % len(FIRST_TURNS)] if task == "second_turn" else None
    template = None if task == "summarization" else index % len(_templates(task))
    # the template's own tokens (facts with slots of typical length, the request) are not filler
    draft_facts, draft_question = _draft(task, template)
    overhead = len(render_prompt(tokenizer, _messages(task, "\n".join(draft_facts), draft_question, first)))
    state, budget = rng.getstate(), max(1, length - overhead)
    for attempt in range(2):
        source, lines, cumulative = pool.draw(tokenizer, genre, budget, rng)
        facts, question, key = _fill(task, template, rng, "\n".join(lines), index, count)
        document_lines, real = insert_facts(lines, cumulative, facts)
        messages = _messages(task, "\n".join(document_lines), question, first)
        ids = render_prompt(tokenizer, messages)
        if attempt or abs(len(ids) - length) <= LENGTH_TOLERANCE * length:
            break
        # lines tokenised one by one count a little differently from the joined text: one
        # correction of the filler budget by the measured ratio, from the same RNG state
        budget = max(1, round(budget * (length - overhead) / max(1, len(ids) - overhead)))
        rng.setstate(state)
    depth = real[0] if task in ("retrieval", "second_turn") else None
    document = "\n".join(document_lines)
    return {
        "task": task, "length": length, "index": index, "genre": genre, "source": source, "template": template,
        "depth": depth, "bucket": bucket_of(depth, task), "key": key, "facts": [f for _, f in facts],
        "document": document, "messages": messages, "prompt_ids": ids, "prompt_length": len(ids),
    }


def _draft(task: str, template: int | None) -> tuple[list[str], str]:
    """Facts and request with slots of typical length, to count the tokens that are not filler."""
    if task == "summarization":
        return [], SUMMARY_REQUESTS[0]
    spec = _templates(task)[template]
    count = AGGREGATION_FACTS if task == "aggregation" else 1
    return [spec.fact.format(name=SURNAMES[0], number="555")] * count, spec.question.format(name=SURNAMES[0], number="555")


def _fill(task: str, template: int | None, rng: random.Random, filler: str, index: int, count: int):
    """``(facts [(depth, sentence)], question, key)`` with keys absent from ``filler``."""
    if task == "summarization":
        return [], SUMMARY_REQUESTS[index % len(SUMMARY_REQUESTS)], None
    spec = _templates(task)[template]
    if task == "aggregation":
        names: list[str] = []
        for _ in range(AGGREGATION_FACTS):
            names.append(_fresh(lambda: rng.choice(SURNAMES), filler, names))
        low, high = DEPTHS
        depths = [stratified_depth(j, AGGREGATION_FACTS, low, high, rng) for j in range(AGGREGATION_FACTS)]
        return [(d, spec.fact.format(name=n)) for d, n in zip(depths, names)], spec.question, sorted(names)
    low, high = DEPTHS if task == "retrieval" else START_DEPTHS
    depth = stratified_depth(index, count, low, high, rng)
    name = _fresh(lambda: rng.choice(SURNAMES), filler)
    number = _fresh(lambda: str(rng.randint(*NUMBERS)), filler)
    slots = {"name": name, "number": number}
    return [(depth, spec.fact.format(**slots))], spec.question.format(**slots), slots[spec.key]


def _templates(task: str) -> tuple[QATemplate, ...]:
    return {"retrieval": RETRIEVAL, "aggregation": AGGREGATION, "second_turn": SECOND_TURN}[task]


def _messages(task: str, document: str, question: str, first: tuple[str, str] | None) -> list[dict]:
    """The chat: one user turn (document + request), or for ``second_turn`` two turns around a fixed reply."""
    if task == "second_turn":
        return [{"role": "user", "content": f"{document}\n\n{first[0]}"}, {"role": "assistant", "content": first[1]},
                {"role": "user", "content": question}]
    return [{"role": "user", "content": f"{document}\n\n{question}"}]


def build_suite(tokenizer, pool: FillerPool, tasks: Sequence[str], lengths: Sequence[int], prompts: int, seed: int = 0) -> list[dict]:
    """``prompts`` samples per task x length (``build_sample``); each from its own RNG, so a prompt
    does not change when other tasks or lengths are added.

    Raises:
        ValueError: unknown task, ``prompts`` < 1, or a length below 1.
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"tasks={unknown} are invalid; allowed: {list(TASKS)}")
    if isinstance(prompts, bool) or not isinstance(prompts, int) or prompts < 1:
        raise ValueError(f"prompts={prompts!r} is invalid; allowed: an integer >= 1")
    bad = [n for n in lengths if n < 1]
    if bad or not lengths:
        raise ValueError(f"lengths={list(lengths)} is invalid; allowed: one or more token counts >= 1")
    return [build_sample(tokenizer, pool, task, length, i, prompts, seed)
            for task in tasks for length in lengths for i in range(prompts)]
