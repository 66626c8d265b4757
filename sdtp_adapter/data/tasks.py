"""Training and evaluation samples: plain-text windows and synthetic retrieval tasks in chat format.

Every sample is ``{"input_ids": [N], "target_mask": [N], "kind": str, "answer": str}``; the target mask
marks the tokens whose log-likelihood drives the saliency and the LM loss (the answer of a chat
sample, the tail of a text window). Tasks are generated locally from a seeded RNG.

The long-context evaluation suite (``task_sample``, ``SUITE_TASKS``) adds the ``document``, the asked
``key``, the ``distractors`` and the ``depth`` to each chat sample; ``is_correct`` scores an answer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterable

WORDS = ("amber", "birch", "cobalt", "delta", "ember", "falcon", "garnet", "harbor", "indigo", "juniper",
         "kestrel", "lantern", "marble", "nectar", "onyx", "pepper", "quartz", "raven", "saffron", "tundra")
ITEMS = ("silver key", "blue lantern", "old map", "wooden box", "red cloak", "golden ring", "iron bell", "glass jar")
PLACES = ("the north tower", "the cellar", "the chapel", "the stable", "the orchard", "the library", "the kitchen", "the garden")


def tail_target(length: int, tail_ratio: float) -> list[bool]:
    """Target mask of a text sample: its last ``max(1, round(tail_ratio * length))`` positions."""
    cut = length - max(1, int(round(tail_ratio * length)))
    return [i >= cut for i in range(length)]


def text_window(tokenizer, text: str, length: int, tail_ratio: float, rng: random.Random) -> dict:
    """A random ``length``-token window of ``text``; the last ``tail_ratio`` of it is the target."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < length:
        raise ValueError(f"text has {len(ids)} tokens, fewer than length={length}")
    start = rng.randrange(0, len(ids) - length + 1)
    window = ids[start : start + length]
    return {"input_ids": window, "target_mask": tail_target(length, tail_ratio), "kind": "text", "answer": ""}


def filler(tokenizer, texts: list[str], tokens: int, rng: random.Random) -> list[str]:
    """Whole lines of prose adding up to about ``tokens`` tokens, from a random play and offset."""
    text = rng.choice(texts)
    lines = [line for line in text.split("\n") if line.strip()]
    start = rng.randrange(0, max(1, len(lines) - 2000))
    out, count = [], 0
    for line in lines[start:]:
        out.append(line)
        count += len(tokenizer(line, add_special_tokens=False)["input_ids"]) + 1
        if count >= tokens:
            break
    return out


def retrieval_task(kind: str, rng: random.Random) -> tuple[list[str], str, str]:
    """``(facts, question, answer)`` for ``kind`` in ``passkey``, ``kv``, ``needle``."""
    facts, question, answer, _, _ = _retrieval(kind, rng)
    return facts, question, answer


def _retrieval(kind: str, rng: random.Random) -> tuple[list[str], str, str, str, tuple[str, ...]]:
    """``retrieval_task`` plus the answer's key and the distractor keys (same RNG draws, same order)."""
    if kind == "passkey":
        key = str(rng.randrange(10000, 100000))
        facts = [f"The pass key is {key}. Remember it. {key} is the pass key."]
        return facts, "What is the pass key?", f"The pass key is {key}.", key, ()
    if kind == "kv":
        keys = rng.sample(WORDS, 4)
        values = [str(rng.randrange(1000, 10000)) for _ in keys]
        asked = rng.randrange(len(keys))
        facts = [f"The value of key '{k}-{rng.choice(WORDS)}' is {v}." for k, v in zip(keys, values)]
        name = facts[asked].split("'")[1]
        others = tuple(v for i, v in enumerate(values) if i != asked and v != values[asked])
        answer = f"The value of key '{name}' is {values[asked]}."
        return facts, f"What is the value of key '{name}'?", answer, values[asked], others
    if kind == "needle":
        item, place = rng.choice(ITEMS), rng.choice(PLACES)
        fact = f"The {item} is hidden in {place}."
        return [fact], f"Where is the {item} hidden?", fact, _place_key(place), ()
    raise ValueError(f"kind={kind!r} is invalid; allowed: 'passkey', 'kv', 'needle'")


