"""``sdtp bench kvpress``: our-environment side (inputs, ratio, outputs, report) and the runner's arithmetic.

The kvpress environment itself is not part of CI; the one test that runs the real runner is skipped
when ``.venv-kvpress`` has not been built.
"""

from __future__ import annotations

import ast
import json
import math
import subprocess

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from conftest import random_ids, tiny_llama
from sdtp_adapter.bench.meta import write_results
from sdtp_adapter.bench.peers import kvpress as section
from sdtp_adapter.bench.peers import kvpress_runner as runner
from sdtp_adapter.compat import cache_kwarg, cache_of
from sdtp_adapter.zoo import SHIPPED_ADAPTERS
from sdtp_adapter.config import SDTPConfig
from sdtp_adapter.schedule import StageSchedule


# ---------------------------------------------------------------- compression ratio from a schedule
def test_kv_reduction_of_a_small_schedule_exact():
    schedule = StageSchedule(layers=(1, 3), keep_ratio=0.5, protected_first=1, local_window_ratio=0.1)
    # 20 tokens: layer 0 sees 20, stage 1 keeps ceil(20 * 0.5) = 10 (layers 1-2), stage 2 keeps 5 (layer 3)
    assert section.sdtp_kv_reduction(schedule, 20, 4) == pytest.approx(1 - (20 + 10 + 10 + 5) / 80)


def test_kv_reduction_of_the_shipped_schedule_matches_a_naive_count():
    config = SDTPConfig.from_pretrained(SHIPPED_ADAPTERS / "smollm2-135m-instruct")
    prefix, num_layers = 2048, 30
    floor = config.protected_first + math.ceil(config.local_window_ratio * prefix)
    kept, current = [], prefix
    stages = config.resolve_layers(num_layers)
    for layer in range(num_layers):
        if layer in stages:
            target = math.ceil(prefix * config.keep_ratio ** (stages.index(layer) + 1) - 1e-9)
            current = min(current, max(floor, target))
        kept.append(current)
    got = section.sdtp_kv_reduction(config.schedule(num_layers), prefix, num_layers)
    assert 0 < sum(kept) < prefix * num_layers  # the shipped adapter prunes
    assert got == pytest.approx(1 - sum(kept) / (prefix * num_layers))


def test_kv_reduction_rejects_empty_prefix():
    schedule = StageSchedule(layers=(1,), keep_ratio=0.5, protected_first=1, local_window_ratio=0.1)
    with pytest.raises(ValueError, match="prefix=0"):
        section.sdtp_kv_reduction(schedule, 0, 4)


