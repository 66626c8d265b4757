"""Two-turn training chats: a question about the document asked after an unrelated first exchange.

The held-out suite's ``second_turn`` task (``eval_tasks``) showed a pruner trained only on
single-turn chats losing facts that a later turn asks about (issue 12). These chats train that
shape: the first user turn holds the document (a passkey / key-value / needle fact of
``tasks._retrieval`` hidden at a random depth) and an unrelated request, the assistant answers it
with a fixed reply, and the second user turn asks about the fact. The target is the second answer.

Phrasing, requests and answer format are disjoint from the suite's second-turn templates
(``tests/test_eval_suite.py`` checks that no word 3-gram is shared): the facts and answers are the
training ones (full sentences, 4- and 5-digit numbers, common nouns), the requests and the lead-ins
below are used nowhere else.

Without a chat template the plain training format is continued: ``Question: ...`` / ``Answer: ...``
lines, the second answer followed by EOS.
"""

from __future__ import annotations

import random

from .tasks import _retrieval, answer_target, filler, template_ids

FOLLOWUP_FACTS = ("passkey", "kv", "needle")
# (unrelated first request, the assistant's fixed reply)
OPENERS = (
    ("To start, name a primary colour.", "Red is a primary colour."),
    ("First, how many legs does a spider have?", "A spider has eight legs."),
    ("Quick one first: which planet is nearest to the sun?", "Mercury is nearest to the sun."),
    ("Can you tell me what water freezes at, in Celsius?", "Water freezes at zero degrees Celsius."),
)
# put before the training question in the second turn
LEADS = ("Now about the text I pasted.", "Returning to that passage:", "Regarding the material above:")


def followup_sample(tokenizer, texts: list[str], tokens: int, rng: random.Random, depth: float | None = None) -> dict:
    """A two-turn chat over a ~``tokens``-token document whose fact sits at ``depth`` (random if None).

    Returns:
        ``{"input_ids", "target_mask", "prompt_length", "kind": "followup", "fact_kind", "messages",
        "answer"}``: ``messages`` are the three turns before the answer; the target is the answer's
        tokens (and the template's closing tokens after it, as in ``tasks.chat_sample``).

    Raises:
        ValueError: ``depth`` outside [0, 1], or a chat template that does not extend the prompt with
            the answer (no target can be marked).
    """
    if depth is not None and not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth={depth} is invalid; allowed: None (random) or 0 <= depth <= 1")
    fact_kind = FOLLOWUP_FACTS[rng.randrange(len(FOLLOWUP_FACTS))]
    facts, question, answer, _, _ = _retrieval(fact_kind, rng)
    opener, reply = OPENERS[rng.randrange(len(OPENERS))]
    lead = LEADS[rng.randrange(len(LEADS))]
    lines = filler(tokenizer, texts, tokens, rng)
    for fact in facts:
        lines.insert(int((rng.random() if depth is None else depth) * len(lines)), fact)
    messages = [
        {"role": "user", "content": "\n".join(lines) + f"\n\n{opener}"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": f"{lead} {question}"},
    ]
    return answer_target(*_render(tokenizer, messages, answer)) | {
        "kind": "followup", "fact_kind": fact_kind, "messages": messages, "answer": answer,
    }


def _render(tokenizer, messages: list[dict], answer: str) -> tuple[list[int], list[int]]:
    """``(prompt ids, prompt + answer ids)`` with the chat template, or the plain Question/Answer format."""
    if getattr(tokenizer, "chat_template", None):
        prompt = template_ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        full = template_ids(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}]))
        return prompt, full
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
    eos = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
    document, opener = messages[0]["content"].rsplit("\n\n", 1)
    text = f"{document}\n\nQuestion: {opener}\nAnswer: {messages[1]['content']}\nQuestion: {messages[2]['content']}\nAnswer:"
    prompt = bos + tokenizer(text, add_special_tokens=False)["input_ids"]
    return prompt, prompt + tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + eos
