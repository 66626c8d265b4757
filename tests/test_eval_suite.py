"""The held-out evaluation suite's data and scores: templates disjoint from training, prompts built from
held-out filler with spread depths and the answers inside, scoring rules against naive references,
and the interval / verdict arithmetic. No model: a character tokenizer and made-up documents."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from own_model import char_tokenizer

from sdtp_adapter.bench import suite_render, suite_stats
from sdtp_adapter.bench.suite_metrics import (
    is_correct, is_degenerate, lcs_length, most_repeated_ngram, rouge_l_f1, surname_recall,
)
from sdtp_adapter.data import eval_filler as F
from sdtp_adapter.data import eval_tasks as E
from sdtp_adapter.data import followup
from sdtp_adapter.data import genres as genre_registry
from sdtp_adapter.data import tasks

MARK = "zq"  # a filler word that no template uses: filler lines are removed by it


def paragraphs(word: str, count: int = 60) -> str:
    """Short lines in paragraphs of four, each line unique (``<word> <n> ...``)."""
    lines = [f"{word} {i} kept a quiet ledger of the shelves" for i in range(count)]
    return "\n\n".join("\n".join(lines[i : i + 4]) for i in range(0, count, 4))


DOCS = {"technical": {"spec.rst": paragraphs("spec", 200), "guide.rst": paragraphs("guide", 150)},
        "novels": {"emma": paragraphs("emma", 220)}}


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def suite(tok):
    return E.build_suite(tok, F.FillerPool(DOCS), E.TASKS, [900, 1500], 6, seed=3)


# ---------------------------------------------------------------------------------------------- disjointness
def ngrams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return set(zip(*(words[i:] for i in range(n))))


def training_strings() -> list[str]:
    """Every template string of data.tasks and data.followup (training chats and the older suite), over many draws."""
    out = [tasks._instruction("", ""), "\nAnswer:", "\nQuestion:"]
    out += [text for pair in followup.OPENERS for text in pair] + list(followup.LEADS)
    for seed in range(60):
        rng = random.Random(seed)
        for kind in ("passkey", "kv", "needle"):
            facts, question, answer = tasks.retrieval_task(kind, rng)
            out += [*facts, question, answer]
        for kind in tasks.SUITE_TASKS:
            spec = tasks.task_spec(kind, rng, 0.5)
            out += [f for _, f in spec.facts] + [spec.question, spec.answer]
    return out


def eval_strings(tok) -> list[str]:
    """Every message of eval prompts with filler lines of ``MARK`` words only, filler removed, plus the plain format."""
    docs = {"technical": {"x": "\n\n".join(f"{MARK} {MARK}\n{MARK}" for _ in range(400))}}
    samples = E.build_suite(tok, F.FillerPool(docs), E.TASKS, [600], 12, seed=1)
    out = [E.plain_prompt([{"role": "user", "content": ""}, {"role": "assistant", "content": ""}])]
    for s in samples:
        for m in s["messages"]:
            out.append("\n".join(line for line in m["content"].split("\n") if MARK not in line))
    return out


def test_eval_templates_share_no_word_trigram_with_the_training_templates(tok):
    train = set().union(*(ngrams(s) for s in training_strings()))
    evaluation = set().union(*(ngrams(s) for s in eval_strings(tok)))
    assert len(train) > 100 and len(evaluation) > 100  # both sides really collected
    shared = train & evaluation
    assert not shared, sorted(shared)[:20]


def test_eval_vocabulary_and_answer_formats_differ_from_training():
    training_words = {w.lower() for w in tasks.WORDS} | {w for x in tasks.ITEMS + tasks.PLACES for w in x.lower().split()}
    assert not {s.lower() for s in E.SURNAMES} & training_words
    low, high = E.NUMBERS
    assert (len(str(low)), len(str(high))) == (3, 3)  # training keys: 4-digit values, 5-digit pass keys
    for seed in range(30):
        assert len(tasks.task_spec("passkey", random.Random(seed), 0.5).key) == 5
        assert len(tasks.task_spec("kv", random.Random(seed), 0.5).key) == 4
    every_template = E.RETRIEVAL + E.AGGREGATION + E.SECOND_TURN
    assert all(t.key in ("number", "name") for t in every_template)


def test_filler_is_read_from_the_held_out_split_only(monkeypatch):
    calls = []

    def genre_texts(genre, split="train"):
        calls.append((genre, split))
        return {"doc": "text"}

    monkeypatch.setattr(genre_registry, "genre_texts", genre_texts)
    assert F.suite_documents(["novels", "technical", "novels"]) == {"novels": {"doc": "text"}, "technical": {"doc": "text"}}
    assert calls == [("novels", "heldout"), ("technical", "heldout")]
    with pytest.raises(ValueError, match=r"filler genre\(s\) \['code'\] are invalid; allowed: \['plays'"):
        F.suite_documents(["technical", "code"])
    with pytest.raises(ValueError, match="none given or available"):
        F.suite_documents([])
    monkeypatch.setattr(genre_registry, "available_genres", lambda: ["plays", "novels", "code"])
    assert F.default_filler_genres() == ["novels"]


# ---------------------------------------------------------------------------------------------- building
def filler_of(sample: dict) -> str:
    facts = set(sample["facts"])
    return "\n".join(line for line in sample["document"].split("\n") if line not in facts)


def test_counts_lengths_and_determinism(tok, suite):
    assert len(suite) == len(E.TASKS) * 2 * 6
    for task, length in itertools.product(E.TASKS, [900, 1500]):
        cell = [s for s in suite if s["task"] == task and s["length"] == length]
        assert [s["index"] for s in cell] == list(range(6))
        assert {s["genre"] for s in cell} == {"technical", "novels"}  # filler genres alternate
    for s in suite:
        assert abs(s["prompt_length"] - s["length"]) <= 0.05 * s["length"], (s["task"], s["prompt_length"])
        assert s["prompt_ids"] == E.render_prompt(tok, s["messages"]) and len(s["prompt_ids"]) == s["prompt_length"]
    # a prompt does not depend on the other tasks and lengths asked for
    again = E.build_suite(tok, F.FillerPool(DOCS), ["summarization", "retrieval"], [1500], 6, seed=3)
    assert again == [s for t in ("summarization", "retrieval") for s in suite if s["task"] == t and s["length"] == 1500]
    assert E.build_suite(tok, F.FillerPool(DOCS), ["retrieval"], [900], 6, seed=4) != suite[:6]


def test_filler_is_a_contiguous_stretch_of_a_held_out_document(suite):
    for s in suite:
        source = DOCS[s["genre"]][s["source"]]
        assert filler_of(s) in source, (s["task"], s["source"])
        assert MARK not in s["document"]


def test_answers_sit_once_in_the_document_at_spread_depths(suite):
    for s in (s for s in suite if s["task"] in ("retrieval", "second_turn")):
        assert len(s["facts"]) == 1 and s["facts"][0] in s["document"].split("\n")
        assert len(re.findall(rf"\b{re.escape(s['key'])}\b", s["document"])) == 1
        assert s["bucket"] == E.bucket_of(s["depth"], s["task"])
    for length in (900, 1500):
        retrieval = [s for s in suite if s["task"] == "retrieval" and s["length"] == length]
        low, high = E.DEPTHS
        width = (high - low) / len(retrieval)
        for s in retrieval:  # one prompt in each stratum (up to a line's share of the document)
            assert low + width * s["index"] - 0.04 <= s["depth"] <= low + width * (s["index"] + 1) + 0.04, s["depth"]
        assert {s["bucket"] for s in retrieval} == set(E.BUCKETS)
        second = [s for s in suite if s["task"] == "second_turn" and s["length"] == length]
        assert all(s["depth"] <= E.START_DEPTHS[1] + 0.04 and s["bucket"] == "start" for s in second)


def test_aggregation_facts_are_spread_over_the_thirds(suite):
    for s in (s for s in suite if s["task"] == "aggregation"):
        assert s["bucket"] == E.SPREAD and s["depth"] is None and len(s["key"]) == E.AGGREGATION_FACTS
        lines = s["document"].split("\n")
        at = sorted(lines.index(f) / len(lines) for f in s["facts"])
        assert at[0] < 1 / 3 + 0.05 and 1 / 3 - 0.05 < at[1] < 2 / 3 + 0.05 and at[2] > 2 / 3 - 0.05, at
        for name in s["key"]:
            assert len(re.findall(rf"\b{name}\b", s["document"])) == 1


def test_second_turn_and_summary_messages(suite):
    for s in suite:
        if s["task"] == "second_turn":
            first, reply, question = s["messages"]
            assert [m["role"] for m in s["messages"]] == ["user", "assistant", "user"]
            assert (first["content"].removeprefix(s["document"] + "\n\n"), reply["content"]) in E.FIRST_TURNS
            assert s["document"] not in question["content"]
        elif s["task"] == "summarization":
            assert s["key"] is None and s["facts"] == [] and s["bucket"] == E.WHOLE
            assert s["messages"][0]["content"].removeprefix(s["document"] + "\n\n") in E.SUMMARY_REQUESTS


def test_chat_template_path_and_refusals():
    from conftest import CharTokenizer

    sample = E.build_sample(CharTokenizer(), F.FillerPool(DOCS), "retrieval", 900, 0, 3, seed=0)
    assert sample["prompt_ids"] == CharTokenizer().apply_chat_template(sample["messages"], add_generation_prompt=True)
    with pytest.raises(ValueError, match="task='trivia' is invalid"):
        E.build_sample(CharTokenizer(), F.FillerPool(DOCS), "trivia", 900, 0, 3, seed=0)
    with pytest.raises(ValueError, match="prompts=0 is invalid"):
        E.build_suite(CharTokenizer(), F.FillerPool(DOCS), ["retrieval"], [900], 0)
    with pytest.raises(ValueError, match="genre 'technical': no held-out document has"):
        E.build_suite(CharTokenizer(), F.FillerPool(DOCS), ["retrieval"], [60000], 2)


# ---------------------------------------------------------------------------------------------- scoring
def test_answer_scoring():
    sample = {"task": "retrieval", "key": "417"}
    assert is_correct(sample, "417") and is_correct(sample, "Room 417.") and is_correct(sample, "It is room number 417")
    assert not is_correct(sample, "4170") and not is_correct(sample, "room 41 7")
    agg = {"task": "aggregation", "key": ["Haddad", "Novak", "Okafor"]}
    for text in ("Okafor, Novak and Haddad.", "- okafor\n- NOVAK\n- Haddad", "1. Novak 2. Haddad 3. Okafor",
                 "The names are: Haddad; Novak; Okafor", "Okafor, Okafor, Novak, Haddad"):
        assert is_correct(agg, text), text
    for text in ("Okafor, Novak", "Okafor, Novak, Haddad, Sato", "Okaforr, Novak, Haddad", ""):
        assert not is_correct(agg, text), text
    recalls = {"Okafor, Novak and Haddad": 1.0, "Okafor and Smith": 1 / 3, "Okafor, Novak, Sato": 2 / 3, "nobody": 0.0}
    for text, recall in recalls.items():
        assert surname_recall(agg, text) == pytest.approx(recall)
    with pytest.raises(ValueError, match="recall is defined for 'aggregation' only"):
        surname_recall(sample, "417")
    with pytest.raises(ValueError, match="task='summarization' has no right answer"):
        is_correct({"task": "summarization", "key": None}, "text")


def naive_lcs(a, b) -> int:
    """Longest subsequence of ``a`` that is a subsequence of ``b``, by enumerating them (short inputs)."""
    def is_sub(seq, of):
        it = iter(of)
        return all(x in it for x in seq)

    for size in range(len(a), 0, -1):
        if any(is_sub(c, b) for c in itertools.combinations(a, size)):
            return size
    return 0


def test_lcs_and_rouge_l_against_naive_references():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.randrange(4) for _ in range(rng.randrange(0, 9))]
        b = [rng.randrange(4) for _ in range(rng.randrange(0, 9))]
        lcs = naive_lcs(a, b)
        assert lcs_length(a, b) == lcs == lcs_length(b, a)
        expected = (1.0 if not a and not b else 0.0) if lcs == 0 else 2 * lcs * lcs / (lcs * len(b) + lcs * len(a))
        assert rouge_l_f1(a, b) == pytest.approx(expected)
    assert rouge_l_f1([1, 2, 3], [1, 2, 3]) == 1.0 and rouge_l_f1([], [1]) == 0.0 and rouge_l_f1([], []) == 1.0


@pytest.mark.parametrize("candidate, reference, expected", [
    # Lin (2004), section 3.1: LCS "police the gunman" / "the gunman" against "police killed the gunman"
    ("police kill the gunman", "police killed the gunman", 3 / 4),
    ("the gunman kill police", "police killed the gunman", 2 / 4),
    # LCS 5 of 6 words each way (rouge_score's RougeScorer(["rougeL"]) gives 0.8333 too)
    ("the cat was on the mat", "the cat sat on the mat", 5 / 6),
    # LCS 2 ("a c"): P = 2/2, R = 2/5, F = 2PR / (P + R) = 4/7
    ("a c", "a b c d e", 4 / 7),
])
def test_rouge_l_known_values(candidate, reference, expected):
    assert rouge_l_f1(candidate.split(), reference.split()) == pytest.approx(expected)


def naive_most_repeated(tokens, n=3) -> int:
    best = 0
    for i in range(len(tokens) - n + 1):
        gram = tokens[i : i + n]
        best = max(best, sum(tokens[j : j + n] == gram for j in range(len(tokens) - n + 1)))
    return best


def test_degenerate_outputs_against_a_naive_count():
    rng = random.Random(1)
    for _ in range(200):
        tokens = [rng.randrange(3) for _ in range(rng.randrange(0, 20))]
        assert most_repeated_ngram(tokens) == naive_most_repeated(tokens)
        assert is_degenerate(tokens) == (naive_most_repeated(tokens) >= 4)
    assert is_degenerate("a b c a b c a b c a b c".split())  # "a b c" 4 times
    assert not is_degenerate("a b c a b c a b c".split())  # 3 times
    assert is_degenerate([7] * 6)  # (7, 7, 7) at 4 overlapping offsets
    assert not is_degenerate([7] * 5) and not is_degenerate([1, 2])
    with pytest.raises(ValueError, match="n=0 is invalid"):
        most_repeated_ngram([1, 2], n=0)


# ---------------------------------------------------------------------------------------------- intervals, verdict
def fake_run(base, sdtp, recency, buckets, task="retrieval"):
    samples = [{"task": task, "length": 1024, "bucket": b} for b in buckets]
    names = [suite_stats.BASE, suite_stats.TRAINED, suite_stats.RECENCY]
    per_prompt = {n: {"score": list(v), "degenerate": [0] * len(v), "new_tokens": [5] * len(v)}
                  for n, v in zip(names, (base, sdtp, recency))}
    return samples, {"methods": names, "per_prompt": per_prompt}


def test_accuracy_cells_give_means_intervals_ratios_and_paired_differences():
    base = [1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1]
    sdtp = [1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1]
    recency = [0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1]
    buckets = ["start"] * 4 + ["middle"] * 4 + ["end"] * 4
    samples, evaluation = fake_run(base, sdtp, recency, buckets)
    acc = suite_stats.summarize(samples, evaluation)["accuracy"]["retrieval"]["1024"]
    assert list(acc) == ["start", "middle", "end", "all"]
    for bucket, rows in (("start", range(4)), ("middle", range(4, 8)), ("end", range(8, 12)), ("all", range(12))):
        cell = acc[bucket]["methods"]
        mean = lambda v: sum(v[i] for i in rows) / len(rows)  # noqa: E731
        assert acc[bucket]["n"] == len(rows)
        for name, values in zip(evaluation["methods"], (base, sdtp, recency)):
            m = cell[name]
            assert m["mean"] == pytest.approx(mean(values)) and m["low"] <= m["mean"] <= m["high"]
            assert m["ratio"] == pytest.approx(mean(values) / mean(base))
        assert cell[suite_stats.TRAINED]["margin"]["diff"] == pytest.approx(mean(sdtp) - 0.95 * mean(base))
        assert cell[suite_stats.RECENCY]["vs_sdtp"]["diff"] == pytest.approx(mean(sdtp) - mean(recency))
        assert "vs_sdtp" not in cell[suite_stats.TRAINED] and "margin" not in cell[suite_stats.BASE]
    assert acc["all"]["methods"][suite_stats.RECENCY]["vs_sdtp"]["excludes_zero"]  # 10 vs 4 of 12, paired


def test_verdict_flags_every_cell_below_95_percent_of_the_unpruned_model():
    samples, evaluation = fake_run([1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 1], [0] * 6, ["start"] * 3 + ["end"] * 3)
    results = {"methods": evaluation["methods"]} | suite_stats.summarize(samples, evaluation)
    v = suite_stats.verdict(results)["long_context"]
    assert not v["met"] and [(c["bucket"], c["met"]) for c in v["checks"]] == [("start", True), ("end", False)]
    assert v["checks"][1]["ratio"] == pytest.approx(2 / 3)
    samples, evaluation = fake_run([1, 0, 1, 1], [1, 0, 1, 1], [0] * 4, ["start"] * 4)
    results = {"methods": evaluation["methods"]} | suite_stats.summarize(samples, evaluation)
    assert suite_stats.verdict(results)["long_context"]["met"]
    samples, evaluation = fake_run([0, 0, 1, 1], [0, 0, 1, 1], [0] * 4, ["start"] * 2 + ["end"] * 2)
    results = {"methods": evaluation["methods"], "prompts": 2, "intervals": suite_stats.INTERVALS}
    results |= suite_stats.summarize(samples, evaluation)
    results["verdict"] = suite_stats.verdict(results)
    assert [c["uninformative"] for c in results["verdict"]["long_context"]["checks"]] == [True, False]
    line = next(x for x in suite_render.verdict_lines(results) if x.startswith("- accuracy"))
    assert "**met; 1 of 2 cells cannot test it, the unpruned model scores 0 there**" in line
    assert "retrieval 1024 start: 0.00 vs 0.00, unpruned scores 0" in line


def test_summary_cells_and_their_targets():
    base_ref = [1.0] * 8
    samples, evaluation = fake_run(base_ref, [0.9, 0.8, 0.7, 0.9, 0.8, 0.9, 0.95, 0.85], [0.3, 0.2, 0.4, 0.1, 0.3, 0.2, 0.3, 0.4],
                                   ["whole"] * 8, task="summarization")
    evaluation["per_prompt"][suite_stats.TRAINED]["degenerate"] = [0, 0, 0, 0, 0, 0, 0, 1]
    results = {"methods": evaluation["methods"]} | suite_stats.summarize(samples, evaluation)
    assert results["accuracy"] == {} and list(results["summarization"]) == ["1024", "all"]
    cell = results["summarization"]["all"]["methods"]
    assert cell[suite_stats.TRAINED]["degenerate"]["mean"] == pytest.approx(1 / 8)
    assert cell[suite_stats.RECENCY]["vs_sdtp"]["rouge_l"]["low"] > 0
    v = suite_stats.verdict(results)
    assert v["summary_rouge"]["met"] and not v["summary_degenerate"]["met"]
    assert v["summary_degenerate"]["checks"][0]["sdtp"] == pytest.approx(1 / 8)
