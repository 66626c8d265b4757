"""Every supported family on a tiny random model (``conftest.FAMILIES``): exactness, generation, training reach."""

from __future__ import annotations

import pytest
import torch

from conftest import FAMILIES, random_ids, tiny_family, tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.compat import cache_kwarg, cache_of
from sdtp_adapter.data.corpora import shakespeare_texts
from sdtp_adapter.training.objective import sdtp_loss
from test_inference import greedy_loop

# the tiny families on both backends, the tiny Llama, and the real SmolLM2 (integration, sdpa)
KEEP_ALL_CASES = [
    *(pytest.param(name, attn, id=f"{name}-{attn}") for name in ["llama", *sorted(FAMILIES)] for attn in ("sdpa", "eager")),
    pytest.param("smollm2", "sdpa", id="smollm2-sdpa", marks=pytest.mark.integration),
]


def build(family: str, attn: str):
    return tiny_family(family, attn)


@pytest.mark.parametrize("name, attn", KEEP_ALL_CASES)
def test_keep_all_is_exact(name, attn, request):
    """A keep-all schedule gathers at every stage yet gives the base model's logits and 20 greedy tokens."""
    if name == "smollm2":
        base, tokenizer = request.getfixturevalue("smollm2")
        text = shakespeare_texts("heldout")["macbeth"]
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"][:300]])
        config = SDTPConfig(keep_ratio=1.0)  # the default stages (layers 4-22 of 30)
    else:
        base = tiny_llama(attn) if name == "llama" else build(name, attn)
        ids = random_ids(50, batch=2)
        config = SDTPConfig(prune_layers=[1, 3, 4, 6], keep_ratio=1.0)
    with torch.inference_mode():
        ref, ref_tokens = base(ids).logits, base.generate(ids, max_new_tokens=20, do_sample=False)
    model = get_sdtp_model(base, config)
    try:
        with torch.inference_mode():
            assert torch.equal(model(ids).logits, ref)
            layers = base.config.get_text_config().num_hidden_layers
            # the gather path ran at every stage and every later layer got gathered inputs
            assert sorted(model.last_pruning.kept_positions) == list(range(model.schedule.layers[0], layers))
            assert torch.equal(model.generate(ids, max_new_tokens=20, do_sample=False), ref_tokens)
    finally:
        model.unload()  # the real model is shared with other tests


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pruned_generate_equals_greedy_loop_and_training_reaches_modules(family, attn):
    model = get_sdtp_model(build(family, attn), SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.7))
    ids = random_ids(50)
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=10, do_sample=False)[:, ids.shape[1]:]
        assert torch.equal(generated, greedy_loop(model, ids, 10))
    assert model.last_pruning is not None
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[:, 40:] = True
    sdtp_loss(model, ids, target).total.backward()
    assert all(float(m.fc1.weight.grad.abs().sum()) > 0 for m in model.pruners.values())
    assert all(p.grad is None for p in model.base_model.parameters())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_left_padded_generation_matches_solo(family):
    from test_inference import left_padded

    model = get_sdtp_model(build(family, "sdpa"), SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.7))
    prompts = [random_ids(48, seed=4), random_ids(37, seed=5)]
    ids, mask = left_padded(prompts)
    with torch.no_grad():
        batch = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)[:, ids.shape[1]:]
        for row, prompt in enumerate(prompts):
            solo = model.generate(prompt, max_new_tokens=8, do_sample=False)[:, prompt.shape[1]:]
            assert torch.equal(batch[row : row + 1], solo)


SLIDING = ["gemma3", "mistral-sliding", "qwen2-sliding"]


@pytest.mark.parametrize("family", SLIDING)
def test_sliding_layers_chunk_equals_token_by_token_and_backends_agree(family):
    from test_inference import two_turns  # noqa: F401  (same helpers as the Llama tests)

    prompt, chunk = random_ids(50, seed=1), random_ids(7, seed=2)
    results = []
    for attn in ("sdpa", "eager"):
        model = get_sdtp_model(build(family, attn), SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.7))
        text = model.config.get_text_config()
        assert "sliding_attention" in (getattr(text, "layer_types", None) or ["sliding_attention"])
        torch.manual_seed(0)
        for module in model.pruners.values():
            torch.nn.init.normal_(module.fc2.weight)
        with torch.no_grad():
            cache = cache_of(model(prompt, use_cache=True))
            assert any(getattr(layer, "sliding_window", None) for layer in cache.layers)
            together = model(chunk, **cache_kwarg(cache), use_cache=True).logits
            cache = cache_of(model(prompt, use_cache=True))
            one_by_one = torch.cat(
                [model(chunk[:, i : i + 1], **cache_kwarg(cache), use_cache=True).logits for i in range(chunk.shape[1])], dim=1
            )
        torch.testing.assert_close(together, one_by_one, rtol=1e-4, atol=1e-4)
        results.append(together)
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-4)
