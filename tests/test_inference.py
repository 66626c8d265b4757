"""Real pruning at inference: exactness, generation, budgets, caches."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPCache, SDTPConfig, get_sdtp_model
from sdtp_adapter.compat import cache_kwarg, cache_of

STAGES = dict(prune_layers=[2, 3, 5, 6], keep_ratio=0.7, protected_first=4, local_window_ratio=0.1)


def greedy_loop(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Reference decoding: one prefill, then one token at a time over the returned cache."""
    out = model(ids, use_cache=True)
    cache, tokens = cache_of(out), []
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(steps):
        tokens.append(nxt)
        out = model(nxt, **cache_kwarg(cache), use_cache=True)
        cache = cache_of(out)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    return torch.cat(tokens, dim=1)


# keep-all exactness (every family, this Llama included): tests/test_families.py::test_keep_all_is_exact


def test_pruned_generate_equals_manual_greedy_loop(attn):
    model = get_sdtp_model(tiny_llama(attn), SDTPConfig(**STAGES))
    ids = random_ids(60)
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=12, do_sample=False)[:, ids.shape[1]:]
        manual = greedy_loop(model, ids, 12)
    assert torch.equal(generated, manual)


def test_kept_counts_follow_schedule_and_protected_tokens_survive():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    ids = random_ids(100, batch=2)
    with torch.no_grad():
        out = model(ids)
    record = model.last_pruning
    expected = model.schedule.tokens_per_layer(100, 8)
    assert record.kept_counts(8) == expected
    assert expected[-1] < 100
    last = record.kept_positions[7]
    for row in last:
        kept = set(row.tolist())
        assert {0, 1, 2, 3} <= kept and set(range(90, 100)) <= kept
    assert out.logits.shape[:2] == (2, 100)
    assert torch.equal(out.pruned_positions, record.exited)
    assert int(record.exited[0].sum()) == 100 - expected[-1]


def test_dropped_tokens_are_in_no_deeper_cache():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    ids = random_ids(80)
    with torch.no_grad():
        out = model(ids, use_cache=True)
    cache = cache_of(out)
    assert isinstance(cache, SDTPCache)
    record = model.last_pruning
    for layer in range(8):
        length = cache.layers[layer].keys.shape[-2]
        assert length == record.kept_counts(8)[layer]
        if layer in record.kept_positions:
            assert torch.equal(cache.layer_positions[layer], record.kept_positions[layer])
    # a token dropped at a stage never reappears deeper
    for a, b in zip(sorted(record.kept_positions)[:-1], sorted(record.kept_positions)[1:]):
        assert set(record.kept_positions[b][0].tolist()) <= set(record.kept_positions[a][0].tolist())
    assert cache.get_seq_length() == 80


def test_pruned_keys_are_the_base_keys_of_kept_tokens_before_the_first_stage():
    base = tiny_llama()
    ids = random_ids(40)
    with torch.no_grad():
        ref = cache_of(base(ids, use_cache=True))
    model = get_sdtp_model(base, SDTPConfig(**STAGES))
    with torch.no_grad():
        cache = cache_of(model(ids, use_cache=True))
    for layer in (0, 1):
        assert torch.equal(cache.layers[layer].keys, ref.layers[layer].keys)


def test_disable_pruning_runs_base_model():
    base = tiny_llama()
    ids = random_ids(64)
    with torch.no_grad():
        ref = base(ids).logits
    model = get_sdtp_model(base, SDTPConfig(**STAGES))
    with torch.no_grad(), model.disable_pruning():
        assert torch.equal(model(ids).logits, ref)
    with torch.no_grad():
        assert not torch.equal(model(ids).logits, ref)


def test_right_padding_is_refused_with_a_clear_error():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    ids = random_ids(30, batch=2)
    mask = torch.ones_like(ids)
    mask[0, -5:] = 0
    with pytest.raises(ValueError, match="left-padded"):
        model(ids, attention_mask=mask)


