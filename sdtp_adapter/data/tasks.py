"""Training and evaluation samples: plain-text windows and synthetic retrieval tasks in chat format.

Every sample is ``{"input_ids": [N], "target_mask": [N], "kind": str, "answer": str}``; the target mask
marks the tokens whose log-likelihood drives the saliency and the LM loss (the answer of a chat
sample, the tail of a text window). Tasks are generated locally from a seeded RNG.
"""

from __future__ import annotations

import random
from typing import Iterable

WORDS = ("amber", "birch", "cobalt", "delta", "ember", "falcon", "garnet", "harbor", "indigo", "juniper",
         "kestrel", "lantern", "marble", "nectar", "onyx", "pepper", "quartz", "raven", "saffron", "tundra")
ITEMS = ("silver key", "blue lantern", "old map", "wooden box", "red cloak", "golden ring", "iron bell", "glass jar")
PLACES = ("the north tower", "the cellar", "the chapel", "the stable", "the orchard", "the library", "the kitchen", "the garden")


def text_window(tokenizer, text: str, length: int, tail_ratio: float, rng: random.Random) -> dict:
    """A random ``length``-token window of ``text``; the last ``tail_ratio`` of it is the target."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < length:
        raise ValueError(f"text has {len(ids)} tokens, fewer than length={length}")
    start = rng.randrange(0, len(ids) - length + 1)
    window = ids[start : start + length]
    cut = length - max(1, int(round(tail_ratio * length)))
    return {"input_ids": window, "target_mask": [i >= cut for i in range(length)], "kind": "text", "answer": ""}


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
    if kind == "passkey":
        key = str(rng.randrange(10000, 100000))
        return [f"The pass key is {key}. Remember it. {key} is the pass key."], "What is the pass key?", f"The pass key is {key}."
    if kind == "kv":
        keys = rng.sample(WORDS, 4)
        values = [str(rng.randrange(1000, 10000)) for _ in keys]
        asked = rng.randrange(len(keys))
        facts = [f"The value of key '{k}-{rng.choice(WORDS)}' is {v}." for k, v in zip(keys, values)]
        name = facts[asked].split("'")[1]
        return facts, f"What is the value of key '{name}'?", f"The value of key '{name}' is {values[asked]}."
    if kind == "needle":
        item, place = rng.choice(ITEMS), rng.choice(PLACES)
        return [f"The {item} is hidden in {place}."], f"Where is the {item} hidden?", f"The {item} is hidden in {place}."
    raise ValueError(f"kind={kind!r} is invalid; allowed: 'passkey', 'kv', 'needle'")


def chat_sample(tokenizer, document: str, question: str, answer: str, kind: str) -> dict:
    """Tokenise document + question -> answer; the answer's tokens are the target.

    Uses the tokenizer's chat template (one user turn, one assistant turn); a base model without one
    gets the plain format ``"<document>\n\nQuestion: <q>\nAnswer: <answer>"`` followed by EOS.
    """
    instruction = f"{document}\n\nAnswer the question using the text above.\nQuestion: {question}"
    if getattr(tokenizer, "chat_template", None):
        user = {"role": "user", "content": instruction}
        prompt = _ids(tokenizer.apply_chat_template([user], add_generation_prompt=True))
        full = _ids(tokenizer.apply_chat_template([user, {"role": "assistant", "content": answer}]))
    else:
        bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
        prompt = bos + tokenizer(f"{instruction}\nAnswer:", add_special_tokens=False)["input_ids"]
        eos = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
        full = prompt + tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + eos
    if full[: len(prompt)] != prompt:
        raise ValueError("chat template does not extend the prompt with the answer; cannot mark targets")
    return {
        "input_ids": full,
        "target_mask": [i >= len(prompt) for i in range(len(full))],
        "prompt_length": len(prompt),
        "kind": kind,
        "question": question,
        "answer": answer,
    }


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


def _ids(encoded) -> list[int]:
    """``apply_chat_template`` returns a list or a ``BatchEncoding`` depending on the tokenizer."""
    if isinstance(encoded, list):
        return encoded
    ids = encoded["input_ids"]
    return ids[0] if ids and isinstance(ids[0], list) else ids