def _place_key(place: str) -> str:
    """``"the north tower"`` -> ``"north tower"``: what an answer must name."""
    return place.removeprefix("the ")


def prompt_ids(tokenizer, document: str, question: str) -> list[int]:
    """The prompt of ``chat_sample`` (everything before the answer) for ``document`` and ``question``.

    A prompt compressor rebuilds the prompt from its shortened document with this.
    """
    instruction = _instruction(document, question)
    if getattr(tokenizer, "chat_template", None):
        return template_ids(tokenizer.apply_chat_template([{"role": "user", "content": instruction}], add_generation_prompt=True))
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
    return bos + tokenizer(f"{instruction}\nAnswer:", add_special_tokens=False)["input_ids"]


def _instruction(document: str, question: str) -> str:
    return f"{document}\n\nAnswer the question using the text above.\nQuestion: {question}"


def chat_sample(tokenizer, document: str, question: str, answer: str, kind: str) -> dict:
    """Tokenise document + question -> answer; the answer's tokens are the target.

    Uses the tokenizer's chat template (one user turn, one assistant turn); a base model without one
    gets the plain format ``"<document>\n\nQuestion: <q>\nAnswer: <answer>"`` followed by EOS.
    The ``document`` and ``question`` texts are kept in the sample (``prompt_ids`` rebuilds the prompt).
    """
    prompt = prompt_ids(tokenizer, document, question)
    if getattr(tokenizer, "chat_template", None):
        user = {"role": "user", "content": _instruction(document, question)}
        full = template_ids(tokenizer.apply_chat_template([user, {"role": "assistant", "content": answer}]))
    else:
        eos = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
        full = prompt + tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + eos
    return answer_target(prompt, full) | {"kind": kind, "document": document, "question": question, "answer": answer}


def answer_target(prompt: list[int], full: list[int]) -> dict:
    """``{"input_ids": full, "target_mask", "prompt_length"}``: the tokens after ``prompt`` are the target.

    Raises:
        ValueError: ``full`` does not start with ``prompt`` (a chat template that rewrites earlier turns).
    """
    if full[: len(prompt)] != prompt:
        raise ValueError("chat template does not extend the prompt with the answer; cannot mark targets")
    return {"input_ids": full, "target_mask": [i >= len(prompt) for i in range(len(full))], "prompt_length": len(prompt)}


def retrieval_sample(tokenizer, texts: list[str], tokens: int, kind: str, rng: random.Random, depth: float | None = None) -> dict:
    """A ~``tokens``-token document with facts inserted at ``depth`` (0 = start, 1 = end; random if None)."""
    facts, question, answer = retrieval_task(kind, rng)
    lines = filler(tokenizer, texts, tokens, rng)
    for fact in facts:
        at = int((rng.random() if depth is None else depth) * len(lines))
        lines.insert(at, fact)
    return chat_sample(tokenizer, "\n".join(lines), question, answer, kind)