def left_padded(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(p.shape[1] for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - p.shape[1] :] = p[0]
        mask[row, width - p.shape[1] :] = 1
    return ids, mask


def test_left_padded_batch_matches_each_prompt_alone(attn):
    model = get_sdtp_model(tiny_llama(attn), SDTPConfig(**STAGES))
    prompts = [random_ids(60, seed=1), random_ids(45, seed=2), random_ids(52, seed=3)]
    ids, mask = left_padded(prompts)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batch = model(ids, attention_mask=mask, position_ids=positions).logits
        record = model.last_pruning
        batch_tokens = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)[:, ids.shape[1]:]
        for row, prompt in enumerate(prompts):
            n = prompt.shape[1]
            assert record.kept_counts(8, row) == model.schedule.tokens_per_layer(n, 8)
            alone = model(prompt).logits
            alone_kept = model.last_pruning.kept_positions[7][0] + (ids.shape[1] - n)
            row_kept = record.kept_positions[7][row]
            assert torch.equal(row_kept[row_kept >= 0], alone_kept)
            # the rows' own tolerance: padding changes the batched matmul shapes, not the math
            torch.testing.assert_close(batch[row, -n:], alone[0], rtol=1e-4, atol=1e-4)
            solo_tokens = model.generate(prompt, max_new_tokens=10, do_sample=False)[:, n:]
            assert torch.equal(batch_tokens[row : row + 1], solo_tokens)


def test_a_scorer_sees_real_positions_and_minus_one_on_padding_and_fillers():
    """The positions handed to a scorer in a padded batch: each row's real positions in order, ``-1`` on
    padding and on filler slots (rows with a smaller budget than the batch's largest)."""
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    seen = []

    def recording_recency(layer, hidden, positions):
        seen.append(positions.clone())
        return positions.float()

    ids, mask = left_padded([random_ids(60, seed=1), random_ids(45, seed=2)])
    with torch.no_grad(), model.use_scorer(recording_recency):
        model(ids, attention_mask=mask)
    record = model.last_pruning
    assert len(seen) == len(STAGES["prune_layers"])
    previous = [None] + STAGES["prune_layers"][:-1]  # a stage scores what the stage before it kept
    for before, positions in zip(previous, seen):
        assert positions.min() == -1 and (positions >= -1).all()
        for row, n in enumerate((60, 45)):
            if before is None:
                expected = torch.arange(n)
            else:
                slots = record.kept_positions[before][row]
                expected = slots[slots >= 0] - (60 - n)  # slots of the padded row -> the prompt's positions
            assert torch.equal(positions[row][positions[row] >= 0], expected)


def test_static_cache_is_refused_up_front():
    from transformers import StaticCache

    base = tiny_llama()
    model = get_sdtp_model(base, SDTPConfig(**STAGES))
    cache = StaticCache(config=base.config, max_cache_len=64)
    with pytest.raises(ValueError, match="StaticCache"):
        model(random_ids(30), **cache_kwarg(cache), use_cache=True)


def test_plain_dynamic_cache_is_upgraded():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    out = model(random_ids(30), **cache_kwarg(DynamicCache()), use_cache=True)
    assert isinstance(cache_of(out), SDTPCache)


def test_multi_token_chunk_on_pruned_cache_matches_token_by_token(attn):
    model = get_sdtp_model(tiny_llama(attn), SDTPConfig(**STAGES))
    ids = random_ids(70)
    chunk = random_ids(9, seed=5)
    with torch.no_grad():
        cache = cache_of(model(ids, use_cache=True))
        together = model(chunk, **cache_kwarg(cache), use_cache=True).logits
        cache = cache_of(model(ids, use_cache=True))
        one_by_one = torch.cat(
            [model(chunk[:, i : i + 1], **cache_kwarg(cache), use_cache=True).logits for i in range(chunk.shape[1])], dim=1
        )
    assert cache.get_seq_length() == 79
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-5)


def test_keep_all_schedule_is_exact_on_a_left_padded_batch(attn):
    base = tiny_llama(attn)
    ids, mask = left_padded([random_ids(40, seed=1), random_ids(31, seed=2)])
    with torch.no_grad():
        ref = base(ids, attention_mask=mask).logits
        ref_tokens = base.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    model = get_sdtp_model(base, SDTPConfig(prune_layers=[1, 3, 6], keep_ratio=1.0))
    with torch.no_grad():
        real = mask.bool()
        assert torch.equal(model(ids, attention_mask=mask).logits[real], ref[real])
        assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False), ref_tokens)


def two_turns(model, first: torch.Tensor, second: torch.Tensor):
    cache = cache_of(model(first, use_cache=True))
    out = model(second, **cache_kwarg(cache), use_cache=True)
    return out, model.last_pruning


