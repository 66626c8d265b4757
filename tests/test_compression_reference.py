"""SDTP + KV presses against a naive reference: the whole sequence recomputed from scratch after every
chunk by a hand-written Llama forward whose attention masks say, per layer, key head and query, which
keys that query could see (SDTP's dropped tokens and the press's evicted entries masked out). The
reference picks its own evictions from its own attention with plain loops; the real run (SDTP's hooks,
a pruned prefill, ``SDTPCache`` eviction, decoding on the compressed cache) must give the same tokens,
the same logits and keep the same positions in every head."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from conftest import random_ids, tiny_llama
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.compat import cache_kwarg, cache_of
from sdtp_adapter.compression import H2OPress, SnapKVPress

PROMPT, CHUNK, STEPS = 40, 5, 4


def manual_forward(model, ids: list[int], allowed: list[torch.Tensor]):
    """Logits ``[T, V]``, rotated queries ``[H, T, d]`` and attention ``[H, T, T]`` per layer, where
    ``allowed[layer]`` (``[H_kv, T, T]`` bool) says which keys each query of each key head may attend to."""
    inner, x = model.model, model.model.embed_tokens(torch.tensor([ids]))
    cos, sin = inner.rotary_emb(x, torch.arange(len(ids))[None])
    queries, probs = [], []
    for layer, block in enumerate(inner.layers):
        attn, h = block.self_attn, block.input_layernorm(x)
        shape = (1, len(ids), -1, attn.head_dim)
        q, k = (proj(h).view(shape).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj))
        v = attn.v_proj(h).view(shape).transpose(1, 2)[0]
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        groups = q.shape[1] // k.shape[1]
        logits = q[0] @ k[0].repeat_interleave(groups, 0).transpose(1, 2) * attn.scaling
        p = logits.masked_fill(~allowed[layer].repeat_interleave(groups, 0), float("-inf")).softmax(-1)
        out = (p @ v.repeat_interleave(groups, 0)).transpose(0, 1).reshape(1, len(ids), -1)
        x = x + attn.o_proj(out)
        x = x + block.mlp(block.post_attention_layernorm(x))
        queries.append((q[0], k[0], attn.scaling))
        probs.append(p)
    return model.lm_head(inner.norm(x))[0], queries, probs


class Reference:
    """Per layer and key head: the rows each query could see, the entries alive, their H2O sums."""

    def __init__(self, press, layers: int, kv_heads: int, groups: int):
        self.press, self.layers, self.kv, self.groups = press, layers, kv_heads, groups
        self.rows: list[list[dict[int, set[int]]]] = [[{} for _ in range(kv_heads)] for _ in range(layers)]
        self.alive = [[set() for _ in range(kv_heads)] for _ in range(layers)]
        self.sums = [[{} for _ in range(kv_heads)] for _ in range(layers)]
        self.window: list[list[int]] = [[] for _ in range(layers)]

    def chunk(self, model, ids: list[int], start: int, present: dict[int, set[int]]) -> torch.Tensor:
        """Process positions ``start .. len(ids) - 1`` (``present[layer]``: the ones reaching that layer)."""
        end = len(ids)
        for layer in range(self.layers):
            here = sorted(present.get(layer, set(range(start, end))))
            for g in range(self.kv):
                for i in range(start, end):  # a dropped row sees its causal past: nobody reads it
                    self.rows[layer][g][i] = ({j for j in self.alive[layer][g] | set(here) if j <= i} if i in here
                                              else set(range(i + 1)))
        allowed = [torch.tensor([[[j in self.rows[layer][g][i] for j in range(end)] for i in range(end)]
                                 for g in range(self.kv)]) for layer in range(self.layers)]
        logits, queries, probs = manual_forward(model, ids, allowed)
        for layer in range(self.layers):
            here = sorted(present.get(layer, set(range(start, end))))
            self.window[layer] = (self.window[layer] + here)[-self.press.observation_window:] if self.press.observation_window else []
            for g in range(self.kv):
                entries = sorted(self.alive[layer][g] | set(here))
                heads = range(g * self.groups, (g + 1) * self.groups)
                for j in entries:
                    got = sum(float(probs[layer][h, i, j]) for h in heads for i in here) / self.groups
                    self.sums[layer][g][j] = self.sums[layer][g].get(j, 0.0) + got
                self.alive[layer][g] = self.evict(entries, layer, g, queries[layer], end)
        return logits

    def evict(self, entries: list[int], layer: int, g: int, queries, seen: int) -> set[int]:
        press = self.press
        budget = press.budget(seen)
        if len(entries) <= budget:
            return set(entries)
        protected = set(entries[: press.sink_tokens]) | set(entries[-press.recent_tokens:])
        score = self.sums[layer][g] if isinstance(press, H2OPress) else self.snapkv(entries, layer, g, queries)
        rest = sorted((e for e in entries if e not in protected), key=lambda e: -score[e])
        return protected | set(rest[: budget - len(protected)])

    def snapkv(self, entries: list[int], layer: int, g: int, queries) -> dict[int, float]:
        q, k, scaling = queries
        older = entries[: len(entries) - self.press.window_size]
        total = [0.0] * len(older)
        for h in range(g * self.groups, (g + 1) * self.groups):
            votes = [0.0] * len(older)
            for i in self.window[layer]:  # the window's rows, over the entries alive now
                visible = [j for j in entries if j <= i]
                weights = (torch.stack([q[h, i] @ k[g, j] for j in visible]) * scaling).softmax(0)
                for j, w in zip(visible, weights.tolist()):
                    if j in older:
                        votes[older.index(j)] += w / len(self.window[layer])
            half = self.press.kernel_size // 2
            for n in range(len(older)):  # zero-padded pooling along the entries
                near = [votes[m] for m in range(n - half, n + half + 1) if 0 <= m < len(older)]
                pooled = sum(near) / self.press.kernel_size if self.press.pooling == "avg" else max(near)
                total[n] += pooled / self.groups
        return dict(zip(older, total))


PRESSES = {
    "h2o": H2OPress(max_tokens=16, sink_tokens=2, recent_tokens=4),
    "snapkv": SnapKVPress(max_tokens=16, sink_tokens=2, window_size=4, kernel_size=3),
    "snapkv-max": SnapKVPress(compression_ratio=0.6, sink_tokens=1, window_size=3, pooling="max"),
    "h2o-ratio": H2OPress(compression_ratio=0.5, sink_tokens=3, recent_tokens=2),
}


@pytest.mark.parametrize("sdtp", [True, False], ids=["sdtp+press", "press-alone"])
@pytest.mark.parametrize("name", list(PRESSES))
def test_prefill_chunk_and_decode_match_a_masked_recomputation(name, sdtp, attn):
    press = PRESSES[name]
    model = get_sdtp_model(tiny_llama(attn), SDTPConfig(prune_layers=[2, 5], keep_ratio=0.6, protected_first=2,
                                                        local_window_ratio=0.15))
    base = model.base_model
    config = base.config
    ref = Reference(press, config.num_hidden_layers, config.num_key_value_heads,
                    config.num_attention_heads // config.num_key_value_heads)
    ids = random_ids(PROMPT)[0].tolist()
    later = random_ids(CHUNK, seed=7)[0].tolist()
    guard = contextlib.nullcontext() if sdtp else model.disable_pruning()
    with torch.no_grad(), guard, press(model):
        out = model(torch.tensor([ids]), use_cache=True)
        cache = cache_of(out)
        present = {layer: set(p[0].tolist()) for layer, p in model.last_pruning.kept_positions.items()} if sdtp else {}
        if sdtp:
            assert min(len(p) for p in present.values()) < PROMPT  # SDTP really dropped tokens
        expected = ref.chunk(base, ids, 0, present)
        torch.testing.assert_close(out.logits[0, -1], expected[-1], atol=1e-4, rtol=1e-4)
        steps = [later] + [None] * STEPS  # a multi-token chunk (a next turn), then greedy decoding
        for chunk in steps:
            chunk = chunk or [int(out.logits[0, -1].argmax())]
            assert chunk == later or chunk[0] == int(expected[-1].argmax())
            start = len(ids)
            ids = ids + chunk
            out = model(torch.tensor([chunk]), **cache_kwarg(cache), use_cache=True)
            expected = ref.chunk(base, ids, start, {})
            torch.testing.assert_close(out.logits[0], expected[start:], atol=1e-4, rtol=1e-4)
            assert cache.virtual_length == len(ids)  # the next token's position: positions seen, not cache length
            for layer in range(config.num_hidden_layers):
                kept = cache.compression.layers[layer].positions[0]
                assert [sorted(kept[g].tolist()) for g in range(len(kept))] == [sorted(a) for a in ref.alive[layer]]
                assert cache.layers[layer].keys.shape[2] == len(ref.alive[layer][0])
    assert any(len(ref.alive[layer][0]) < len(ids) for layer in range(config.num_hidden_layers))  # it evicted
    if isinstance(press, SnapKVPress):  # heads keep their own entries (H2O's sums in a random model favour the same early ones)
        assert any(ref.alive[layer][0] != ref.alive[layer][1] for layer in range(config.num_hidden_layers))


def test_pooling_matches_kvpress_avg_pool1d():
    """The reference's pooling loop is kvpress's ``avg_pool1d(kernel, padding=kernel // 2)``."""
    votes = torch.rand(1, 1, 9)
    pooled = F.avg_pool1d(votes, 3, stride=1, padding=1)[0, 0]
    manual = [sum(votes[0, 0, max(0, n - 1): n + 2].tolist()) / 3 for n in range(9)]
    torch.testing.assert_close(pooled, torch.tensor(manual))
