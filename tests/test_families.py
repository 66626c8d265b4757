"""Every supported family on a tiny random model: exactness, generation, training reach."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, MistralConfig, Phi3Config, Qwen2Config, Qwen3Config

from conftest import random_ids
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.training.objective import sdtp_loss
from test_inference import greedy_loop

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False)
FAMILIES = {
    "mistral": lambda: MistralConfig(**COMMON, sliding_window=None),
    "qwen2": lambda: Qwen2Config(**COMMON),
    "qwen3": lambda: Qwen3Config(**COMMON, head_dim=16),
    "phi3": lambda: Phi3Config(**COMMON, pad_token_id=0),
    # windows far shorter than the prompts, so the sliding masks and caches really bind
    "mistral-sliding": lambda: MistralConfig(**COMMON, sliding_window=16),
    "qwen2-sliding": lambda: Qwen2Config(**COMMON, use_sliding_window=True, sliding_window=12, max_window_layers=3),
    "gemma3": lambda: Gemma3TextConfig(**COMMON, head_dim=16, sliding_window=12, sliding_window_pattern=2,
                                       query_pre_attn_scalar=16, pad_token_id=0),
}


def build(family: str, attn: str):
    torch.manual_seed(0)
    config = FAMILIES[family]()
    config._attn_implementation = attn
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_keep_all_is_exact(family, attn):
    base = build(family, attn)
    ids = random_ids(40)
    with torch.no_grad():
        ref, ref_tokens = base(ids).logits, base.generate(ids, max_new_tokens=20, do_sample=False)
    model = get_sdtp_model(base, SDTPConfig(prune_layers=[1, 3, 6], keep_ratio=1.0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref)
        assert len(model.last_pruning.kept_positions) == 7  # gathers ran from layer 1 on
        assert torch.equal(model.generate(ids, max_new_tokens=20, do_sample=False), ref_tokens)


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
            cache = model(prompt, use_cache=True).cache
            assert any(getattr(layer, "sliding_window", None) for layer in cache.layers)
            together = model(chunk, cache=cache, use_cache=True).logits
            cache = model(prompt, use_cache=True).cache
            one_by_one = torch.cat(
                [model(chunk[:, i : i + 1], cache=cache, use_cache=True).logits for i in range(chunk.shape[1])], dim=1
            )
        torch.testing.assert_close(together, one_by_one, rtol=1e-4, atol=1e-4)
        results.append(together)
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-4)
