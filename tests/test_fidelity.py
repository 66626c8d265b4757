"""Fidelity metrics of ``compare_methods`` against naive references on a tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.bench.fidelity import compare_methods
from sdtp_adapter.bench.methods import Method
from sdtp_adapter.compat import cache_kwarg, cache_of
from sdtp_adapter.pruning.scorers import recency_scorer

STAGES = dict(prune_layers=[2, 4, 6], keep_ratio=0.6, protected_first=2, local_window_ratio=0.1)


class NumberTokenizer:
    """Text is the ids written out, space separated: decode/encode round-trips exactly."""

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [int(t) for t in text.split()]}


def naive_logprobs(model, ids: torch.Tensor, prefix: int, prune: bool) -> torch.Tensor:
    """Prefill the prefix, then one continuation token at a time (not one chunk)."""
    ctx = model.disable_pruning() if not prune else torch.enable_grad()
    rows = []
    with torch.no_grad(), ctx:
        out = model(ids[:, :prefix], use_cache=True)
        cache = cache_of(out)
        rows.append(out.logits[0, -1])
        for i in range(prefix, ids.shape[1] - 1):
            out = model(ids[:, i : i + 1], **cache_kwarg(cache), use_cache=True)
            cache = cache_of(out)
            rows.append(out.logits[0, -1])
    return F.log_softmax(torch.stack(rows).float(), dim=-1)


def naive_metrics(ref: torch.Tensor, got: torch.Tensor, targets: list[int]) -> tuple[float, float, float, float]:
    base = -sum(float(ref[i, t]) for i, t in enumerate(targets)) / len(targets)
    nll = -sum(float(got[i, t]) for i, t in enumerate(targets)) / len(targets)
    top1 = sum(int(ref[i].argmax() == got[i].argmax()) for i in range(len(targets))) / len(targets)
    kl = sum(float(F.kl_div(got[i], ref[i], log_target=True, reduction="sum")) for i in range(len(targets))) / len(targets)
    return base, nll, top1, kl


def test_pruned_methods_match_a_token_by_token_reference():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    window, prefix = random_ids(90, seed=3), 70
    targets = window[0, prefix:].tolist()
    ref = naive_logprobs(model, window, prefix, prune=False)
    results = compare_methods(model, [window], prefix, [Method("base", prune=False), Method("trained"), Method("recent", scorer=recency_scorer)])
    assert set(results) == {"trained", "recent"}  # the unpruned reference is not its own row
    for name, scorer in (("trained", None), ("recent", recency_scorer)):
        with model.use_scorer(scorer) if scorer else torch.no_grad():
            got = naive_logprobs(model, window, prefix, prune=True)
        base, nll, top1, kl = naive_metrics(ref, got, targets)
        r = results[name]
        assert abs(r.base_nll - base) < 1e-4 and abs(r.nll - nll) < 1e-4
        assert r.top1 == top1 and abs(r.kl - kl) < 1e-5
        assert abs(r.delta_nll_pct - 100 * (nll - base) / base) < 1e-3
        expected_share = sum(model.schedule.tokens_per_layer(prefix, 8)) / (prefix * 8)
        assert abs(r.kept_share - expected_share) < 1e-9
        assert r.kv_mib < r.base_kv_mib and r.prefill_s > 0


def test_keep_all_method_is_exact():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    r = compare_methods(model, [random_ids(60, seed=4)], 50, [Method("all", keep_ratio=1.0)])["all"]
    assert r.top1 == 1.0 and abs(r.kl) < 1e-6 and abs(r.delta_nll_pct) < 1e-4 and r.kept_share == 1.0


def test_compressor_method_prefills_the_compressed_prefix_unpruned():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    window, prefix = random_ids(80, seed=5), 60
    every_other = Method("half", compress=lambda text, question: " ".join(text.split()[1::2]))
    r = compare_methods(model, [window], prefix, [every_other], tokenizer=NumberTokenizer())["half"]
    short = torch.cat([window[:, 1:prefix:2], window[:, prefix:]], dim=1)
    got = naive_logprobs(model, short, 30, prune=False)
    ref = naive_logprobs(model, window, prefix, prune=False)
    base, nll, top1, kl = naive_metrics(ref, got, window[0, prefix:].tolist())
    assert abs(r.nll - nll) < 1e-4 and r.top1 == top1 and abs(r.kl - kl) < 1e-5
    assert r.kept_share == 0.5


def test_compressor_without_tokenizer_is_refused():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    with pytest.raises(ValueError, match="tokenizer=None"):
        compare_methods(model, [random_ids(40)], 30, [Method("c", compress=lambda t, q: t)])
