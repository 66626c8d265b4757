"""SDTP on top of a LoRA-tuned base: both adapters save and load separately and round-trip exactly."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from conftest import random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, SDTPModel, get_sdtp_model


def lora_model(seed: int = 0):
    model = get_peft_model(tiny_llama(seed=seed), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    return model.eval()


def test_sdtp_on_a_lora_base_round_trips(tmp_path):
    peft_model = lora_model()
    sdtp = get_sdtp_model(peft_model, SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.7))
    for p in sdtp.pruners.parameters():
        torch.nn.init.normal_(p)
    ids = random_ids(60)
    with torch.no_grad():
        ref = sdtp(ids).logits
        ref_tokens = sdtp.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    assert sdtp.last_pruning.kept_counts(8) == sdtp.schedule.tokens_per_layer(60, 8)
    peft_model.save_pretrained(tmp_path / "lora")
    sdtp.save_pretrained(tmp_path / "sdtp")
    assert sorted(p.name for p in (tmp_path / "sdtp").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]

    reloaded = SDTPModel.from_pretrained(PeftModel.from_pretrained(tiny_llama(seed=0), tmp_path / "lora").eval(), tmp_path / "sdtp")
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, ref)
        assert torch.equal(reloaded.generate(input_ids=ids, max_new_tokens=8, do_sample=False), ref_tokens)


def test_keep_all_on_a_lora_base_is_exact():
    peft_model = lora_model()
    ids = random_ids(40)
    with torch.no_grad():
        ref = peft_model(input_ids=ids).logits
    sdtp = get_sdtp_model(peft_model, SDTPConfig(prune_layers=[1, 3, 6], keep_ratio=1.0))
    with torch.no_grad():
        assert torch.equal(sdtp(input_ids=ids).logits, ref)
    assert all(not p.requires_grad for p in peft_model.parameters())
