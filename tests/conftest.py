"""Shared test helpers: tiny random models of every supported family (built from configs: no
download, seconds per test), a character tokenizer, random token ids, and the thread setting."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

from sdtp_adapter.compat import cache_kwarg, cache_of

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False)
# family -> (config class, fields on top of TINY)
FAMILIES: dict[str, tuple[type, dict]] = {
    "mistral": (MistralConfig, dict(sliding_window=None)),
    "qwen2": (Qwen2Config, {}),
    "qwen3": (Qwen3Config, dict(head_dim=16)),
    "phi3": (Phi3Config, dict(pad_token_id=0)),
    # windows far shorter than the prompts, so the sliding masks and caches really bind
    "mistral-sliding": (MistralConfig, dict(sliding_window=16)),
    "qwen2-sliding": (Qwen2Config, dict(use_sliding_window=True, sliding_window=12, max_window_layers=3)),
    "gemma3": (Gemma3TextConfig, dict(head_dim=16, sliding_window=12, sliding_window_pattern=2, query_pre_attn_scalar=16, pad_token_id=0)),
}


def tiny_family(family: str, attn: str = "sdpa", seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random ``*ForCausalLM`` of ``family`` (a key of ``FAMILIES``); ``overrides`` change config fields."""
    config_class, fields = FAMILIES[family]
    torch.manual_seed(seed)
    config = config_class(**{**TINY, **fields, **overrides})
    config._attn_implementation = attn
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_llama(attn: str = "sdpa", layers: int = 8, seed: int = 0) -> LlamaForCausalLM:
    """The tiny Llama most tests use (longer positions than the other families)."""
    torch.manual_seed(seed)
    config = LlamaConfig(**{**TINY, "num_hidden_layers": layers, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6})
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


class CharTokenizer:
    """A stand-in tokenizer: one token per character (ids < 128, for tiny models), a trivial chat
    template; decodes each id as ``t<id>`` so that decoded tokens are whole words."""

    chat_template = "<role>content</>"
    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 128 for c in text]}

    def apply_chat_template(self, messages, add_generation_prompt=False):
        text = "".join(f"<{m['role']}>{m['content']}</>" for m in messages)
        return self(text + ("<assistant>" if add_generation_prompt else ""))["input_ids"]

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(f"t{i}" for i in ids)


@pytest.fixture(autouse=True)
def one_thread_for_tiny_models(request):
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the threads'
    spin-waits made them several times slower (20 greedy steps: 2.2 s with 2 threads, 0.3 s with 1).
    Tests on a real model (``integration``) keep every thread."""
    if request.node.get_closest_marker("integration"):
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` of the real SmolLM2-135M-Instruct, loaded once (tests must unload adapters)."""
    from sdtp_adapter.zoo import load_model

    return load_model()


@pytest.fixture(params=["sdpa", "eager"])
def attn(request) -> str:
    return request.param


def random_ids(length: int, batch: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 128, (batch, length), generator=g)


def naive_greedy(model, prompt: list[int], steps: int, eos: int) -> list[int]:
    """Greedy decoding by hand: one prefill, then one token at a time over its cache, stop at EOS."""
    with torch.no_grad():
        out = model(torch.tensor([prompt]), use_cache=True)
        tokens = []
        for _ in range(steps):
            nxt = int(out.logits[0, -1].argmax())
            tokens.append(nxt)
            if nxt == eos:
                break
            out = model(torch.tensor([[nxt]]), **cache_kwarg(cache_of(out)), use_cache=True)
    return tokens
