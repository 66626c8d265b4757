"""The GPU speed preset (recipes/gpu_bench.sh) run end to end on CPU with a tiny shape, and its real shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from sdtp_adapter import SDTPConfig
from sdtp_adapter.architectures import model_dims
from sdtp_adapter.bench import gpu_report, shapes, speed_inputs
from sdtp_adapter.bench.flops import flops_speedup_bound

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["smollm2-135m-instruct", "llama3.2-1b", "llama3.1-8b"]  # the preset's shapes, in its order
COLUMNS = "| tokens | base ms | SDTP ms | speedup | FLOPs bound | decode tok/s base / SDTP | KV MiB base / SDTP |"
# 16 layers: the default SDTPConfig() puts its 10 stages at layers 4-13
TINY = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 16, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 256,
    "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "high_freq_factor": 4.0,
                        "low_freq_factor": 1.0, "original_max_position_embeddings": 64},
}


# ---------------------------------------------------------------------------------------------- end to end
def test_preset_script_runs_end_to_end_on_cpu(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "out"
    env = {
        **os.environ,
        "SDTP_GPU_BENCH_DEVICE": "cpu", "SDTP_GPU_BENCH_DTYPE": "float32", "SDTP_GPU_BENCH_LENGTHS": "32 64",
        "SDTP_GPU_BENCH_REPEATS": "1", "SDTP_GPU_BENCH_WARMUP": "0", "SDTP_GPU_BENCH_DECODE_TOKENS": "1",
        "SDTP_GPU_BENCH_EXTRA": "",  # the preset skips the FLOPs check by default (CUDA GQA); on CPU it runs
        "SDTP_GPU_BENCH_SHAPE_CONFIG": str(config), "PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",  # 2 shared cores: spinning OpenMP threads make tiny forwards 100x slower
    }
    proc = subprocess.run(["bash", "recipes/gpu_bench.sh", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for model in MODELS:
        res = json.loads((out / f"speed-{model}.json").read_text())["results"]
        assert [r["tokens"] for r in res["rows"]] == [32, 64]
        assert res["adapter"].startswith("fresh") and "random weights" in res["weights"]
        assert res["stages"] == list(range(4, 14)) and res["flops_check"]["tokens"] == 32
        assert all(r["flops"]["bound"] > 1 for r in res["rows"])
    md = (out / "gpu-speed.md").read_text()
    assert md.startswith("## Speed on GPU: random-init shapes") and "bash recipes/gpu_bench.sh" in md
    assert md.count(COLUMNS) == 3
    for model in MODELS:
        table = md.split(f"### {model}\n", 1)[1].split("###", 1)[0]
        assert [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ") and "tokens" not in line] == ["| 32", "| 64"]
    summary = json.loads((out / "gpu-speed.json").read_text())
    assert summary["missing"] == [] and list(summary["shapes"]) == MODELS
    assert {t["status"] for t in summary["shapes"]["llama3.1-8b"]["targets"][:3]} == {"not measured"}  # no 1K+ lengths


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "name, sizes, params",
    [
        ("llama3.2-1b", dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                             head_dim=64, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True), 1.236e9),
        ("llama3.1-8b", dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                             head_dim=128, intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False), 8.030e9),
    ],
)
def test_llama_shape_configs_have_documented_sizes(name, sizes, params):
    config = AutoConfig.from_pretrained(shapes.CONFIG_DIR / shapes.SHAPES[name].config_file)
    assert config.model_type == "llama" and config.max_position_embeddings == 131072
    for key, value in sizes.items():
        assert getattr(config, key) == value, key
    rope = config.rope_parameters
    assert rope["rope_type"] == "llama3" and rope["rope_theta"] == 500000.0
    assert shapes.SHAPES[name].lengths == (1024, 2048, 4096, 8192, 16384, 32768) and shapes.SHAPES[name].adapter is None
    model = shapes.random_model(config, "meta", torch.bfloat16)  # the on-device build path, nothing allocated
    assert {p.device.type for p in model.parameters()} == {"meta"} and {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=1e-3)


def test_flops_bound_of_the_8b_shape():
    config = shapes.shape_config("llama3.1-8b")
    model = shapes.random_model(config, "meta", torch.bfloat16)
    dims, sdtp_config = model_dims(model), SDTPConfig()
    schedule = sdtp_config.schedule(dims.num_layers)
    assert schedule.layers == tuple(range(4, 23, 2))
    bounds = {n: flops_speedup_bound(dims, schedule, n, sdtp_config.pruner_hidden_size) for n in (4096, 32768)}
    print(f"llama3.1-8b FLOPs bound with SDTPConfig(): {bounds[4096]:.3f}x at 4K, {bounds[32768]:.3f}x at 32K")
    assert 1.5 < bounds[4096] < bounds[32768] < 3.0  # attention's share, and so pruning's gain, grows with length


def test_table_defaults_and_errors():
    assert shapes.SHAPES["smollm2-135m-instruct"].lengths == (1024, 2048, 4096, 8192)
    assert shapes.SHAPES["smollm2-135m-instruct"].adapter is not None  # shipped adapter kept for packaged models
    with pytest.raises(ValueError, match=r"model='llama-70b'.*allowed: \["):
        shapes.get_shape("llama-70b")
    with pytest.raises(ValueError, match="model='llama3.1-8b' has no packaged weights; add --random-init"):
        speed_inputs.load_inputs("llama3.1-8b", None, torch.bfloat16, "cpu", random_init=False, max_length=64)
    with pytest.raises(ValueError, match="--shape-config x.json needs --random-init"):
        speed_inputs.load_inputs("llama3.1-8b", None, torch.bfloat16, "cpu", random_init=False, max_length=64, shape_config_file="x.json")


# ---------------------------------------------------------------------------------------------- targets
def _row(tokens: int, speedup: float, decode_base: float = 20.0, decode_sdtp: float = 20.0) -> dict:
    return {"tokens": tokens, "speedup": speedup,
            "decode_tok_s": {"base": {"median": decode_base}, "sdtp": {"median": decode_sdtp}}}


def test_targets_met_missed_and_not_measured():
    rows = [_row(1024, 1.1), _row(4096, 1.6), _row(8192, 1.7, 20.0, 18.0)]
    status = {t["target"]: t["status"] for t in gpu_report.check_targets("llama3.1-8b", rows)}
    assert status == {
        "speedup >= 1.0x from 1024 tokens": "met",
        "speedup >= 1.5x at 4096 tokens": "met",
        "speedup >= 1.8x at 32768 tokens": "not measured",
        "decode tok/s SDTP >= 0.95 x base at every length": "missed",  # 18/20 = 0.90 at 8K
    }
    smol = gpu_report.check_targets("smollm2-135m-instruct", [_row(1024, 0.8), _row(4096, 0.99)])
    assert smol[0]["status"] == "missed" and smol[0]["values"] == {4096: 0.99}  # 1K is outside the target


def test_report_keeps_the_preset_order_and_lists_missing_shapes(tmp_path):
    stats = {"median": 0.1, "min": 0.1, "max": 0.1}
    row = {**_row(4096, 1.2), "prefill_s": {"base": stats, "sdtp": stats}, "flops": {"bound": 1.9},
           "kv_mib": {"base": 10.0, "sdtp": 6.0}}
    row["decode_tok_s"] = {m: {**stats, "median": 20.0} for m in ("base", "sdtp")}
    res = {"model": "smollm2-135m-instruct", "upstream": "u", "dtype": "bfloat16", "attention": "sdpa", "weights": "random",
           "adapter": "shipped", "stages": [4], "keep_ratio": 0.9, "device": "cuda", "repeats": 3, "warmup": 1,
           "decode_tokens": 16, "rows": [row]}
    meta = {"machine": "NVIDIA H100 80GB HBM3 (GPU)", "date": "d", "versions": {"torch": "2.11"}, "command": "c"}
    (tmp_path / "speed-smollm2-135m-instruct-cuda.json").write_text(json.dumps({"meta": meta, "results": res}))
    md, js = gpu_report.write(tmp_path, ["llama3.1-8b", "smollm2-135m-instruct"], "bash recipes/gpu_bench.sh out")
    text = md.read_text()
    assert text.startswith("## Speed on GPU: random-init shapes (NVIDIA H100 80GB HBM3 (GPU))")
    assert text.index("### llama3.1-8b\n\nnot measured") < text.index("### smollm2-135m-instruct")
    assert "| 4096 | 100.0 [100.0-100.0] | 100.0 [100.0-100.0] | 1.20x | 1.90x | 20.0 / 20.0 | 10.0 / 6.0 |" in text
    assert json.loads(js.read_text())["missing"] == ["llama3.1-8b"]
