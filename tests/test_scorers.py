"""Training-free scorers: the LazyLLM-like last-query attention against the model's own attention weights."""

from __future__ import annotations

import pytest
import torch

from conftest import random_ids, tiny_family, tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.pruning.scorers import last_query_attention_scorer, scorers_for

# 4 layers; each case's config fields on top of conftest's tiny family
FAMILIES = {
    "qwen3": {},
    "phi3": dict(partial_rotary_factor=0.5),  # partial rotary: only the first half of each head is rotated
    # window longer than the prompts, so every layer's real row is the full-attention row
    "gemma3": dict(sliding_window=512, query_pre_attn_scalar=24),
}


def build(family: str):
    return tiny_family(family, "eager", num_hidden_layers=4, **FAMILIES[family])


def reference_rows(model, ids: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Hidden states entering each layer ``[1, n, d]`` and the head-mean of each layer's last attention row ``[1, n]``."""
    with torch.no_grad():
        out = model(ids, output_attentions=True, output_hidden_states=True)
    return list(out.hidden_states[:-1]), [a[:, :, -1].mean(dim=1) for a in out.attentions]


def check_every_layer(model, ids: torch.Tensor) -> None:
    scorer = last_query_attention_scorer(model)
    hidden, rows = reference_rows(model, ids)
    positions = torch.arange(ids.shape[1])[None]
    for layer, (h, row) in enumerate(zip(hidden, rows)):
        with torch.no_grad():
            got = scorer(layer, h, positions)
        torch.testing.assert_close(got, row, rtol=1e-5, atol=1e-6, msg=f"layer {layer}")


def test_equals_the_llama_attention_weights_of_the_last_query():
    check_every_layer(tiny_llama(attn="eager", layers=4), random_ids(30))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_equals_the_attention_weights_in_other_families(family):
    check_every_layer(build(family), random_ids(30))


def test_a_subset_at_real_positions_gets_the_renormalised_full_row():
    # q and k depend only on a token's own hidden state and position, so scoring a gathered subset
    # must give the full row restricted to it, renormalised
    # (per head, then averaged over heads): this checks the real positions are used
    model = tiny_llama(attn="eager", layers=4)
    with torch.no_grad():
        out = model(random_ids(40), output_attentions=True, output_hidden_states=True)
    keep = torch.tensor([0, 1, 5, 9, 17, 18, 30, 36, 38, 39])
    scorer = last_query_attention_scorer(model)
    with torch.no_grad():
        got = scorer(2, out.hidden_states[2][:, keep], keep[None])
    heads = out.attentions[2][:, :, -1, keep]  # [1, H, 10]
    expected = (heads / heads.sum(dim=-1, keepdim=True)).mean(dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_padding_slots_get_no_attention_and_rows_match_solo():
    model = tiny_llama(attn="eager", layers=4)
    ids = random_ids(24)
    hidden, rows = reference_rows(model, ids)
    pad = 5
    h = torch.cat([torch.randn(1, pad, hidden[1].shape[-1]) * 50, hidden[1]], dim=1)  # loud garbage in the pads
    positions = torch.cat([torch.full((1, pad), -1), torch.arange(24)[None]], dim=1)
    with torch.no_grad():
        got = last_query_attention_scorer(model)(1, h, positions)
    assert torch.equal(got[:, :pad], torch.zeros(1, pad))
    torch.testing.assert_close(got[:, pad:], rows[1], rtol=1e-5, atol=1e-6)


def test_invalid_layer_is_refused():
    model = tiny_llama(layers=4)
    with pytest.raises(ValueError, match="layer=4"):
        last_query_attention_scorer(model)(4, torch.zeros(1, 3, 64), torch.arange(3)[None])


def test_listed_and_runs_inside_a_pruned_generation():
    base = tiny_llama(attn="sdpa", layers=8)
    scorers = scorers_for(base)
    assert "last-query attention (LazyLLM-like)" in scorers
    model = get_sdtp_model(base, SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.6))
    ids = random_ids(60)
    with torch.no_grad(), model.use_scorer(scorers["last-query attention (LazyLLM-like)"]):
        out = model.generate(ids, max_new_tokens=4, do_sample=False)
        counts = model.last_pruning.kept_counts(8)
    assert out.shape == (1, 64)
    assert counts[7] < 60
