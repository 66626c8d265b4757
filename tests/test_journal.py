"""``bench.journal.GenerationJournal``: generations survive a reopen, a kill mid-append loses only the cut
line, another run's journal is refused by name, and ``suite.evaluate`` resumes from it generating only
what is missing, with the same results as an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CharTokenizer, tiny_llama

from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.bench import suite
from sdtp_adapter.bench.journal import GenerationJournal, ids_sha256, tensors_sha256
from sdtp_adapter.data import eval_filler as F
from sdtp_adapter.data import eval_tasks as E
from sdtp_adapter.files import CorruptedFileError

PRINT = {"model": "m", "prompts_sha256": "abc", "summary_tokens": 64}


def test_entries_survive_a_reopen_and_a_cut_line_is_dropped(tmp_path):
    path = tmp_path / "out" / "suite.journal.jsonl"
    journal = GenerationJournal(path, PRINT)
    journal.put("base", 0, [5, 6, 7])
    journal.put("recency", 0, [])
    with open(path, "ab") as fh:  # a kill in the middle of the third append
        fh.write(b'{"method":"base","prompt":1,"ids":[1,')
    again = GenerationJournal(path, dict(PRINT))
    assert again.count() == 2 and again.get("base", 0) == [5, 6, 7] and again.get("recency", 0) == []
    assert again.get("base", 1) is None and path.read_bytes().endswith(b"\n")
    again.put("base", 1, [9])
    assert GenerationJournal(path, PRINT).get("base", 1) == [9]
    again.remove()
    assert not path.exists()


def test_another_runs_journal_or_a_damaged_one_is_refused_by_name(tmp_path):
    path = tmp_path / "j.jsonl"
    GenerationJournal(path, PRINT).put("base", 0, [1])
    with pytest.raises(ValueError, match=r"j.jsonl is the journal of another run \(differs in: prompts_sha256, "
                       r"summary_tokens\); pass another --out or delete the file"):
        GenerationJournal(path, PRINT | {"prompts_sha256": "def", "summary_tokens": 32})
    path.write_text(path.read_text() + "not json\n" + '{"method":"base","prompt":2,"ids":[3]}\n')
    with pytest.raises(CorruptedFileError, match="j.jsonl, line 3: not a journal entry"):
        GenerationJournal(path, PRINT)
    path.write_text("[1, 2]\n")
    with pytest.raises(CorruptedFileError, match="the first line is not a journal fingerprint"):
        GenerationJournal(path, PRINT)


def test_fingerprints_change_with_any_weight_or_prompt_token():
    state = {"a.weight": torch.zeros(2, 3), "b.bias": torch.ones(4)}
    changed = {"a.weight": torch.zeros(2, 3), "b.bias": torch.tensor([1.0, 1.0, 1.0, 1.0 + 2**-20])}
    assert tensors_sha256(state) == tensors_sha256(dict(reversed(state.items())))
    assert tensors_sha256(state) != tensors_sha256(changed)
    assert tensors_sha256(state) != tensors_sha256({"a.weight": torch.zeros(3, 2), "b.bias": torch.ones(4)})
    assert ids_sha256([[1, 2], [3]]) != ids_sha256([[1], [2, 3]])


def test_evaluate_resumes_from_the_journal_and_generates_only_the_rest(tmp_path, monkeypatch):
    tok = CharTokenizer()
    base = tiny_llama()
    base.generation_config.eos_token_id = 2
    model = get_sdtp_model(base, SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.6))
    docs = {"technical": {"ref.rst": "\n".join(f"ref {i}: wind and rain" for i in range(300))}}
    samples = [E.build_sample(tok, F.FillerPool(docs), task, 400, 0, 1, seed=0) for task in ("retrieval", "summarization")]
    methods = suite.suite_methods(model, ["recency"])
    uninterrupted = suite.evaluate(model, tok, samples, methods, summary_tokens=8, progress_stream=open("/dev/null", "w"))

    path = tmp_path / "suite.journal.jsonl"
    real, calls = suite.greedy_ids, []

    def killed_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(suite, "greedy_ids", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        suite.evaluate(model, tok, samples, methods, summary_tokens=8, journal=GenerationJournal(path, PRINT))
    monkeypatch.setattr(suite, "greedy_ids", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    resumed = suite.evaluate(model, tok, samples, methods, summary_tokens=8, journal=GenerationJournal(path, PRINT),
                             progress_stream=open("/dev/null", "w"))
    assert len(calls) == 4  # three before the kill, one after: nothing generated twice
    assert resumed == uninterrupted


def test_digests_are_the_ones_persisted_by_earlier_versions():
    """Journals and marking parts on disk hold these digests: the shared helper must not change them."""
    import hashlib

    seqs = [[1, 2, 3], [4]]
    naive = hashlib.sha256(b"".join(json.dumps(s, separators=(",", ":")).encode() + b"\n" for s in seqs)).hexdigest()
    assert ids_sha256(seqs) == naive
    state = {"b": torch.arange(3, dtype=torch.float32), "a": torch.zeros(0)}
    naive = hashlib.sha256(b"a:torch.float32:(0,)" + b"b:torch.float32:(3,)" + state["b"].numpy().tobytes()).hexdigest()
    assert tensors_sha256(state) == naive
