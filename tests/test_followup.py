"""``data.followup``: two-turn training chats (the question about the document in the second user turn),
with a chat template and without one, and their place in ``genre_mixture``. No model, no download."""

from __future__ import annotations

import random

import pytest
from conftest import CharTokenizer
from own_model import char_tokenizer

from sdtp_adapter.data import followup, tasks
from sdtp_adapter.data.mixture import genre_mixture

TEXT = "\n".join(f"line {i} of a quiet story about the harbour" for i in range(400))


def test_chat_template_sample_asks_in_the_second_turn_and_targets_only_the_answer():
    tok = CharTokenizer()
    for seed in range(12):
        s = followup.followup_sample(tok, [TEXT], 300, random.Random(seed))
        first, reply, second = s["messages"]
        assert [m["role"] for m in s["messages"]] == ["user", "assistant", "user"]
        document, opener = first["content"].rsplit("\n\n", 1)
        assert (opener, reply["content"]) in followup.OPENERS
        assert any(second["content"].startswith(lead) for lead in followup.LEADS)
        assert second["content"].endswith("?") and s["answer"] not in second["content"]
        prompt = tok.apply_chat_template(s["messages"], add_generation_prompt=True)
        full = tok.apply_chat_template(s["messages"] + [{"role": "assistant", "content": s["answer"]}])
        assert s["input_ids"] == full and s["prompt_length"] == len(prompt)
        assert s["target_mask"] == [i >= len(prompt) for i in range(len(full))]
        assert s["kind"] == "followup" and s["fact_kind"] in followup.FOLLOWUP_FACTS


def test_the_fact_sits_at_the_asked_depth_and_answers_the_question():
    tok = CharTokenizer()
    for depth in (0.0, 0.5, 1.0):
        rng = random.Random(7)
        s = followup.followup_sample(tok, [TEXT], 300, rng, depth=depth)
        # replay the generator's draws to know the fact (same RNG, same order)
        replay = random.Random(7)
        kind = followup.FOLLOWUP_FACTS[replay.randrange(len(followup.FOLLOWUP_FACTS))]
        facts, question, answer, key, _ = tasks._retrieval(kind, replay)
        assert kind == s["fact_kind"] and answer == s["answer"] and s["messages"][2]["content"].endswith(question)
        lines = s["messages"][0]["content"].rsplit("\n\n", 1)[0].split("\n")
        at = [i for i, line in enumerate(lines) if line in facts]
        filler_lines = len(lines) - len(facts)
        assert at and all(abs(i / filler_lines - depth) <= 1.0 / filler_lines + 1e-9 for i in at[:1])
        assert tasks.mentions(s["answer"], key)


def test_plain_format_without_a_chat_template_continues_the_question_answer_lines():
    tok = char_tokenizer()
    s = followup.followup_sample(tok, [TEXT], 200, random.Random(3))
    first, reply, second = s["messages"]
    document, opener = first["content"].rsplit("\n\n", 1)
    text = f"{document}\n\nQuestion: {opener}\nAnswer: {reply['content']}\nQuestion: {second['content']}\nAnswer:"
    prompt = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    full = prompt + tok(f" {s['answer']}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert s["input_ids"] == full and s["prompt_length"] == len(prompt)
    assert sum(s["target_mask"]) == len(full) - len(prompt)


def test_bad_depth_and_a_template_that_does_not_extend_the_prompt_are_refused():
    with pytest.raises(ValueError, match="depth=1.5 is invalid"):
        followup.followup_sample(CharTokenizer(), [TEXT], 200, random.Random(0), depth=1.5)

    class Rewriting(CharTokenizer):
        def apply_chat_template(self, messages, add_generation_prompt=False):
            return super().apply_chat_template(messages[::-1], add_generation_prompt)

    with pytest.raises(ValueError, match="does not extend the prompt"):
        followup.followup_sample(Rewriting(), [TEXT], 200, random.Random(0))


def test_mixture_cycles_the_asked_chat_kinds_and_refuses_bad_ones():
    docs = {"novels": {"emma": TEXT * 3}}

    def texts_of(genre, split):
        return docs[genre] if split == "train" else {}

    rows = genre_mixture(CharTokenizer(), ["novels"], 8, 400, 0.25, task_share=1.0, seed=0, texts_of=texts_of,
                         task_kinds=["followup", "kv"])
    assert sorted(r["kind"] for r in rows) == ["followup"] * 4 + ["kv"] * 4
    default = genre_mixture(CharTokenizer(), ["novels"], 6, 400, 0.25, task_share=1.0, seed=0, texts_of=texts_of)
    assert sorted(r["kind"] for r in default) == ["kv", "kv", "needle", "needle", "passkey", "passkey"]
    for bad in ([], ["kv", "kv"], ["trivia"]):
        with pytest.raises(ValueError, match=r"task_kinds=.* is invalid; allowed: one or more distinct kinds of \['passkey'"):
            genre_mixture(CharTokenizer(), ["novels"], 4, 400, 0.25, texts_of=texts_of, task_kinds=bad)