def test_later_chunk_pruning_with_keep_all_is_exact(attn):
    base = tiny_llama(attn)
    first, second = random_ids(50, seed=1), random_ids(30, seed=2)
    with torch.no_grad():
        cache = cache_of(base(first, use_cache=True))
        ref = base(second, **cache_kwarg(cache), use_cache=True).logits
        for later in (False, True):
            model = get_sdtp_model(base, SDTPConfig(prune_layers=[1, 3, 6], keep_ratio=1.0, prune_later_chunks=later))
            out, _ = two_turns(model, first, second)
            assert torch.equal(out.logits, ref)
            model.unload()


def test_later_chunk_is_pruned_by_the_same_rules(attn):
    model = get_sdtp_model(tiny_llama(attn), SDTPConfig(**STAGES, prune_later_chunks=True))
    first, second = random_ids(60, seed=1), random_ids(40, seed=2)
    with torch.no_grad():
        out, record = two_turns(model, first, second)
        first_counts = model.schedule.tokens_per_layer(60, 8)
        assert record.kept_counts(8) == model.schedule.tokens_per_layer(40, 8)
        for layer in range(8):
            assert cache_of(out).layers[layer].keys.shape[-2] == first_counts[layer] + record.kept_counts(8)[layer]
            if layer in cache_of(out).layer_positions:
                assert bool((cache_of(out).layer_positions[layer][0, first_counts[layer]:] >= 60).all())
        assert cache_of(out).get_seq_length() == 100
        # decoding on the two-turn cache: each layer attends to its own kept positions plus the new token
        step = model(random_ids(1, seed=9), **cache_kwarg(cache_of(out)), use_cache=True)
        assert torch.isfinite(step.logits).all() and cache_of(out).get_seq_length() == 101


def test_later_chunk_pruning_agrees_between_sdpa_and_eager():
    first, second, step = random_ids(60, seed=1), random_ids(40, seed=2), random_ids(1, seed=3)
    results = []
    for attn in ("sdpa", "eager"):
        model = get_sdtp_model(tiny_llama(attn), SDTPConfig(**STAGES, prune_later_chunks=True))
        torch.manual_seed(0)
        for module in model.pruners.values():  # same scores in both runs
            torch.nn.init.normal_(module.fc2.weight)
        with torch.no_grad():
            out, _ = two_turns(model, first, second)
            results.append((out.logits, model(step, **cache_kwarg(cache_of(out)), use_cache=True).logits))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-4)


def test_unsupported_attention_backend_fails_up_front():
    base = tiny_llama()
    base.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'.*sdpa"):
        get_sdtp_model(base, SDTPConfig(**STAGES))


def test_torch_compile_runs_the_same_pruning():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    ids = random_ids(30)
    with torch.no_grad():
        ref = model(ids).logits
        compiled = torch.compile(model, backend="eager")  # dynamo tracing without inductor codegen (CI time)
        out = compiled(ids).logits  # graph breaks around the hooks: they run eagerly
        assert model.last_pruning.kept_counts(8) == model.schedule.tokens_per_layer(30, 8)
        compiled(random_ids(44))  # a new length recompiles, budgets follow it
        assert model.last_pruning.kept_counts(8) == model.schedule.tokens_per_layer(44, 8)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_use_schedule_prunes_by_the_override_and_restores_the_adapter_schedule():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    ids = random_ids(100)
    with torch.no_grad(), model.use_schedule(layers=(3, 6), keep_ratio=0.5):
        assert model.active_schedule.layers == (3, 6)
        model(ids)
        overridden = model.last_pruning.kept_counts(8)
    assert overridden == [100, 100, 100, 50, 50, 50, 25, 25]
    assert model.active_schedule == model.schedule
    with torch.no_grad():
        model(ids)
    assert model.last_pruning.kept_counts(8) == model.schedule.tokens_per_layer(100, 8)


def test_use_schedule_rejects_layers_without_trained_modules_and_bad_values():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    with pytest.raises(ValueError, match="no trained pruning module"), torch.no_grad(), model.use_schedule(layers=(4,)):
        model(random_ids(50))
    for bad in (dict(layers=(5, 3)), dict(layers=(9,)), dict(keep_ratio=0.0), dict(keep_ratio=1.5)):
        with pytest.raises(ValueError, match="layers=|keep_ratio="), model.use_schedule(**bad):
            pass
