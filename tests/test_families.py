"""Every supported family on a tiny random model: exactness, generation, training reach."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, MistralConfig, Phi3Config, Qwen2Config, Qwen3Config

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


def test_sliding_window_models_are_refused_until_supported():
    config = MistralConfig(**COMMON, sliding_window=16)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match="sliding"):
        get_sdtp_model(model, SDTPConfig(prune_layers=[2, 4]))


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
