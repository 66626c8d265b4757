"""The synthetic long-context suite: sample generation, the scoring rule, evaluation and rendering."""

from __future__ import annotations

import random
import re

import pytest

from conftest import CharTokenizer, naive_greedy, tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.bench import longcontext
from sdtp_adapter.bench.methods import Method
from sdtp_adapter.data import tasks
from sdtp_adapter.pruning.scorers import recency_scorer

TEXTS = ["\n".join(f"line {chr(97 + i % 26)} of the play, spoken {chr(97 + i % 7)}" for i in range(4000))]


def original_retrieval_task(kind: str, rng: random.Random):
    """``retrieval_task`` as it was before the suite (the trainer's and the demo's samples must not move)."""
    if kind == "passkey":
        key = str(rng.randrange(10000, 100000))
        facts = [f"The pass key is {key}. Remember it. {key} is the pass key."]
        return facts, "What is the pass key?", f"The pass key is {key}."
    if kind == "kv":
        keys = rng.sample(tasks.WORDS, 4)
        values = [str(rng.randrange(1000, 10000)) for _ in keys]
        asked = rng.randrange(len(keys))
        facts = [f"The value of key '{k}-{rng.choice(tasks.WORDS)}' is {v}." for k, v in zip(keys, values)]
        name = facts[asked].split("'")[1]
        return facts, f"What is the value of key '{name}'?", f"The value of key '{name}' is {values[asked]}."
    item, place = rng.choice(tasks.ITEMS), rng.choice(tasks.PLACES)
    return [f"The {item} is hidden in {place}."], f"Where is the {item} hidden?", f"The {item} is hidden in {place}."


@pytest.mark.parametrize("kind", ["passkey", "kv", "needle"])
def test_retrieval_task_draws_are_unchanged(kind):
    for seed in range(20):
        a, b = random.Random(seed), random.Random(seed)
        assert tasks.retrieval_task(kind, a) == original_retrieval_task(kind, b)
        assert a.random() == b.random()  # same number of draws


def suite(seed=0, which=tasks.SUITE_TASKS, lengths=(300, 600), depths=(0.0, 0.5, 1.0)):
    return longcontext.task_suite(CharTokenizer(), TEXTS, lengths, depths, 2, seed, which)


def test_suite_is_deterministic_and_cells_do_not_depend_on_each_other():
    first, again = suite(), suite()
    assert first == again
    assert len(first) == len(tasks.SUITE_TASKS) * 2 * 3 * 2
    assert [s["document"] for s in suite(seed=1)] != [s["document"] for s in first]
    only = suite(which=("vartrack",), lengths=(600,))
    assert only == [s for s in first if s["task"] == "vartrack" and s["length"] == 600]


def test_answers_and_distractors_are_in_the_document_and_the_prompt():
    tok = CharTokenizer()
    for s in suite():
        assert tasks.mentions(s["document"], s["key"]), s["task"]
        assert all(tasks.mentions(s["document"], d) for d in s["distractors"])
        assert s["key"] not in s["distractors"]
        assert tasks.is_correct(s["answer"], s["key"], s["distractors"])
        prompt = s["input_ids"][: s["prompt_length"]]
        assert prompt == tasks.prompt_ids(tok, s["document"], s["question"])
        assert abs(len(prompt) - s["length"]) < 60  # within about one filler line
    assert {len(s["distractors"]) for s in suite() if s["task"] == "multikey"} == {tasks.MULTIKEY_NEEDLES - 1}
    assert {len(s["distractors"]) for s in suite() if s["task"] == "kv"} == {tasks.KV_PAIRS - 1}


def asked_fact_line(sample: dict) -> str:
    key, task = sample["key"], sample["task"]
    if task == "vartrack":
        return next(line for line in sample["document"].split("\n") if line.startswith("VAR") and line.endswith(f"= {key}"))
    if task == "kv":
        return next(line for line in sample["document"].split("\n") if line.endswith(f" is {key}."))
    lines = sample["document"].split("\n")
    return next(line for line in lines if tasks.mentions(line, key) and not line.startswith("line "))


def test_the_asked_fact_sits_at_the_requested_depth():
    for s in suite():
        lines = s["document"].split("\n")
        filler = [i for i, line in enumerate(lines) if line.startswith("line ")]
        at = lines.index(asked_fact_line(s))
        before = sum(i < at for i in filler)  # filler lines above the fact
        assert abs(before - s["depth"] * len(filler)) <= 1, (s["task"], s["depth"], before, len(filler))


def test_variable_chains_lead_from_the_value_to_the_asked_variable():
    for s in suite(which=("vartrack",)):
        lines = [line for line in s["document"].split("\n") if line.startswith("VAR ")]
        assert len(lines) == 2 * (tasks.VARTRACK_HOPS + 1)
        assigned = {}
        for line in lines:  # in document order: each link comes after what it reads
            name, value = line[4:].split(" = ")
            assigned[name] = assigned[value[4:]] if value.startswith("VAR ") else value
        asked = re.search(r"VAR (\w+)\?", s["question"]).group(1)
        assert assigned[asked] == s["key"] and set(assigned.values()) == {s["key"], *s["distractors"]}


