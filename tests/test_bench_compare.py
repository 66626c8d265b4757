"""The comparison table: budget arithmetic, the targets verdict and the rendered table."""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import tiny_llama
from own_model import char_tokenizer, save_own_model

from sdtp_adapter import SDTPConfig, cli, get_sdtp_model
from sdtp_adapter.bench import common, compare
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


# ---------------------------------------------------------------------------------------------- own model and text
@pytest.fixture(scope="module")
def own_model(tmp_path_factory):
    return save_own_model(tmp_path_factory.mktemp("own"))


def compare_argv(own_model, *extra: str) -> list[str]:
    return ["bench", "compare", "--model", str(own_model / "tiny-llama"), "--adapter", str(own_model / "adapter"),
            "--no-kvpress", "--no-llmlingua", "--windows", "2", "--prefix", "32", "--continuation", "8", *extra]


def test_compare_on_own_model_and_text_writes_to_out(own_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli.main(compare_argv(own_model, "--text-file", str(own_model / "prose.txt"), "--lengths", "64",
                          "--tasks", "passkey", "--depths", "0.5", "--out", "runs/mine"))
    res = json.loads((tmp_path / "runs" / "mine" / "compare-tiny-llama.json").read_text())["results"]
    assert res["model"] == "tiny-llama" and res["model_source"] == str(own_model / "tiny-llama")
    assert res["text"] == f"--text-file {own_model / 'prose.txt'}" and res["tasks"]["tasks"] == ["passkey"]
    assert compare.TRAINED in [r["method"] for r in res["rows"]]
    page = (tmp_path / "runs" / "mine.md").read_text()
    assert f"2 windows of --text-file {own_model / 'prose.txt'} (also the long-context tasks' filler)" in page
    assert "(mine/compare-quality-speed.png)" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing in ./sdtp-bench


@pytest.mark.parametrize("extra, needed", [
    (["--no-tasks"], "length=40 tokens needs at least 41 tokens"),  # a window: prefix 32 + continuation 8, + 1
    (["--prefix", "16", "--lengths", "128"], "length=128 tokens needs at least 128 tokens"),  # a task prompt
])
def test_compare_refuses_a_text_shorter_than_a_length(own_model, tmp_path, monkeypatch, extra, needed):
    (tmp_path / "short.txt").write_text("forty characters of text, then it stops.")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"{needed} of text, but --text-file short.txt has only 40 tokens"):
        cli.main(["--debug", *compare_argv(own_model, "--text-file", "short.txt", *extra)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.txt"]


def test_text_file_and_dataset_are_alternatives_and_kvpress_needs_the_plays(tmp_path):
    args = argparse.Namespace(text_file="a.txt", dataset="b.jsonl")
    with pytest.raises(ValueError, match="--text-file 'a.txt' and --dataset 'b.jsonl' are alternatives"):
        common.read_user_text(args)
    (tmp_path / "a.txt").write_text("some prose")
    args = argparse.Namespace(model=DEFAULT_MODEL, no_kvpress=False, text_file=str(tmp_path / "a.txt"))
    with pytest.raises(ValueError, match="kvpress peer reads the held-out plays only; add --no-kvpress"):
        compare.user_text(args)


def test_dataset_rows_are_joined_into_one_text(tmp_path):
    rows = [{"body": "first row"}, {"body": ""}, {"body": "second row"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = argparse.Namespace(dataset=str(tmp_path / "rows.jsonl"), split="train", text_column="body")
    text = common.read_user_text(args)
    assert text.text == "first row\n\nsecond row" and text.source.startswith(f"--dataset {tmp_path / 'rows.jsonl'}")


def test_task_filler_is_the_users_text_in_short_lines():
    words = " ".join(f"w{i}" for i in range(40))
    [filler] = common.filler_texts(char_tokenizer(), 100, common.UserText("--text-file t", words + "\n" + words))
    assert [len(line.split()) for line in filler.splitlines()] == [16, 16, 8, 16, 16, 8]
    with pytest.raises(ValueError, match="length=1000 tokens needs at least 1000 tokens"):
        common.filler_texts(char_tokenizer(), 1000, common.UserText("--text-file t", words))