def mixed_samples(tokenizer, texts: Iterable[str], count: int, length: int, tail_ratio: float, seed: int) -> list[dict]:
    """Half text windows, half retrieval chats (passkey, kv, needle in turn), about ``length`` tokens each."""
    rng = random.Random(seed)
    texts = [t for t in texts if len(t) > 10 * length]  # ~4 chars a token: skip poems shorter than a window
    kinds = ("passkey", "kv", "needle")
    out = []
    for i in range(count):
        if i % 2 == 0:
            out.append(text_window(tokenizer, rng.choice(texts), length, tail_ratio, rng))
        else:
            out.append(retrieval_sample(tokenizer, texts, int(length * 0.9), kinds[(i // 2) % 3], rng))
    return out


# ---------------------------------------------------------------- long-context evaluation suite
SUITE_TASKS = ("passkey", "needle", "multikey", "kv", "vartrack")
MULTIKEY_NEEDLES = 4
KV_PAIRS = 4
VARTRACK_HOPS = 1
# SmolLM2-135M answers "What is the pass key?" with a made-up story (0/4 at 1K tokens) and the
# number with this suffix (4/4): the suite asks for numbers this way
NUMBER_SUFFIX = " Answer with the number."

# Accuracy of answering with a uniform guess over what the question admits (see ``is_correct``):
# passkey: any 5-digit number; needle: one of the 8 places the generator uses; multikey, kv, vartrack:
# one of the candidates the document offers (naming several of them is scored wrong).
CHANCE = {
    "passkey": 1 / 90000,
    "needle": 1 / len(PLACES),
    "multikey": 1 / MULTIKEY_NEEDLES,
    "kv": 1 / KV_PAIRS,
    "vartrack": 1 / 2,
}


@dataclass(frozen=True)
class TaskSpec:
    """One question with the facts that answer it and the facts that distract from it.

    Attributes:
        kind: one of ``SUITE_TASKS``.
        facts: ``(depth, text)`` pairs, depth in [0, 1] of the filler; facts at the same depth keep
            their order. The asked fact sits at the sample's depth.
        question / answer: the question and a full reference answer sentence.
        key: what a correct generation must contain (the number, the place...).
        distractors: keys of the other candidates in the document; a generation naming one is wrong.
    """

    kind: str
    facts: tuple[tuple[float, str], ...]
    question: str
    answer: str
    key: str
    distractors: tuple[str, ...] = ()


def task_spec(kind: str, rng: random.Random, depth: float) -> TaskSpec:
    """A ``kind`` task whose asked fact sits at ``depth`` (0 = start of the filler, 1 = end).

    - ``passkey``, ``needle``: ``retrieval_task``'s facts (the passkey question asks for the number);
    - ``multikey``: ``MULTIKEY_NEEDLES`` items hidden in different places, the asked one at ``depth``,
      the others anywhere;
    - ``kv``: ``KV_PAIRS`` facts ``The value of key 'amber' is 4821.`` with distinct one-word keys, the
      asked one at ``depth``, the others anywhere (``retrieval_task``'s four adjacent facts with
      two-word keys leave SmolLM2-135M at chance: it answers a neighbour's value);
    - ``vartrack``: RULER-style chains ``VAR AMBER = 12345`` -> ``VAR ONYX = VAR AMBER``
      (``VARTRACK_HOPS`` links, each after the previous one), the asked chain rooted at ``depth``, a
      distractor chain with another value rooted anywhere; asks the last variable's value.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth={depth} is invalid; allowed: 0 <= depth <= 1")
    if kind in ("passkey", "needle"):
        facts, question, answer, key, distractors = _retrieval(kind, rng)
        question += NUMBER_SUFFIX if kind == "passkey" else ""
        return TaskSpec(kind, tuple((depth, f) for f in facts), question, answer, key, distractors)
    if kind == "multikey":
        items, places = rng.sample(ITEMS, MULTIKEY_NEEDLES), rng.sample(PLACES, MULTIKEY_NEEDLES)
        depths = [depth] + [rng.random() for _ in items[1:]]
        facts = tuple((d, f"The {item} is hidden in {place}.") for d, item, place in zip(depths, items, places))
        return TaskSpec(kind, facts, f"Where is the {items[0]} hidden?", f"The {items[0]} is hidden in {places[0]}.",
                        _place_key(places[0]), tuple(_place_key(p) for p in places[1:]))
    if kind == "kv":
        keys, values = rng.sample(WORDS, KV_PAIRS), [str(v) for v in rng.sample(range(1000, 10000), KV_PAIRS)]
        depths = [depth] + [rng.random() for _ in keys[1:]]
        facts = tuple((d, f"The value of key '{k}' is {v}.") for d, k, v in zip(depths, keys, values))
        return TaskSpec(kind, facts, f"What is the value of key '{keys[0]}'?{NUMBER_SUFFIX}",
                        f"The value of key '{keys[0]}' is {values[0]}.", values[0], tuple(values[1:]))
    if kind == "vartrack":
        names = [w.upper() for w in rng.sample(WORDS, 2 * (VARTRACK_HOPS + 1))]
        value, other = (str(v) for v in rng.sample(range(10000, 100000), 2))
        asked, decoy = names[: VARTRACK_HOPS + 1], names[VARTRACK_HOPS + 1 :]
        facts = _chain(asked, value, depth, rng) + _chain(decoy, other, rng.random(), rng)
        return TaskSpec(kind, facts, f"What is the value of VAR {asked[-1]}?{NUMBER_SUFFIX}",
                        f"The value of VAR {asked[-1]} is {value}.", value, (other,))
    raise ValueError(f"kind={kind!r} is invalid; allowed: {', '.join(repr(k) for k in SUITE_TASKS)}")


def _chain(names: list[str], value: str, depth: float, rng: random.Random) -> tuple[tuple[float, str], ...]:
    """``VAR names[0] = value`` at ``depth``, then each ``VAR names[i] = VAR names[i-1]`` further on."""
    facts, at = [(depth, f"VAR {names[0]} = {value}")], depth
    for prev, name in zip(names, names[1:]):
        at = rng.uniform(at, 1.0)
        facts.append((at, f"VAR {name} = VAR {prev}"))
    return tuple(facts)


def place_facts(lines: list[str], facts: tuple[tuple[float, str], ...]) -> list[str]:
    """``lines`` with each fact inserted before line ``int(depth * len(lines))`` of the original lines."""
    slots: dict[int, list[str]] = {}
    for depth, fact in facts:
        slots.setdefault(min(len(lines), int(depth * len(lines))), []).append(fact)
    out = []
    for i in range(len(lines) + 1):
        out += slots.get(i, [])
        if i < len(lines):
            out.append(lines[i])
    return out


def task_sample(tokenizer, texts: list[str], length: int, kind: str, rng: random.Random, depth: float) -> dict:
    """A ``kind`` chat sample whose prompt is about ``length`` tokens, the asked fact at ``depth``.

    The ``chat_sample`` fields plus ``task``, ``key``, ``distractors``, ``depth`` and ``length`` (the
    requested prompt length; ``prompt_length`` is the real one).
    """
    spec = task_spec(kind, rng, depth)
    overhead = len(prompt_ids(tokenizer, "\n".join(f for _, f in spec.facts), spec.question))
    lines = filler(tokenizer, texts, max(1, length - overhead), rng)
    sample = chat_sample(tokenizer, "\n".join(place_facts(lines, spec.facts)), spec.question, spec.answer, kind)
    return sample | {"task": kind, "key": spec.key, "distractors": list(spec.distractors), "depth": depth, "length": length}


def mentions(text: str, key: str) -> bool:
    """``key`` appears in ``text`` as a whole word or number (case-insensitive): 1234 is not in 12345."""
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(key)}(?![0-9A-Za-z])", text, flags=re.IGNORECASE) is not None


def is_correct(text: str, key: str, distractors: Iterable[str] = ()) -> bool:
    """A generation is correct iff it names the key and none of the distractors (no hedging by listing)."""
    return mentions(text, key) and not any(mentions(text, d) for d in distractors)


def template_ids(encoded) -> list[int]:
    """``apply_chat_template`` returns a list or a ``BatchEncoding`` depending on the tokenizer."""
    if isinstance(encoded, list):
        return encoded
    ids = encoded["input_ids"]
    return ids[0] if ids and isinstance(ids[0], list) else ids