# ---------------------------------------------------------------- runner input
def test_build_input_is_plain_json_with_every_runner_key(tmp_path):
    windows = [torch.arange(10)[None], torch.arange(10, 20)[None]]
    spec = section.build_input(tmp_path / "model", windows, 6, 0.4, ["KnormPress"], 4, 2, parity_file=tmp_path / "p.pt")
    assert json.loads(json.dumps(spec)) == spec
    assert spec["windows"] == [list(range(10)), list(range(10, 20))]
    assert (spec["prefix"], spec["compression_ratio"], spec["presses"]) == (6, 0.4, ["KnormPress"])
    assert (spec["decode_tokens"], spec["repeats"]) == (4, 2)
    assert spec["parity"] == {"file": str(tmp_path / "p.pt"), "tolerance": section.PARITY_TOLERANCE}
    runner.validate_input(spec)  # what we write is what the runner accepts


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"compression_ratio": 1.0}, "compression_ratio=1.0"),
        ({"presses": []}, "presses=\\[\\]"),
        ({"windows": [torch.arange(10)[None], torch.arange(9)[None]]}, "window lengths \\[9, 10\\]"),
        ({"prefix": 9}, "prefix \\+ 2 = 11"),
    ],
)
def test_build_input_rejects_bad_arguments(kwargs, message, tmp_path):
    args = {"model_dir": tmp_path, "windows": [torch.arange(10)[None]], "prefix": 6, "compression_ratio": 0.4,
            "presses": ["KnormPress"], "decode_tokens": 4, "repeats": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        section.build_input(**args)


def test_runner_rejects_incomplete_input():
    with pytest.raises(ValueError, match="lacks \\['repeats'\\]"):
        runner.validate_input({k: 1 for k in runner.INPUT_KEYS if k != "repeats"})


# ---------------------------------------------------------------- the kvpress environment
def test_missing_env_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make kvpress-env"):
        section.ensure_env(tmp_path / "absent", create=False)
    half_built = tmp_path / "half"
    (half_built / "bin").mkdir(parents=True)  # a venv whose installs never finished has no marker
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        section.ensure_env(half_built, create=False)


def test_finished_env_is_used_as_is(tmp_path):
    (tmp_path / section.INSTALLED_MARKER).write_text("done\n")
    assert section.ensure_env(tmp_path, create=False) == tmp_path / "bin" / "python"


def test_env_commands_always_pin_torch_and_kvpress(tmp_path):
    commands = section.env_commands(tmp_path / "env", python="python3")
    assert commands[0] == ["python3", "-m", "venv", "--clear", str(tmp_path / "env")]
    installs = [c for c in commands if "install" in c]
    assert installs and all(section.TORCH_REQUIREMENT in c for c in installs)  # never an unpinned torch
    assert any("kvpress==0.5.5" in c for c in installs)
    assert all(c[0] == str(tmp_path / "env" / "bin" / "python") for c in installs)


# ---------------------------------------------------------------- runner arithmetic against a naive loop
def naive_fidelity(pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict:
    base = nll = kl = 0.0
    agree = count = 0
    for ref, got, targets in pairs:
        for i in range(targets.shape[0]):
            t = int(targets[i])
            base -= float(ref[i, t])
            nll -= float(got[i, t])
            agree += int(int(ref[i].argmax()) == int(got[i].argmax()))
            kl += sum(math.exp(float(ref[i, v])) * float(ref[i, v] - got[i, v]) for v in range(ref.shape[1]))
            count += 1
    return {"base_nll": base / count, "nll": nll / count, "delta_nll_pct": 100 * (nll - base) / base,
            "top1": agree / count, "kl": kl / count}


def test_fidelity_arithmetic_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(3):
        ref = F.log_softmax(torch.randn(7, 11, generator=g, dtype=torch.float64), dim=-1)
        got = F.log_softmax(ref + 0.7 * torch.randn(7, 11, generator=g, dtype=torch.float64), dim=-1)
        pairs.append((ref, got, torch.randint(0, 11, (7,), generator=g)))
    got = runner.summarize([runner.fidelity_sums(*p) for p in pairs], 7)
    want = naive_fidelity(pairs)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    assert (got["windows"], got["tokens"]) == (3, 7)
    assert 0 < got["top1"] < 1 and got["kl"] > 0  # the perturbation is visible, so the test can fail


def test_fidelity_sums_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        runner.fidelity_sums(torch.zeros(3, 5), torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------- runner model passes (no kvpress needed)
def test_unpressed_continuation_equals_one_full_forward():
    model = tiny_llama()
    window = random_ids(40)
    with torch.inference_mode():
        got = runner.continuation_logprobs(model, window, 30, None)
        full = F.log_softmax(model(window).logits[0, 29:-1].float(), dim=-1)
    assert got.shape == (10, 128)
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)


def test_kv_bytes_counts_every_layer():
    model = tiny_llama(layers=3)
    cache = DynamicCache()
    with torch.inference_mode():
        model(random_ids(12), **cache_kwarg(cache), use_cache=True)
    # 3 layers x (keys + values) x 2 kv heads x 12 tokens x head_dim 16 x 4 bytes
    assert runner.kv_bytes(cache) == 3 * 2 * 2 * 12 * 16 * 4


def test_kv_bytes_copy_agrees_with_the_library_on_a_pruned_cache():
    from sdtp_adapter import get_sdtp_model
    from sdtp_adapter.pruning.cache import kv_bytes

    model = get_sdtp_model(tiny_llama(), SDTPConfig(prune_layers=[2, 4], keep_ratio=0.5))
    with torch.inference_mode():
        cache = cache_of(model(random_ids(40), use_cache=True))  # layers hold 40, 20 and 10 tokens
    assert len({layer.keys.shape[-2] for layer in cache.layers}) == 3
    assert runner.kv_bytes(cache) == kv_bytes(cache)


def test_runner_never_imports_sdtp_adapter():
    tree = ast.parse(section.RUNNER.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not [n for n in names if n.startswith("sdtp_adapter")]
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]  # no relative imports


# ---------------------------------------------------------------- outputs and report
def synthetic_output() -> dict:
    def row(press, kv, tok_s, dnll):
        return {"press": press, "kv_bytes": kv, "prefill_s": 4.0, "prefill_s_range": [3.9, 4.2], "decode_tok_s": tok_s,
                "decode_tok_s_range": [tok_s - 1, tok_s + 1], "base_nll": 3.0, "nll": 3.0 * (1 + dnll / 100),
                "delta_nll_pct": dnll, "top1": 0.9, "kl": 0.05, "windows": 2, "tokens": 128}

    return {
        "versions": {"kvpress": "0.5.5", "transformers": "5.2.0", "torch": "2.13.0+cpu", "python": "3.11.7"},
        "torch_threads": 2,
        "compression_ratio": 0.25,
        "prefix": 512,
        "parity_max_abs_logit_diff": 0.0,
        "failed": {"SnapKVPress": "AssertionError: too short"},
        "rows": {"unpruned": row(None, 4 * 2**20, 20.0, 0.0), "KnormPress": row("KnormPress", 3 * 2**20, 25.0, 4.5)},
    }


def test_results_add_sizes_relative_to_the_unpruned_cache():
    results = section.results_from_output(synthetic_output(), 128, "--compression-ratio")
    knorm = results["rows"]["KnormPress"]
    assert (knorm["kv_mib"], knorm["kv_share"], knorm["decode_speedup"]) == (3.0, 0.75, 1.25)
    assert results["rows"]["unpruned"]["kv_share"] == 1.0
    assert (results["windows"], results["continuation"], results["prefix"]) == (2, 128, 512)
    assert results["env"]["kvpress"] == "0.5.5" and results["env"]["torch_threads"] == 2


def test_results_need_the_baseline_row():
    output = synthetic_output()
    del output["rows"]["unpruned"]
    with pytest.raises(ValueError, match="lack the 'unpruned' baseline"):
        section.results_from_output(output, 128, "x")


def test_render_plot_and_load_results(tmp_path):
    results = section.results_from_output(synthetic_output(), 128, "--compression-ratio")
    assert section.load_results(tmp_path) is None
    write_results(section.SECTION, {"date": "d"}, results, directory=tmp_path)
    assert section.load_results(tmp_path)["rows"]["KnormPress"]["kv_share"] == 0.75
    lines = section.render({"results": results})
    text = "\n".join(lines)
    assert "| KnormPress | 3.0 | 0.75 | 4.00 [3.90-4.20] | 25.0 [24.0-26.0] | +4.50% | 0.900 | 0.050 |" in lines
    assert "| SnapKVPress | failed: AssertionError: too short |" in text
    assert "25.0% of the prefix's KV pairs" in text and "kvpress 0.5.5" in text and "transformers 5.2.0" in text
    assert "not prefill compute" in text
    path = section.plot(results, tmp_path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_mode & 0o044 == 0o044


# ---------------------------------------------------------------- the real runner, when its environment exists
@pytest.mark.peers
@pytest.mark.skipif(not (section.DEFAULT_ENV / section.INSTALLED_MARKER).is_file(), reason="make kvpress-env not run")
def test_runner_in_the_kvpress_env_on_a_tiny_model(tmp_path):
    model = tiny_llama(layers=2)
    with torch.no_grad():  # peaky attention, so that a wrong RoPE position changes the outputs visibly
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(6)
            layer.self_attn.k_proj.weight.mul_(6)
    model.save_pretrained(tmp_path / "model")
    windows = [random_ids(40, seed=s) for s in (1, 2)]
    section.write_parity_reference(model, windows[0][:, :16], tmp_path / "parity.pt")
    spec = section.build_input(tmp_path / "model", windows, 32, 0.5, ["KnormPress", "StreamingLLMPress"], 2, 1,
                               parity_file=tmp_path / "parity.pt")
    (tmp_path / "in.json").write_text(json.dumps(spec))
    python = section.ensure_env(create=False)
    subprocess.run([str(python), "-I", str(section.RUNNER), str(tmp_path / "in.json"), str(tmp_path / "out.json")],
                   check=True, timeout=120)
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["parity_max_abs_logit_diff"] < section.PARITY_TOLERANCE
    base, knorm, streaming = (out["rows"][n] for n in ("unpruned", "KnormPress", "StreamingLLMPress"))
    assert knorm["kv_bytes"] * 2 == base["kv_bytes"]  # half of the 32 prefix tokens kept in every layer
    assert (base["delta_nll_pct"], base["top1"], base["kl"]) == (0.0, 1.0, 0.0)
    assert knorm["kl"] > 0 and out["failed"] == {}

    # Reference in our environment. StreamingLLM at ratio 0.5 keeps prefix positions 0-3 (sinks) and
    # 20-31 in every head; the prefix itself is prefilled unmasked (kvpress compresses after each layer's
    # attention), so one full forward in which only the continuation queries cannot see positions 4-19 is
    # the same computation, true RoPE positions included.
    mask = torch.ones(40, 40, dtype=torch.bool).tril()
    mask[32:, 4:20] = False
    sums = []
    with torch.inference_mode():
        for w in windows:
            ref = F.log_softmax(model(w).logits[0, 31:-1], dim=-1)
            got = F.log_softmax(model(w, attention_mask=mask[None, None]).logits[0, 31:-1], dim=-1)
            sums.append(runner.fidelity_sums(ref, got, w[0, 32:]))
    want = runner.summarize(sums, 8)
    assert base["base_nll"] == pytest.approx(want["base_nll"], rel=1e-5)
    assert streaming["nll"] == pytest.approx(want["nll"], rel=1e-5)
    assert streaming["kl"] == pytest.approx(want["kl"], rel=1e-3)
    assert streaming["top1"] == want["top1"] and want["kl"] > 1e-3
