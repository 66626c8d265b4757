"""bf16 and bitsandbytes NF4 bases: inference and adapter training."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.training.objective import sdtp_loss

CONFIG = dict(prune_layers=[2, 4, 6], keep_ratio=0.7)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tiny_llama().save_pretrained(path)
    return path


def nf4(path):
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=config, device_map="cpu").eval()


def dequantized_copy(quantized) -> torch.nn.Module:
    """An fp32 model holding exactly the NF4 model's dequantized weights."""
    import bitsandbytes.functional as F
    from bitsandbytes.nn import Linear4bit

    reference = tiny_llama()
    state = {}
    for name, module in quantized.named_modules():
        if isinstance(module, Linear4bit):
            state[name + ".weight"] = F.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    for name, tensor in quantized.state_dict().items():
        if name in reference.state_dict() and name not in state:
            state[name] = tensor.float()
    reference.load_state_dict(state)
    return reference.eval()


def adapter_grads(model, ids, target) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    sdtp_loss(model, ids, target).total.backward()
    return torch.cat([p.grad.flatten() for p in model.pruners.parameters()])


def test_nf4_adapter_gradients_match_fp32_with_dequantized_weights(saved_tiny):
    ids = random_ids(40)
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[:, 30:] = True
    quantized = get_sdtp_model(nf4(saved_tiny), SDTPConfig(**CONFIG))
    reference = get_sdtp_model(dequantized_copy(quantized.base_model), SDTPConfig(**CONFIG))
    reference.pruners.load_state_dict(quantized.pruners.state_dict())
    with torch.no_grad():  # the eval forward that makes bitsandbytes repack its CPU weights
        quantized(ids)
        torch.testing.assert_close(quantized(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "backprop through it ... silently" must not happen
        got = adapter_grads(quantized, ids, target)
    ref = adapter_grads(reference, ids, target)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in quantized.base_model.parameters() if p.dtype.is_floating_point)


def test_a_base_repacked_before_attaching_is_detected_and_made_trainable(saved_tiny):
    from bitsandbytes.nn import Linear4bit

    base = nf4(saved_tiny)
    ids = random_ids(40)
    with torch.no_grad():
        base(ids)  # plain base model, no SDTP yet: bitsandbytes may repack here
    packed = [m for m in base.modules() if isinstance(m, Linear4bit) and getattr(m.weight.quant_state, "packing_format_for_cpu", False)]
    if not packed:
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes does not repack")
    model = get_sdtp_model(base, SDTPConfig(**CONFIG))
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[:, 30:] = True
    with pytest.warns(UserWarning, match="repacked for CPU inference"):
        grads = adapter_grads(model, ids, target)
    assert float(grads.abs().sum()) > 0
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in packed)


def test_nf4_pruned_generate_runs_and_adapter_stays_fp32(saved_tiny):
    model = get_sdtp_model(nf4(saved_tiny), SDTPConfig(**CONFIG))
    assert all(p.dtype == torch.float32 for p in model.pruners.parameters())
    ids = random_ids(50)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 56) and model.last_pruning.kept_counts(8) == model.schedule.tokens_per_layer(50, 8)


def test_bf16_base_inference_and_training():
    base = tiny_llama().to(torch.bfloat16)
    ids = random_ids(50)
    with torch.no_grad():
        ref = base(ids).logits
    model = get_sdtp_model(base, SDTPConfig(prune_layers=[1, 3, 6], keep_ratio=1.0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref)  # keep-all is exact in bf16 too
    model = get_sdtp_model(tiny_llama().to(torch.bfloat16), SDTPConfig(**CONFIG))
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[:, 40:] = True
    sdtp_loss(model, ids, target).total.backward()
    assert all(p.dtype == torch.float32 and float(p.grad.abs().sum()) > 0 for p in model.pruners.parameters() if p.dim() > 1)
