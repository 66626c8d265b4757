"""The speed section: analytic FLOPs against FlopCounterMode, the peak-memory probe, greedy timing, rows, page."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from conftest import random_ids, tiny_llama
from own_model import char_tokenizer, save_own_model, snapshot

from sdtp_adapter import SDTPConfig, cli, get_sdtp_model
from sdtp_adapter.architectures import model_dims
from sdtp_adapter.bench import greedy_timing, speed, speed_inputs
from sdtp_adapter.bench.common import UserText, model_label, prose_ids, prose_windows
from sdtp_adapter.bench.meta import REPO_RESULTS_DIR
from sdtp_adapter.bench.flops import count_flops, flops_check, prefill_call
from sdtp_adapter.bench.flops import layer_flops, prefill_flops, pruned_prefill_flops
from sdtp_adapter.bench.memory import peak_memory

STAGES = dict(prune_layers=[2, 4, 6], keep_ratio=0.5, protected_first=2, local_window_ratio=0.05, pruner_hidden_size=32)


def tiny_sdtp(attn: str = "sdpa"):
    torch.manual_seed(0)
    return get_sdtp_model(tiny_llama(attn), SDTPConfig(**STAGES))


# ---------------------------------------------------------------------------------------------- FLOPs
def naive_layer_flops(dims, tokens: int, causal: bool) -> int:
    """Per-matrix sum: every linear layer as 2*m*n*k, attention query by query."""
    d, q, kv = dims.hidden_size, dims.num_attention_heads * dims.head_dim, dims.num_key_value_heads * dims.head_dim
    total = 2 * tokens * d * q * 2 + 2 * tokens * d * kv * 2  # q, o and k, v projections
    total += 3 * 2 * tokens * d * dims.intermediate_size  # gate, up, down
    for i in range(tokens):
        keys = i + 1 if causal else tokens
        total += 2 * 2 * keys * dims.head_dim * dims.num_attention_heads  # scores and weighted values
    return total


@pytest.mark.parametrize("attention", ["causal", "full"])
def test_layer_flops_match_naive_sum(attention):
    dims = model_dims(tiny_llama())
    for tokens in (1, 7, 64):
        assert layer_flops(dims, tokens, attention=attention) == naive_layer_flops(dims, tokens, attention == "causal")


def test_layer_flops_rejects_unknown_convention():
    with pytest.raises(ValueError, match="attention='flash'"):
        layer_flops(model_dims(tiny_llama()), 8, attention="flash")


def test_unpruned_prefill_flops_equal_flop_counter(attn):
    sdtp = tiny_sdtp(attn)
    ids = random_ids(64)
    dims = model_dims(sdtp.base_model)
    counted = count_flops(prefill_call(sdtp, ids, prune=False))
    assert counted == prefill_flops(dims, [64] * dims.num_layers, attention="full")
    # the counter ignores causality: the causal model is smaller by the masked half of the attention
    assert prefill_flops(dims, [64] * dims.num_layers, attention="causal") < counted


def test_pruned_prefill_flops_equal_flop_counter_with_pruning_modules(attn):
    sdtp = tiny_sdtp(attn)
    ids = random_ids(64)
    dims = model_dims(sdtp.base_model)
    counted = count_flops(prefill_call(sdtp, ids, prune=True))
    # the known schedule: 64 -> 32 -> 16 -> 8 tokens before layers 2, 4, 6
    assert sdtp.last_pruning.kept_counts(dims.num_layers) == [64, 64, 32, 32, 16, 16, 8, 8]
    analytic = pruned_prefill_flops(dims, sdtp.schedule, 64, pruner_hidden=32, attention="full")
    assert counted == analytic
    # the pruning modules are part of the count: without them the analytic sum falls short
    without_modules = prefill_flops(dims, [64, 64, 32, 32, 16, 16, 8, 8], attention="full")
    assert counted - without_modules == 2 * (64 + 32 + 16) * (64 * 32 + 32 * 2)


def test_flops_check_reports_zero_difference():
    check = flops_check(tiny_sdtp(), random_ids(48))
    assert check["tokens"] == 48
    for side in ("base", "sdtp"):
        assert check[side]["relative_difference"] == 0.0
        assert check[side]["analytic_causal"] < check[side]["analytic_full"]
    assert check["sdtp"]["counted"] < check["base"]["counted"]


# ---------------------------------------------------------------------------------------------- memory
def test_peak_memory_sees_an_allocation_freed_inside_the_call():
    def allocate():
        block = torch.ones(50_000_000)  # 200 MB, written so its pages are resident
        total = float(block.sum())
        del block
        return total

    result, peak = peak_memory(allocate)
    assert result == 50_000_000
    assert peak >= 150 * 2**20


def test_peak_memory_of_nothing_is_near_zero():
    _, peak = peak_memory(lambda: None)
    assert peak < 8 * 2**20


def test_peak_memory_rejects_other_devices():
    with pytest.raises(ValueError, match="device='meta'"):
        peak_memory(lambda: None, "meta")


# ---------------------------------------------------------------------------------------------- timing
@pytest.mark.parametrize("prune", [False, True])
def test_greedy_run_produces_generate_tokens(prune):
    sdtp = tiny_sdtp()
    ids = random_ids(40)
    with contextlib.nullcontext() if prune else sdtp.disable_pruning():
        times, tokens = greedy_timing.greedy_run(sdtp, ids, decode_tokens=5)
        with torch.inference_mode():
            reference = sdtp.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, 40:].tolist()
    assert tokens == reference
    assert 0 < times.prefill_s <= times.ttft_s and times.decode_s > 0


def _check_stats(stats: dict, count: int) -> None:
    assert len(stats["values"]) == count
    assert stats["min"] <= stats["median"] <= stats["max"]


def test_measure_length_row():
    sdtp = tiny_sdtp()
    dims = model_dims(sdtp.base_model)
    row = speed.measure_length(sdtp, random_ids(64), repeats=2, warmup=1, decode_tokens=3)
    assert row["tokens"] == 64
    for key in ("prefill_s", "ttft_s", "decode_tok_s"):
        for method in ("base", "sdtp"):
            _check_stats(row[key][method], 2)
    assert row["speedup"] == row["prefill_s"]["base"]["median"] / row["prefill_s"]["sdtp"]["median"]
    assert row["tokens_per_layer"] == sdtp.schedule.tokens_per_layer(64, dims.num_layers)
    assert row["last_layer_tokens"] == 8
    assert row["flops"]["bound"] == pytest.approx(row["flops"]["base"] / row["flops"]["sdtp"])
    # 8 layers x 64 tokens vs 64+64+32+32+16+16+8+8 token-layers, each 2 KV heads x 16 dims x (k, v) x fp32
    assert row["kv_mib"]["base"] * 2**20 == 8 * 64 * 2 * 16 * 2 * 4
    assert row["kv_mib"]["sdtp"] * 2**20 == 240 * 2 * 16 * 2 * 4
    assert row["peak_mib"]["base"] >= 0 and row["peak_mib"]["sdtp"] >= 0


def test_settings_validation_names_the_field():
    with pytest.raises(ValueError, match="repeats=0"):
        speed.SpeedSettings((64,), repeats=0)
    with pytest.raises(ValueError, match="decode_tokens=0"):
        speed.SpeedSettings((64,), decode_tokens=0)
    with pytest.raises(ValueError, match="lengths"):
        speed.SpeedSettings(())
    with pytest.raises(ValueError, match="device='meta'"):
        speed.SpeedSettings((64,), device="meta")


def test_section_names():
    assert speed.section_name("smollm2-135m-instruct", "cpu") == "speed-smollm2-135m-instruct"
    assert speed.section_name("gemma3-270m", "cuda:0") == "speed-gemma3-270m-cuda"


# ---------------------------------------------------------------------------------------------- end to end
def test_benchmark_writes_json_plots_and_renders(tmp_path):
    sdtp = tiny_sdtp()
    ids = random_ids(64)[0].tolist()
    settings = speed.SpeedSettings((32, 64), repeats=1, warmup=0, decode_tokens=2)
    description = {"model": "tiny", "upstream": "tiny llama", "adapter": "fresh", "dtype": "float32",
                   "attention": "sdpa", "weights": "random weights", "input": "random tokens"}
    speed.benchmark(sdtp, ids, settings, "speed-tiny", {"command": "test"}, description, directory=tmp_path)
    data = json.loads((tmp_path / "speed-tiny.json").read_text())
    res = data["results"]
    assert [r["tokens"] for r in res["rows"]] == [32, 64]
    assert res["flops_check"]["tokens"] == 32 and res["flops_check"]["sdtp"]["relative_difference"] == 0.0
    assert res["plots"] == [f"speed-tiny-{k}.png" for k in ("prefill", "speedup", "memory", "decode")]
    for name in res["plots"]:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    lines = speed.render(data)
    # one row per length in the speed table and one in the component table
    assert sum(line.startswith("| 32 |") or line.startswith("| 64 |") for line in lines) == 4
    assert any(line.startswith("| tokens | profiled prefill ms | scoring") for line in lines)
    for row in res["rows"]:
        parts = row["components"]["components"]
        assert set(parts) == {"sdtp.score", "sdtp.select", "sdtp.gather", "sdtp.early_exit"}
        assert parts["sdtp.score"]["ms"] > 0 and 0 < row["components"]["module_share"] < 1


def test_benchmark_refuses_lengths_beyond_the_input(tmp_path):
    settings = speed.SpeedSettings((65,), repeats=1, warmup=0, decode_tokens=1)
    with pytest.raises(ValueError, match=r"lengths \[65\]"):
        speed.benchmark(tiny_sdtp(), list(range(3, 67))[:64], settings, "x", {}, {}, directory=tmp_path)


def _stats(median: float, low: float, high: float) -> dict:
    return {"median": median, "min": low, "max": high, "values": [low, median, high]}


def test_render_table_from_synthetic_results():
    row = {
        "tokens": 1024,
        "prefill_s": {"base": _stats(1.7, 1.6, 1.8), "sdtp": _stats(1.0, 0.9, 1.1)},
        "ttft_s": {"base": _stats(1.7005, 1.6, 1.8), "sdtp": _stats(1.0005, 0.9, 1.1)},
        "decode_tok_s": {"base": _stats(30.0, 29.0, 31.0), "sdtp": _stats(35.5, 34.0, 36.0)},
        "speedup": 1.7,
        "flops": {"base": 3e11, "sdtp": 1.7e11, "bound": 1.75},
        "peak_mib": {"base": 120.4, "sdtp": 90.6},
        "kv_mib": {"base": 45.0, "sdtp": 26.7},
        "tokens_per_layer": [1024] * 4 + [358],
        "last_layer_tokens": 358,
    }
    check = {
        "tokens": 1024,
        "base": {"counted": 3.2e11, "analytic_full": 3.2e11, "analytic_causal": 3e11, "relative_difference": 0.0},
        "sdtp": {"counted": 1.8e11, "analytic_full": 1.8e11, "analytic_causal": 1.7e11, "relative_difference": 0.0},
    }
    data = {"meta": {}, "results": {
        "model": "smollm2-135m-instruct", "upstream": "SmolLM2", "adapter": "shipped", "dtype": "float32",
        "attention": "sdpa", "weights": "real weights", "input": "held-out text", "device": "cpu", "stages": [4, 6],
        "keep_ratio": 0.9, "repeats": 3, "warmup": 1, "decode_tokens": 32, "memory": "peak RSS",
        "flops_check": check, "rows": [row], "plots": ["speed-smollm2-135m-instruct-prefill.png"],
    }}
    lines = speed.render(data)
    assert lines[0] == "## Speed: smollm2-135m-instruct"
    assert (
        "| 1024 | 1700.0 [1600.0-1800.0] | 1000.0 [900.0-1100.0] | 1.70x | 1.75x | 1700.5 / 1000.5 | 30.0 / 35.5 "
        "| 120 / 91 | 45.0 / 26.7 | 358 |"
    ) in lines
    assert any(line.startswith("FLOPs check at 1024 tokens") and "+0.0000%" in line for line in lines)
    assert lines[-1] == "![speed-smollm2-135m-instruct-prefill.png](benchmarks/speed-smollm2-135m-instruct-prefill.png)"


# ---------------------------------------------------------------------------------------------- own model and text
@pytest.fixture(scope="module")
def own_model(tmp_path_factory):
    return save_own_model(tmp_path_factory.mktemp("own"))


def test_speed_on_own_model_and_text_writes_under_the_working_directory(own_model, tmp_path, monkeypatch):
    repo_before = snapshot(REPO_RESULTS_DIR)
    monkeypatch.chdir(tmp_path)
    cli.main(["bench", "speed", "--model", str(own_model / "tiny-llama"), "--adapter", str(own_model / "adapter"),
              "--text-file", str(own_model / "prose.txt"), "--lengths", "32", "48", "--repeats", "1", "--warmup", "0",
              "--decode-tokens", "1", "--no-flops-check"])
    res = json.loads((tmp_path / "sdtp-bench" / "speed-tiny-llama.json").read_text())["results"]
    assert res["model"] == "tiny-llama" and res["upstream"] == str((own_model / "tiny-llama").resolve())
    assert res["input"] == f"--text-file {own_model / 'prose.txt'}, from its start"
    assert [r["tokens"] for r in res["rows"]] == [32, 48] and res["stages"] == [2, 4, 6]
    for name in res["plots"]:
        assert (tmp_path / "sdtp-bench" / name).read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "sdtp-bench.md").read_text()
    assert "## Speed: tiny-llama" in page and "(sdtp-bench/speed-tiny-llama-prefill.png)" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sdtp-bench", "sdtp-bench.md"]
    assert snapshot(REPO_RESULTS_DIR) == repo_before  # the repository's page and results are untouched


def test_speed_refuses_a_text_shorter_than_a_length(own_model, tmp_path, monkeypatch):
    (tmp_path / "short.txt").write_text("twenty characters..\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"length=64 tokens .* --text-file short.txt has only 20 tokens"):
        cli.main(["--debug", "bench", "speed", "--model", str(own_model / "tiny-llama"), "--adapter",
                  str(own_model / "adapter"), "--text-file", "short.txt", "--lengths", "16", "64"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.txt"]  # refused before writing anything


def test_prompts_are_the_users_text_from_its_start():
    text = UserText("--text-file notes.txt", "hello world, this is my text")
    tokenizer = char_tokenizer()
    assert prose_ids(tokenizer, 11, text).tolist() == [tokenizer("hello world")["input_ids"]]
    windows = prose_windows(tokenizer, 3, 5, text, seed=0)
    assert all(w.shape == (1, 5) and tokenizer.decode(w[0]) in text.text for w in windows)
    with pytest.raises(ValueError, match="length=28 tokens needs at least 29 tokens of text, but --text-file notes.txt has only 28"):
        prose_windows(tokenizer, 1, 28, text)


def test_speed_random_init_refuses_the_users_text():
    with pytest.raises(ValueError, match="--random-init feeds random tokens"):
        speed_inputs.load_inputs("llama3.2-1b", None, torch.float32, "cpu", True, 64, text=UserText("--text-file x", "abc"))


@pytest.mark.parametrize("model, label", [
    ("smollm2-135m-instruct", "smollm2-135m-instruct"),
    ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct"),
    ("~/models/My Llama/", "My-Llama"),
    ("./runs/../ckpt:7", "ckpt-7"),
])
def test_model_labels_are_safe_file_names(model, label):
    assert model_label(model) == label
