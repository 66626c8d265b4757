"""The comparison table: budget arithmetic, the targets verdict and the rendered table."""

from __future__ import annotations

from conftest import tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.bench import compare
from sdtp_adapter.zoo import DEFAULT_MODEL


def row(name: str, kind: str, dnll: float, kl: float, top1: float = 0.9, tasks: float | None = None) -> dict:
    r = dict(method=name, kind=kind, kept_share=0.6, prefill_speedup=1.5, delta_nll_pct=dnll, top1=top1, kl=kl, kv_mib=10.0)
    if tasks is not None:
        r["tasks"] = {"overall": tasks, "per_task": {"passkey": tasks}}
    return r


def test_kept_share_is_the_mean_share_of_tokens_per_layer():
    model = get_sdtp_model(tiny_llama(), SDTPConfig(prune_layers=[2, 5], keep_ratio=0.5, protected_first=2, local_window_ratio=0.1))
    counts = [100, 100, 50, 50, 50, 25, 25, 25]
    assert compare.kept_share(model, 100) == sum(counts) / 800


def test_verdict_checks_every_target_against_baselines_and_llmlingua_only():
    rows = [
        row("base (unpruned)", "base", 0.0, 0.0, 1.0, 1.0),
        row(compare.TRAINED, "pruning", 1.5, 0.05, 0.96, 0.8),
        row("SDTP-low (5 stages)", "pruning", 0.5, 0.01, 0.98, 0.9),  # a variant of SDTP, not a rival
        row("recency", "pruning", 1.0, 0.06, 0.9, 0.2),
        row("LLMLingua", "compressor", 7.0, 0.5, 0.6, 0.1),
        row("kvpress SnapKVPress", "kv-cache press", 0.1, 0.001),  # other budget: informative only
    ]
    v = compare.verdict(rows)
    assert v["dnll_within_target"] and v["top1_within_target"]
    assert v["beats_on_dnll"] == {"recency": False, "LLMLingua": True}
    assert v["beats_on_kl"] == {"recency": True, "LLMLingua": True}
    assert v["beats_on_tasks"] == {"recency": True, "LLMLingua": True}
    rows[1]["delta_nll_pct"], rows[1]["top1"] = 2.5, 0.9
    v = compare.verdict(rows)
    assert not v["dnll_within_target"] and not v["top1_within_target"]


def test_render_has_one_row_per_method_with_task_columns_and_the_verdict():
    rows = [row(compare.TRAINED, "pruning", 1.5, 0.05, 0.96, 0.8), row("recency", "pruning", 1.0, 0.06, 0.9, 0.2)]
    rows[0]["compression"] = None
    data = {"results": dict(model=DEFAULT_MODEL, prefix=2048, continuation=128, windows=12, base_nll=3.1, sdtp_kept_share=0.59,
                            rows=rows, verdict=compare.verdict(rows)), "meta": {}}
    lines = compare.render(data)
    table = [line for line in lines if line.startswith("| ") and "prefill token share" not in line]
    assert len(table) == 2 and table[0].startswith(f"| **{compare.TRAINED}**") and "passkey" in "".join(lines)
    text = "\n".join(lines)
    assert "better dNLL than every baseline and LLMLingua: not met (not better than recency)" in text
    assert "better KL than every baseline and LLMLingua: met" in text
    assert "LLMLingua compresses" not in text and "kvpress presses" not in text  # no such rows
    data["results"]["model"] = "gemma3-270m"  # the targets are set for SmolLM2 only
    assert "Targets" not in "\n".join(compare.render(data))
