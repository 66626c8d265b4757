"""``training.samples``: a user's rows as SDTP samples (text windows, chats), checked against naive
references on a tiny byte-level tokenizer with a ChatML template (no download)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
import pytest
from transformers import PreTrainedTokenizerFast

from sdtp_adapter.data.sources import load_rows
from sdtp_adapter.training.samples import build_samples, describe
from sdtp_adapter.training.checks import check_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes" / "byo_model"))
import make_example  # noqa: E402 - the recipe's tokenizer, not a package module
from make_example import CHATML  # noqa: E402

END_OF_TURN = "<|im_end|>\n"  # what ChatML puts after an assistant's content, inside the assistant's part


def byte_tokenizer(adds_bos: bool = True, chat_template: str | None = CHATML) -> PreTrainedTokenizerFast:
    """The worked example's byte-level ChatML tokenizer (``recipes/byo_model/make_example.py``), with BOS by default."""
    return make_example.byte_tokenizer(adds_bos, chat_template)


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return byte_tokenizer()


TEXTS = ["hello world", "", "a much longer document about nothing in particular", "xyz", "fin"]


def rows_of(**columns) -> datasets.Dataset:
    return datasets.Dataset.from_dict(columns)


def chat(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


def plain(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def packed_reference(tokenizer, texts: list[str], bos: bool, length: int, min_length: int) -> list[tuple[list[int], int]]:
    """The obvious loop: documents (BOS + tokens) joined by EOS, cut every ``length`` tokens."""
    stream, owner = [], []
    for row, text in enumerate(texts):
        if not text:
            continue
        if stream:
            stream.append(tokenizer.eos_token_id)
            owner.append(owner[-1])
        doc = ([tokenizer.bos_token_id] if bos else []) + plain(tokenizer, text)
        stream += doc
        owner += [row] * len(doc)
    out = []
    for at in range(0, len(stream), length):
        window = stream[at : at + length]
        if len(window) >= max(min_length, 2):
            out.append((window, owner[at]))
    return out


def tail_count(n: int, ratio: float = 0.25) -> int:
    return max(1, round(ratio * n))


# ---------------------------------------------------------------- plain text
@pytest.mark.parametrize("adds_bos", [True, False])
@pytest.mark.parametrize("length, min_length", [(7, 1), (7, 5), (16, 16), (64, 1), (5, 3)])
def test_packing_matches_a_naive_reference(adds_bos, length, min_length):
    tokenizer = byte_tokenizer(adds_bos)
    samples = build_samples(rows_of(text=TEXTS), tokenizer, max_length=length, min_length=min_length)
    expected = packed_reference(tokenizer, TEXTS, adds_bos, length, min_length)
    assert samples["input_ids"] == [w for w, _ in expected]
    assert samples["source_row"] == [r for _, r in expected]
    for ids, mask in zip(samples["input_ids"], samples["target_mask"]):
        assert mask == [i >= len(ids) - tail_count(len(ids)) for i in range(len(ids))]


def test_packing_keeps_or_drops_the_remainder_by_min_length(tok):
    stream_length = len(packed_reference(tok, TEXTS, True, 10**6, 1)[0][0])
    length = 10
    remainder = stream_length % length
    assert remainder >= 2, "the test needs a remainder worth keeping"
    kept = build_samples(rows_of(text=TEXTS), tok, max_length=length, min_length=remainder)
    dropped = build_samples(rows_of(text=TEXTS), tok, max_length=length, min_length=remainder + 1)
    assert [len(ids) for ids in kept["input_ids"]] == [length] * (stream_length // length) + [remainder]
    assert [len(ids) for ids in dropped["input_ids"]] == [length] * (stream_length // length)


def test_bos_only_where_the_tokenizer_adds_it_and_eos_between_documents():
    texts = ["ab", "cd"]
    with_bos, without = byte_tokenizer(True), byte_tokenizer(False)
    got = build_samples(rows_of(text=texts), with_bos, max_length=100)["input_ids"]
    bos, eos = with_bos.bos_token_id, with_bos.eos_token_id
    assert got == [[bos, *plain(with_bos, "ab"), eos, bos, *plain(with_bos, "cd")]]
    got = build_samples(rows_of(text=texts), without, max_length=100)["input_ids"]
    assert got == [[*plain(without, "ab"), eos, *plain(without, "cd")]]


def test_no_packing_truncates_each_document_and_drops_short_ones(tok):
    samples = build_samples(rows_of(text=TEXTS), tok, max_length=8, packing=False, min_length=4)
    bos = [tok.bos_token_id]
    # row 1 is empty (no token); row 4 "fin" is BOS + 3 tokens = 4: kept; row 3 "xyz" too
    expected = [(row, (bos + plain(tok, t))[:8]) for row, t in enumerate(TEXTS) if t and len(t) + 1 >= 4]
    assert samples["source_row"] == [row for row, _ in expected] == [0, 2, 3, 4]
    assert samples["input_ids"] == [ids for _, ids in expected]
    short = build_samples(rows_of(text=TEXTS), tok, max_length=8, packing=False, min_length=5)
    assert short["source_row"] == [0, 2]


@pytest.mark.parametrize("ratio", [0.01, 0.25, 0.5, 0.99])
def test_tail_target_counts(tok, ratio):
    texts = ["x" * n for n in (1, 2, 3, 5, 8, 13, 40)]
    samples = build_samples(rows_of(text=texts), tok, max_length=64, packing=False, tail_ratio=ratio)
    for ids, mask in zip(samples["input_ids"], samples["target_mask"]):
        n = len(ids)
        assert sum(mask) == tail_count(n, ratio)
        assert mask == sorted(mask), "the target is a suffix"
    check_dataset(samples, len(tok))


# ---------------------------------------------------------------- chats
def masked_spans(tokenizer, ids: list[int], mask: list[bool]) -> list[str]:
    """The decoded runs of consecutive target tokens."""
    spans, current = [], []
    for token, target in zip(ids, mask):
        if target:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return [tokenizer.decode(span) for span in spans]


def test_chat_target_is_exactly_the_assistant_content_and_its_end_of_turn(tok):
    messages = chat(("system", "be brief"), ("user", "what is 2+2?"), ("assistant", "4, of course."))
    samples = build_samples(rows_of(messages=[messages]), tok, max_length=512)
    ids, mask = samples["input_ids"][0], samples["target_mask"][0]
    assert ids == tok.apply_chat_template(messages)["input_ids"]
    assert masked_spans(tok, ids, mask) == ["4, of course." + END_OF_TURN]
    assert tok.decode([t for t, m in zip(ids, mask) if not m]).endswith("<|im_start|>assistant\n")
    check_dataset(samples, len(tok))


def test_multi_turn_chats_mark_every_assistant_turn(tok):
    messages = chat(("user", "hi"), ("assistant", "hello!"), ("user", "and?"), ("assistant", "more"),
                    ("tool", "42"), ("assistant", "it is 42"), ("user", "thanks"))
    samples = build_samples(rows_of(messages=[messages]), tok, max_length=512)
    ids, mask = samples["input_ids"][0], samples["target_mask"][0]
    assert masked_spans(tok, ids, mask) == [a + END_OF_TURN for a in ("hello!", "more", "it is 42")]
    assert tok.decode(ids).endswith("<|im_start|>user\nthanks<|im_end|>\n"), "the final user turn is kept, not a target"


def test_long_chats_keep_their_last_tokens_and_are_dropped_without_a_target_left(tok):
    answered = chat(("user", "q" * 50), ("assistant", "the answer"))
    trailing = chat(("user", "q"), ("assistant", "a"), ("user", "x" * 50))  # the answer is in the cut-off part
    full = tok.apply_chat_template(answered)["input_ids"]
    samples = build_samples(rows_of(messages=[trailing, answered]), tok, max_length=20)
    assert samples["source_row"] == [1]
    assert samples["input_ids"][0] == full[-20:]
    assert masked_spans(tok, samples["input_ids"][0], samples["target_mask"][0]) == ["the answer" + END_OF_TURN]
    with pytest.raises(ValueError, match="no sample of at least min_length"):
        build_samples(rows_of(messages=[trailing]), tok, max_length=20)


def test_chats_without_an_answer_are_dropped_and_all_of_them_refused(tok):
    rows = rows_of(messages=[chat(("user", "alone")), chat(("user", "q"), ("assistant", "a"))])
    assert build_samples(rows, tok, max_length=64)["source_row"] == [1]
    with pytest.raises(ValueError, match="'assistant' message"):
        build_samples(rows_of(messages=[chat(("user", "alone"))]), tok, max_length=64)


def test_chats_are_never_packed(tok):
    rows = rows_of(messages=[chat(("user", "q"), ("assistant", "a"))] * 3)
    samples = build_samples(rows, tok, max_length=512, packing=True)
    assert samples["source_row"] == [0, 1, 2]


def test_chat_without_a_template_or_with_an_unstable_one_is_refused():
    rows = rows_of(messages=[chat(("user", "q"), ("assistant", "a"))])
    with pytest.raises(ValueError, match="no chat template.*--text-column"):
        build_samples(rows, byte_tokenizer(chat_template=None), max_length=64)
    counting = "{{ messages | length }}" + CHATML  # the prefix changes with every message
    with pytest.raises(ValueError, match="row 0: the chat template is not prefix-stable"):
        build_samples(rows, byte_tokenizer(chat_template=counting), max_length=64)
    broken = "{{ raise_exception('only user turns') }}"
    with pytest.raises(ValueError, match="row 0: the chat template cannot render"):
        build_samples(rows, byte_tokenizer(chat_template=broken), max_length=64)


# ---------------------------------------------------------------- column choice and bad input
def test_column_choice(tok):
    both = rows_of(messages=[chat(("user", "q"), ("assistant", "a"))], text=["plain text"], body=["other"])
    assert build_samples(both, tok, max_length=64)["input_ids"] == build_samples(
        rows_of(messages=both["messages"]), tok, max_length=64)["input_ids"], "messages wins over text"
    as_text = build_samples(both, tok, max_length=64, text_column="body")["input_ids"]
    assert as_text == [[tok.bos_token_id, *plain(tok, "other")]]
    assert build_samples(rows_of(text=["plain text"]), tok, max_length=64)["input_ids"][0][1:] == plain(tok, "plain text")
    with pytest.raises(ValueError, match=r"text_column='nope'.*\['messages', 'text', 'body'\]"):
        build_samples(both, tok, max_length=64, text_column="nope")
    with pytest.raises(ValueError, match=r"\['body'\].*--text-column"):
        build_samples(rows_of(body=["x"]), tok, max_length=64)
    convo = rows_of(turns=[chat(("user", "q"), ("assistant", "a"))])
    assert len(build_samples(convo, tok, max_length=64, messages_column="turns")) == 1


@pytest.mark.parametrize("options, field", [
    (dict(max_length=1), "max_length=1"),
    (dict(max_length=8.0), "max_length=8.0"),
    (dict(max_length=True), "max_length=True"),
    (dict(max_length="8"), "max_length='8'"),
    (dict(tail_ratio=0), "tail_ratio=0"),
    (dict(tail_ratio=1.0), "tail_ratio=1.0"),
    (dict(tail_ratio=-0.5), "tail_ratio=-0.5"),
    (dict(tail_ratio="0.25"), "tail_ratio='0.25'"),
    (dict(min_length=0), "min_length=0"),
    (dict(min_length=65), "min_length=65"),
    (dict(packing="yes"), "packing='yes'"),
])
def test_bad_options_are_refused_naming_the_field(tok, options, field):
    with pytest.raises(ValueError, match="allowed") as err:
        build_samples(rows_of(text=["hello"]), tok, **{"max_length": 64, **options})
    assert field in str(err.value)


def test_not_a_dataset_is_refused(tok):
    with pytest.raises(TypeError, match="datasets.Dataset"):
        build_samples([{"text": "x"}], tok, max_length=64)


def test_non_string_texts_are_refused_naming_the_row(tok):
    with pytest.raises(ValueError, match="row 1: column 'text' holds NoneType None; allowed: a string"):
        build_samples(rows_of(text=["fine", None]), tok, max_length=64)
    chats = rows_of(messages=[chat(("user", "q"), ("assistant", "a"))])
    with pytest.raises(ValueError, match="row 0: .*leave text_column unset"):
        build_samples(chats, tok, max_length=64, text_column="messages")


@pytest.mark.parametrize("rows, message", [
    (rows_of(messages=["not a list"]), r"row 0: column 'messages' holds str 'not a list'; allowed: a list of messages"),
    (datasets.Dataset.from_list([{"messages": [{"content": "x"}]}]), r"row 0: messages\[0\] lacks 'role'"),
    (datasets.Dataset.from_list([{"messages": [{"role": "user"}]}]), r"row 0: messages\[0\] lacks 'content'"),
    # Arrow gives every message every field: a missing content becomes None
    (datasets.Dataset.from_list([{"messages": chat(("user", "q"))}, {"messages": [{"role": "user"}]}]),
     r"row 1: messages\[0\] has content=None \(NoneType\); allowed: a string"),
    (rows_of(messages=[chat(("user", "q"), ("bot", "a"))]),
     r"row 0: messages\[1\] has role='bot'; allowed: 'system', 'user', 'assistant', 'tool'"),
    (rows_of(messages=[[1, 2]]), r"row 0: messages\[0\] is int 1; allowed: a dict"),
])
def test_malformed_chats_are_refused_naming_the_row(tok, rows, message):
    with pytest.raises(ValueError, match=message):
        build_samples(rows, tok, max_length=64)


def test_bad_rows_are_refused_before_any_tokenisation():
    class Counting(PreTrainedTokenizerFast):
        calls = 0

        def __call__(self, *args, **kwargs):
            Counting.calls += 1
            return super().__call__(*args, **kwargs)

    tokenizer = Counting(tokenizer_object=byte_tokenizer()._tokenizer, bos_token="<s>", eos_token="</s>")
    with pytest.raises(ValueError, match="row 2"):
        build_samples(rows_of(text=["a", "b", None]), tokenizer, max_length=64)
    assert Counting.calls == 0


def test_empty_result_names_min_length(tok):
    with pytest.raises(ValueError, match="no sample of at least min_length=10"):
        build_samples(rows_of(text=["short", "tiny"]), tok, max_length=64, packing=False, min_length=10)
    with pytest.raises(ValueError, match="no sample of at least min_length=1"):
        build_samples(rows_of(text=["", ""]), tok, max_length=64)


def test_describe(tok):
    samples = build_samples(rows_of(text=["x" * 7, "y" * 3, "z" * 11]), tok, max_length=64, packing=False)
    # BOS + text: lengths 8, 4, 12; targets 2, 1, 3 of 24 tokens
    assert describe(samples) == "3 samples, total 24 tokens, lengths min/median/max 4/8/12, target tokens 25.0%"
    assert describe(rows_of(input_ids=[], target_mask=[])) == "0 samples"


# ---------------------------------------------------------------- through load_rows
def test_from_files_through_load_rows(tok, tmp_path):
    chats = [chat(("user", "q1"), ("assistant", "a1")), chat(("system", "s"), ("user", "q2"), ("assistant", "a2"))]
    jsonl = tmp_path / "chats.jsonl"
    jsonl.write_text("".join(json.dumps({"messages": m, "id": i}) + "\n" for i, m in enumerate(chats)))
    samples = build_samples(load_rows(str(jsonl)), tok, max_length=256)
    assert [masked_spans(tok, i, m) for i, m in zip(samples["input_ids"], samples["target_mask"])] == [
        ["a1" + END_OF_TURN], ["a2" + END_OF_TURN]]

    txt = tmp_path / "book.txt"
    txt.write_text("line one\nline two\n" * 20)
    samples = build_samples(load_rows(str(txt)), tok, max_length=64)
    stream = [tok.bos_token_id] + plain(tok, txt.read_text())  # one row: the whole file
    assert samples["input_ids"] == [stream[i : i + 64] for i in range(0, len(stream), 64)]

    parquet = tmp_path / "rows.parquet"
    datasets.Dataset.from_dict({"body": ["alpha beta", "gamma"], "label": [0, 1]}).to_parquet(str(parquet))
    samples = build_samples(load_rows(str(parquet)), tok, max_length=64, text_column="body", packing=False)
    assert samples["input_ids"] == [[tok.bos_token_id, *plain(tok, t)] for t in ("alpha beta", "gamma")]
    chat_parquet = tmp_path / "chats.parquet"
    datasets.Dataset.from_list([{"messages": m} for m in chats]).to_parquet(str(chat_parquet))
    assert build_samples(load_rows(str(chat_parquet)), tok, max_length=256)["input_ids"] == [
        tok.apply_chat_template(m)["input_ids"] for m in chats]


# ---------------------------------------------------------------- a real template
@pytest.mark.integration
def test_smollm2_template_marks_the_assistant_turns():
    from transformers import AutoTokenizer

    from sdtp_adapter.zoo import model_path

    tokenizer = AutoTokenizer.from_pretrained(model_path())
    messages = chat(("user", "Name a colour."), ("assistant", "Blue."), ("user", "Another?"), ("assistant", "Green."))
    samples = build_samples(rows_of(messages=[messages]), tokenizer, max_length=4096)
    ids, mask = samples["input_ids"][0], samples["target_mask"][0]
    # SmolLM2's ChatML template: the assistant's part is its content, <|im_end|> and the newline after it
    assert masked_spans(tokenizer, ids, mask) == ["Blue.<|im_end|>\n", "Green.<|im_end|>\n"]
    assert "You are a helpful AI assistant" in tokenizer.decode(ids), "the template's default system prompt, not a target"
