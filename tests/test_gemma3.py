"""Integration tests on the real Gemma-3-270M (four PyPI chunk packages, converted once, cached):
interleaved sliding-window (512) and global layers, so a 700-token prompt exercises both."""

from __future__ import annotations

import pytest
import torch

from sdtp_adapter import SDTPConfig, SDTPModel, get_sdtp_model
from sdtp_adapter.zoo import SHIPPED_ADAPTERS
from sdtp_adapter.data.corpora import shakespeare_texts
from sdtp_adapter.zoo import GEMMA3_270M, load_model

pytestmark = [pytest.mark.integration, pytest.mark.gemma]  # ~1 GB download: `make test-all` only


@pytest.fixture(scope="module")
def gemma():
    return load_model(GEMMA3_270M.name)


@pytest.fixture(scope="module")
def prompt(gemma):
    _, tokenizer = gemma
    return tokenizer(shakespeare_texts("heldout")["tempest"], return_tensors="pt").input_ids[:, :700]


def test_keep_all_schedule_is_exact_across_the_sliding_window(gemma, prompt):
    model, _ = gemma
    assert model.config.sliding_window < prompt.shape[1]
    with torch.inference_mode():
        ref = model(prompt).logits
        ref_tokens = model.generate(prompt, max_new_tokens=20, do_sample=False)
    sdtp = get_sdtp_model(model, SDTPConfig(keep_ratio=1.0))
    try:
        with torch.inference_mode():
            assert torch.equal(sdtp(prompt).logits, ref)
            assert torch.equal(sdtp.generate(prompt, max_new_tokens=20, do_sample=False), ref_tokens)
    finally:
        sdtp.unload()


def test_shipped_gemma_adapter_prunes_to_schedule_and_generates(gemma, prompt):
    model, _ = gemma
    sdtp = SDTPModel.from_pretrained(model, SHIPPED_ADAPTERS / GEMMA3_270M.name)
    try:
        with torch.inference_mode():
            out = sdtp.generate(prompt, max_new_tokens=10, do_sample=False)
        assert out.shape[1] == 710
        assert sdtp.last_pruning is not None
        with torch.inference_mode():
            sdtp(prompt)
        assert sdtp.last_pruning.kept_counts(18) == sdtp.schedule.tokens_per_layer(700, 18)
    finally:
        sdtp.unload()