def test_scoring_rule():
    assert tasks.is_correct("The pass key is 12345.", "12345")
    assert not tasks.is_correct("The pass key is 123456.", "12345")  # whole numbers only
    assert not tasks.is_correct("It is 4821 or 1234.", "1234", ["4821"])  # naming a distractor is wrong
    assert tasks.is_correct("In the North Tower.", "north tower", ["cellar"])
    assert not tasks.is_correct("In the towers.", "tower")


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="kind='trivia'"):
        tasks.task_spec("trivia", random.Random(0), 0.5)
    with pytest.raises(ValueError, match="depth=1.5"):
        tasks.task_spec("passkey", random.Random(0), 1.5)
    with pytest.raises(ValueError, match="per_cell=0"):
        longcontext.task_suite(CharTokenizer(), TEXTS, [300], [0.5], 0, 0)
    with pytest.raises(ValueError, match="tasks="):
        longcontext.task_suite(CharTokenizer(), TEXTS, [300], [0.5], 1, 0, ["trivia"])


def test_evaluate_tasks_matches_a_naive_loop():
    tok = CharTokenizer()
    base = tiny_llama()
    base.generation_config.eos_token_id = 2
    model = get_sdtp_model(base, SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.6))
    samples = longcontext.task_suite(tok, TEXTS, [120, 200], [0.5], 2, 0, ("passkey", "multikey"))
    # half of the keys are what the unpruned model answers, so the base accuracy is not trivially 0
    with model.disable_pruning():
        base_texts = [tok.decode(naive_greedy(model, s["input_ids"][: s["prompt_length"]], 6, model.generation_config.eos_token_id)) for s in samples]
    for i, s in enumerate(samples):
        if i % 2 == 0:
            s["key"], s["distractors"] = base_texts[i].split()[0], []
    calls = []

    def compress(document: str, question: str) -> str:
        calls.append(question)
        return document[len(document) // 2 :]

    methods = [Method("base (unpruned)", prune=False), Method("recent", scorer=recency_scorer),
               Method("half", compress=compress)]
    out = longcontext.evaluate_tasks(model, tok, samples, methods, max_new_tokens=6)

    assert out["tasks"] == ["passkey", "multikey"] and out["lengths"] == ["120", "200"]
    assert out["counts"] == {"passkey": {"120": 2, "200": 2}, "multikey": {"120": 2, "200": 2}}
    assert out["chance"] == {"passkey": tasks.CHANCE["passkey"], "multikey": 1 / tasks.MULTIKEY_NEEDLES}
    assert out["generations"]["base (unpruned)"] == base_texts
    for name, texts in out["generations"].items():
        correct = [tasks.is_correct(t, s["key"], s["distractors"]) for t, s in zip(texts, samples)]
        acc = out["accuracy"][name]
        assert acc["overall"] == sum(correct) / len(samples)
        for task in out["tasks"]:
            for length in out["lengths"]:
                cell = [c for c, s in zip(correct, samples) if s["task"] == task and str(s["length"]) == length]
                assert acc["cells"][task][length] == sum(cell) / len(cell)
    assert out["accuracy"]["base (unpruned)"]["overall"] >= 0.5
    with model.use_scorer(recency_scorer):
        recent = [tok.decode(naive_greedy(model, s["input_ids"][: s["prompt_length"]], 6, model.generation_config.eos_token_id)) for s in samples]
    assert out["generations"]["recent"] == recent
    assert calls == [s["question"] for s in samples]  # the compressor saw every document with its question
    assert out["kept_share"]["base (unpruned)"] == 1.0
    assert out["kept_share"]["recent"] < 1.0 and out["kept_share"]["half"] < 0.75


def test_render_puts_the_base_first_and_notes_chance():
    acc = lambda a: {"overall": a, "per_task": {"passkey": a, "kv": a / 2}, "per_length": {"1024": a, "2048": a},
                     "cells": {"passkey": {"1024": a, "2048": a}, "kv": {"1024": a, "2048": a}}}
    data = {"meta": {}, "results": {
        "tasks": ["passkey", "kv"], "lengths": ["1024", "2048"], "chance": {"passkey": 1 / 90000, "kv": 0.25},
        "counts": {"passkey": {"1024": 3, "2048": 3}, "kv": {"1024": 3, "2048": 3}},
        "accuracy": {"SDTP (trained)": acc(0.5), "base (unpruned)": acc(0.75)},
        "kept_share": {"SDTP (trained)": 0.6, "base (unpruned)": 1.0}, "depths": [0.5], "model": "m", "max_new_tokens": 20,
    }}
    lines = longcontext.render(data)
    table = [line for line in lines if line.startswith("| ")]
    assert table[0].split(" | ")[2:4] == ["passkey", "kv"]
    assert table[1].startswith("| *chance* | | *~0* | *0.25* |")
    assert table[2].startswith("| base (unpruned) | 1.00 | 0.75 | 0.38 | 0.75 |")
    assert table[3].startswith("| SDTP (trained) | 0.60 | 0.50 | 0.25 | 0.50 |")
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_command_line_defaults_are_the_calibrated_suite():
    import argparse

    parser = argparse.ArgumentParser()
    longcontext.add_arguments(parser)
    args = parser.parse_args([])
    assert (tuple(args.tasks), tuple(args.lengths), tuple(args.depths)) == (
        longcontext.DEFAULT_TASKS, longcontext.DEFAULT_LENGTHS, longcontext.DEFAULT_DEPTHS)
    args = parser.parse_args(["--tasks", "vartrack", "kv", "--lengths", "512", "--per-cell", "3"])
    assert args.tasks == ["vartrack", "kv"] and args.lengths == [512] and args.per_cell == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["--tasks", "trivia"])


def test_plot_is_written(tmp_path):
    results = {"tasks": ["passkey"], "lengths": ["1024"], "chance": {"passkey": 0.0},
               "accuracy": {"base": {"cells": {"passkey": {"1024": 0.5}}}}}
    longcontext.plot(results, directory=tmp_path)
    assert (tmp_path / longcontext.PLOT).stat().st_size > 0
