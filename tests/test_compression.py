"""KV presses on ``SDTPCache``: each policy's choice against a plain reference built from the model's own
(eager) attention maps, exactness when the budget holds everything, the budget after a pruned prefill
and while decoding, sliding-window families, and every refusal. The decode-time reference (a masked
recomputation of the whole sequence) is ``test_compression_reference.py``."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
from conftest import random_ids, tiny_family, tiny_llama

from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.compat import cache_kwarg, cache_of
from sdtp_adapter.compression import H2OPress, KVPress, SnapKVPress

STAGES = SDTPConfig(prune_layers=[2, 5], keep_ratio=0.6, protected_first=2, local_window_ratio=0.15)


def sdtp_model(attn: str = "sdpa", model=None):
    return get_sdtp_model(model if model is not None else tiny_llama(attn), STAGES)


def kept_by_head(cache, layer: int) -> list[list[int]]:
    return [sorted(p.tolist()) for p in cache.compression.layers[layer].positions[0]]


def reference_keep(scores: list[float], budget: int, sink: int, recent: int) -> list[int]:
    """Protected first and last entries, then the highest scores: entry indices, sorted."""
    n = len(scores)
    protected = set(range(min(sink, n))) | set(range(n - recent, n))
    rest = sorted((j for j in range(n) if j not in protected), key=lambda j: -scores[j])
    return sorted(protected | set(rest[: budget - len(protected)]))


def pressed_prefill(press, n: int):
    """The unpruned model's own attention maps ``[H, n, n]`` per layer (eager returns them), the kept entries
    per layer and KV head ``[[positions]]`` after a prefill under ``press``, and query heads per KV head."""
    model, ids = sdtp_model("eager"), random_ids(n)
    with torch.no_grad(), model.disable_pruning():
        maps = [a[0] for a in model(ids, output_attentions=True).attentions]
        with press(model):
            cache = cache_of(model(ids, use_cache=True))
    kept = [kept_by_head(cache, layer) for layer in range(len(maps))]
    return maps, kept, maps[0].shape[0] // cache.layers[0].keys.shape[1]


@pytest.mark.parametrize("press", [H2OPress(max_tokens=20, sink_tokens=3, recent_tokens=5),
                                   H2OPress(compression_ratio=0.7, sink_tokens=0, recent_tokens=1)])
def test_h2o_prefill_keeps_the_entries_with_most_attention_received(press):
    maps, kept_entries, groups = pressed_prefill(press, 48)
    for attn, by_head in zip(maps, kept_entries):
        for g, kept in enumerate(by_head):
            received = attn[g * groups:(g + 1) * groups].sum(dim=1).mean(dim=0).tolist()  # summed over queries
            assert kept == reference_keep(received, press.budget(48), press.sink_tokens, press.recent_tokens)


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_snapkv_prefill_keeps_the_entries_the_observation_window_pools_highest(pooling):
    press, n, w = SnapKVPress(max_tokens=18, sink_tokens=2, window_size=6, kernel_size=5, pooling=pooling), 48, 6
    maps, kept_entries, groups = pressed_prefill(press, n)
    for attn, by_head in zip(maps, kept_entries):
        for g, kept in enumerate(by_head):
            scores = [0.0] * (n - w)
            for h in range(g * groups, (g + 1) * groups):
                votes = attn[h, -w:, : n - w].mean(dim=0).tolist()  # the window's rows, before the window
                for j in range(n - w):
                    near = [votes[m] for m in range(j - 2, j + 3) if 0 <= m < n - w]
                    scores[j] += (sum(near) / 5 if pooling == "avg" else max(near)) / groups
            assert kept == reference_keep(scores + [float("inf")] * w, 18, 2, w)


@pytest.mark.parametrize("press", [H2OPress(max_tokens=1000, recent_tokens=4), SnapKVPress(compression_ratio=0.0, window_size=8)])
@pytest.mark.parametrize("prune", [True, False], ids=["sdtp+press", "press-alone"])
def test_a_budget_holding_the_whole_sequence_changes_nothing(press, prune, attn):
    model, ids = sdtp_model(attn), random_ids(40)

    def generate(with_press: bool):
        guard = contextlib.nullcontext() if prune else model.disable_pruning()
        with torch.no_grad(), guard, (press(model) if with_press else contextlib.nullcontext()):
            return model.generate(ids, max_new_tokens=12, do_sample=False, output_scores=True, return_dict_in_generate=True)

    ref, got = generate(False), generate(True)
    assert torch.equal(ref.sequences, got.sequences)
    assert all(torch.equal(a, b) for a, b in zip(ref.scores, got.scores))  # bit-identical logits at every step
    cache = got.past_key_values
    assert cache.compression is not None and set(cache.layer_positions) == (set(range(2, 8)) if prune else set())


@pytest.mark.parametrize("press", [H2OPress(max_tokens=14, recent_tokens=4), SnapKVPress(max_tokens=14, window_size=4)])
def test_after_a_pruned_prefill_and_each_decode_step_every_layer_holds_the_smaller_of_both_budgets(press):
    model, ids = sdtp_model(), random_ids(40)
    counts = model.schedule.tokens_per_layer(40, 8)  # SDTP: [40, 40, 24, 24, 24, 15, 15, 15]
    with torch.no_grad(), press(model):
        out = model(ids, use_cache=True)
        cache = cache_of(out)
        assert [layer.keys.shape[2] for layer in cache.layers] == [min(c, 14) for c in counts]
        for step in range(1, 6):
            out = model(out.logits[:, -1:].argmax(-1), **cache_kwarg(cache), use_cache=True)
            assert [layer.keys.shape[2] for layer in cache.layers] == [min(c + step, 14) for c in counts]
            assert cache.virtual_length == 40 + step


def test_a_ratio_budget_grows_with_the_positions_seen():
    press, model, ids = H2OPress(compression_ratio=0.5, recent_tokens=2), sdtp_model(), random_ids(40)
    counts = model.schedule.tokens_per_layer(40, 8)
    with torch.no_grad(), press(model):
        out = model(ids, use_cache=True)
        assert [layer.keys.shape[2] for layer in cache_of(out).layers] == [min(c, 20) for c in counts]
        for step in range(1, 5):
            out = model(out.logits[:, -1:].argmax(-1), **cache_kwarg(cache_of(out)), use_cache=True)
        assert [layer.keys.shape[2] for layer in cache_of(out).layers] == [min(c + 4, 22) for c in counts]  # ceil(44 / 2)


@pytest.mark.parametrize("family", ["gemma3", "mistral-sliding"])
def test_sliding_window_layers_are_left_to_their_window_and_full_layers_follow_the_budget(family):
    base = tiny_family(family)
    model = sdtp_model(model=base)
    ids, press = random_ids(40), H2OPress(max_tokens=10, recent_tokens=3)
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=6, do_sample=False)
        with H2OPress(max_tokens=100, recent_tokens=3)(model):
            assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False), ref)
        with press(model):
            out = model.generate(ids, max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    cache = out.past_key_values
    sliding = [getattr(layer, "sliding_window", None) for layer in cache.layers]
    assert any(sliding) and (family == "mistral-sliding" or not all(sliding))
    for layer, window in zip(cache.layers, sliding):
        if window:
            assert layer.keys.shape[2] <= window - 1
        else:
            assert layer.keys.shape[2] == 10
    assert sorted(cache.compression.layers) == [i for i, w in enumerate(sliding) if not w]


# ---------------------------------------------------------------------------------------------- refusals
def test_invalid_press_settings_name_the_field():
    with pytest.raises(ValueError, match="exactly one of max_tokens and compression_ratio"):
        H2OPress()
    with pytest.raises(ValueError, match="exactly one of max_tokens and compression_ratio"):
        H2OPress(max_tokens=64, compression_ratio=0.5)
    with pytest.raises(ValueError, match=r"H2OPress.max_tokens=10 is invalid: expected an integer >= .* = 36"):
        H2OPress(max_tokens=10)
    with pytest.raises(ValueError, match=r"compression_ratio=1.0 is invalid: expected a number in \[0, 1\)"):
        SnapKVPress(compression_ratio=1.0)
    with pytest.raises(ValueError, match="kernel_size=4 is invalid: expected an odd integer"):
        SnapKVPress(max_tokens=100, kernel_size=4)
    with pytest.raises(ValueError, match=r"pooling='min' is invalid; allowed: \['avg', 'max'\]"):
        SnapKVPress(max_tokens=100, pooling="min")
    with pytest.raises(ValueError, match="recent window 0 is invalid"):
        H2OPress(max_tokens=100, recent_tokens=0)
    with pytest.raises(TypeError):
        H2OPress(64)  # keyword-only, as the fields are many


def test_what_a_press_refuses():
    model, press = sdtp_model(), H2OPress(max_tokens=12, recent_tokens=2)
    ids = random_ids(30)
    with torch.no_grad():
        with pytest.raises(TypeError, match="needs an SDTPModel"):
            with press(tiny_llama()):
                pass
        with press(model), pytest.raises(ValueError, match="one sequence at a time; got a batch of 2"):
            model(random_ids(30, batch=2), use_cache=True)
        with press(model), pytest.raises(ValueError, match="use_cache=True"):
            model(ids, use_cache=False)
        mask = torch.ones_like(ids)
        mask[0, :3] = 0
        with press(model), model.disable_pruning(), pytest.raises(ValueError, match="attention_mask has padding"):
            model(ids, attention_mask=mask, use_cache=True)
        plain = cache_of(model(ids, use_cache=True))  # prefilled without the press
        with press(model), pytest.raises(ValueError, match="prefilled without a press"):
            model(ids[:, :1], **cache_kwarg(plain), use_cache=True)
        with press(model):
            cache = cache_of(model(ids, use_cache=True))
        with dataclasses.replace(press, max_tokens=20)(model), pytest.raises(ValueError, match="continue it under that press"):
            model(ids[:, :1], **cache_kwarg(cache), use_cache=True)
        model(ids[:, :1], **cache_kwarg(cache), use_cache=True)  # outside the block: decodes, evicts nothing
        with press(model), pytest.raises(ValueError, match="continued outside the press's block"):
            model(ids[:, :1], **cache_kwarg(cache), use_cache=True)


class WrongShape(H2OPress):
    def score(self, layer, keys, values, stats):
        return super().score(layer, keys, values, stats)[:, :, 1:]


def test_a_custom_press_with_scores_of_the_wrong_shape_is_named():
    model, press = sdtp_model(), WrongShape(max_tokens=12, recent_tokens=2)
    with torch.no_grad(), press(model), pytest.raises(ValueError, match=r"WrongShape.score returned .* shape \[1, 2, 29\] at layer 0; expected .* \[1, 2, 30\]"):
        model(random_ids(30), use_cache=True)


class KeyNormPress(KVPress):
    """A custom press: no attention, scores from the keys alone (low key norm = kept, as KnormPress)."""

    @property
    def recent_tokens(self) -> int:
        return 1

    def score(self, layer, keys, values, stats):
        return -keys.float().norm(dim=-1)


def test_a_custom_press_scores_from_keys_alone_and_heads_keep_their_own_entries():
    model, press = sdtp_model(), KeyNormPress(max_tokens=10, sink_tokens=1)
    ids = random_ids(30)
    with torch.no_grad(), model.disable_pruning():
        full = cache_of(model(ids, use_cache=True))
        with press(model):
            cache = cache_of(model(ids, use_cache=True))
    for layer in range(8):
        norms = full.layers[layer].keys[0].norm(dim=-1)  # [H_kv, 30]
        expected = [reference_keep((-norms[g]).tolist(), 10, 1, 1) for g in range(norms.shape[0])]
        assert kept_by_head(cache, layer) == expected
        index = torch.tensor(expected)[..., None].expand(-1, -1, full.layers[layer].keys.shape[-1])
        assert torch.equal(cache.layers[layer].keys[0], full.layers[layer].keys[0].gather(1, index))
    assert any(kept_by_head(cache, layer)[0] != kept_by_head(cache, layer)[1] for layer in range(8))


# ---------------------------------------------------------------------------------------------- later chunks pruned by SDTP
@pytest.mark.parametrize("family", ["gemma3", "mistral-sliding", "llama"])
def test_a_later_chunk_pruned_keep_all_is_exact_when_layers_before_the_first_stage_hold_fewer_positions(family, attn):
    """Layers before the first stage (sliding, or evicted by a press) get their own mask columns."""
    base = tiny_llama(attn) if family == "llama" else tiny_family(family, attn)
    config = dataclasses.replace(STAGES, prune_layers=[3, 5], keep_ratio=1.0, prune_later_chunks=True)
    model, first, second = get_sdtp_model(base, config), random_ids(30), random_ids(20, seed=3)
    press = H2OPress(max_tokens=1000, recent_tokens=2)
    with torch.no_grad(), (press(model) if family == "llama" else contextlib.nullcontext()):
        cache = cache_of(model(first, use_cache=True))
        got = model(second, **cache_kwarg(cache), use_cache=True).logits
    with torch.no_grad(), model.disable_pruning():
        ref = model(torch.cat([first, second], dim=1)).logits[:, 30:]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_a_later_chunk_pruned_by_sdtp_is_evicted_down_to_the_budget():
    config = dataclasses.replace(STAGES, prune_later_chunks=True)
    model, press = get_sdtp_model(tiny_llama(), config), SnapKVPress(max_tokens=14, window_size=4)
    with torch.no_grad(), press(model):
        cache = cache_of(model(random_ids(40), use_cache=True))
        out = model(random_ids(20, seed=3), **cache_kwarg(cache), use_cache=True)
    assert model.last_pruning.kept_counts(8)[-1] < 20  # SDTP pruned the second chunk
    assert [layer.keys.shape[2] for layer in cache.layers] == [14] * 8 and cache.virtual_length == 60
    assert torch.isfinite(out.logits).all()
