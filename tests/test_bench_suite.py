"""``sdtp bench suite`` on a tiny random model: generations equal a naive greedy loop, summaries are scored
against the unpruned model's, the section writes JSON and a page with intervals and verdicts, and the
lm-eval task scores what a naive log-likelihood comparison gives. Held-out documents are made up."""

from __future__ import annotations

import argparse
import io
import json

import pytest
import torch
from conftest import CharTokenizer, naive_greedy, tiny_llama
from own_model import char_tokenizer, save_own_model

from sdtp_adapter import SDTPConfig, cli, get_sdtp_model
from sdtp_adapter.bench import suite, suite_lm_eval
from sdtp_adapter.bench.suite_metrics import is_correct, is_degenerate, rouge_l_f1
from sdtp_adapter.data import eval_filler as F
from sdtp_adapter.data import eval_tasks as E
from sdtp_adapter.data import genres as genre_registry
from sdtp_adapter.pruning.scorers import recency_scorer


def prose(word: str, lines: int = 400) -> str:
    body = [f"{word} {i}: the keeper noted wind and rain" for i in range(lines)]
    return "\n\n".join("\n".join(body[i : i + 3]) for i in range(0, lines, 3))


DOCS = {"technical": {"ref.rst": prose("ref")}, "novels": {"emma": prose("emma")}}


@pytest.fixture
def held_out(monkeypatch):
    """technical and novels of made-up held-out documents; nothing is fetched."""
    monkeypatch.setattr(genre_registry, "genre_texts", lambda genre, split="train": DOCS[genre] if split == "heldout" else {})
    monkeypatch.setattr(genre_registry, "available_genres", lambda: ["plays", "technical", "novels"])


def test_evaluate_matches_a_naive_loop_and_scores_summaries_against_the_base():
    tok = CharTokenizer()
    base = tiny_llama()
    base.generation_config.eos_token_id = 2
    model = get_sdtp_model(base, SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.6))
    pool = F.FillerPool(DOCS)
    samples = [E.build_sample(tok, pool, task, 500, 0, 1, seed=0) for task in ("retrieval", "summarization")]
    methods = suite.suite_methods(model, ["recency"])
    assert [m.name for m in methods] == [suite.BASE, suite.METHOD_IDS["recency"]]
    stream = io.StringIO()
    out = suite.evaluate(model, tok, samples, methods, summary_tokens=10, progress_stream=stream)
    with model.disable_pruning():
        plain = [naive_greedy(model, s["prompt_ids"], n, 2) for s, n in zip(samples, (16, 10))]
    with model.use_scorer(recency_scorer):
        recent = [naive_greedy(model, s["prompt_ids"], n, 2) for s, n in zip(samples, (16, 10))]
    for name, ids in ((suite.BASE, plain), (suite.METHOD_IDS["recency"], recent)):
        rows = out["per_prompt"][name]
        assert rows["text"] == [tok.decode(i) for i in ids]
        tokens = [[t for t in i if t != 2] for i in ids]
        assert rows["score"][0] == float(is_correct(samples[0], rows["text"][0]))
        assert rows["score"][1] == pytest.approx(rouge_l_f1(tokens[1], [t for t in plain[1] if t != 2]))
        assert rows["degenerate"] == [is_degenerate(t) for t in tokens] and rows["new_tokens"] == [len(t) for t in tokens]
    assert out["per_prompt"][suite.BASE]["score"][1] == 1.0  # the reference against itself
    assert out["kept_share"][suite.BASE] == 1.0 and out["kept_share"][suite.METHOD_IDS["recency"]] < 1.0
    assert "4/4 generations" in stream.getvalue() and "ETA" in stream.getvalue()
    with pytest.raises(ValueError, match="methods\\[0\\] must be the unpruned base"):
        suite.evaluate(model, tok, samples, methods[1:])


def test_lengths_default_by_model_and_are_required_otherwise():
    assert suite.suite_lengths("smollm2-135m-instruct", None) == [1024, 2048]
    assert suite.suite_lengths("gemma3-270m", None) == [4096, 8192]
    assert suite.suite_lengths("./my-model", [512, 768]) == [512, 768]
    with pytest.raises(ValueError, match="--model ./my-model: no default prompt lengths .* pass --lengths"):
        suite.suite_lengths("./my-model", None)
    parser = argparse.ArgumentParser()
    suite.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.tasks, args.prompts, args.methods, args.lm_eval) == (list(E.TASKS), 30, list(suite.METHOD_IDS), False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--filler-genres", "code"])


def test_filler_genres_default_to_the_available_ones_and_a_missing_one_is_named(held_out, monkeypatch):
    assert suite.filler_pool(None).genres == ["technical", "novels"]
    assert suite.filler_pool(["novels"]).genres == ["novels"]

    def unavailable(genre, split="train"):
        raise genre_registry.GenreUnavailable(f"the Debian package for {genre!r} cannot be fetched here")

    monkeypatch.setattr(genre_registry, "genre_texts", unavailable)
    with pytest.raises(ValueError, match=r"--filler-genres bible: the Debian package for 'bible' cannot be fetched "
                       r"here; available here: plays, technical, novels"):
        suite.filler_pool(["bible"])


# ---------------------------------------------------------------------------------------------- lm-eval
def naive_choice(model, tok, doc: dict) -> int:
    """The choice with the highest log-likelihood after the text (lm-eval joins them with one space)."""
    context = tok(doc["text"])["input_ids"]
    scores = []
    for choice in doc["choices"]:
        ids = tok(doc["text"] + " " + choice)["input_ids"]
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
        scores.append(sum(float(logp[i - 1, ids[i]]) for i in range(len(context), len(ids))))
    return max(range(len(scores)), key=scores.__getitem__)


def test_lm_eval_documents_and_the_unpruned_accuracy_of_a_naive_comparison(tmp_path):
    pytest.importorskip("lm_eval")
    tok = char_tokenizer()
    sdtp = get_sdtp_model(tiny_llama(), SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.5))
    docs = suite_lm_eval.choice_documents(tok, F.FillerPool(DOCS), [300, 450], 2, seed=0)
    assert len(docs) == 4 and [d["length"] for d in docs] == [300, 300, 450, 450]
    for d in docs:
        key = d["choices"][d["answer"]]
        assert len(set(d["choices"])) == 4 and all(len(c) == 3 and c.isdigit() for c in d["choices"])
        assert d["text"].count(key) == 1 and not any(c in d["text"] for c in d["choices"] if c != key)
        assert d["text"].startswith("User: ") and d["text"].endswith("Assistant:")
    task = suite_lm_eval.write_task(tmp_path / "task", docs)
    assert (tmp_path / "task" / f"{task}.yaml").is_file() and (tmp_path / "task" / "docs.jsonl").is_file()
    scores = suite_lm_eval.run_task(sdtp, tok, tmp_path / "task", task)
    with sdtp.disable_pruning():
        expected = [float(naive_choice(sdtp.base_model, tok, d) == d["answer"]) for d in docs]
    assert scores["unpruned"] == expected and len(scores["pruned"]) == 4
    summary = suite_lm_eval.summarize(docs, scores)
    assert list(summary) == ["300", "450", "all"] and summary["all"]["n"] == 4
    assert summary["all"]["unpruned"]["mean"] == pytest.approx(sum(expected) / 4)


# ---------------------------------------------------------------------------------------------- the section
@pytest.fixture(scope="module")
def own_model(tmp_path_factory):
    return save_own_model(tmp_path_factory.mktemp("own"))


def test_suite_section_end_to_end_writes_json_and_page_with_intervals(own_model, held_out, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    command = ["bench", "suite", "--model", str(own_model / "tiny-llama"), "--adapter", str(own_model / "adapter"),
               "--lengths", "400", "700", "--prompts", "2", "--methods", "sdtp", "recency", "--summary-tokens", "12",
               "--lm-eval", "--out", "runs"]
    real, generated = suite.greedy_ids, []

    def killed_after_ten(*args, **kwargs):
        if len(generated) == 10:
            raise KeyboardInterrupt
        generated.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(suite, "greedy_ids", killed_after_ten)
    with pytest.raises(SystemExit) as stopped:  # the CLI turns Ctrl-C into exit status 130
        cli.main(command)
    assert stopped.value.code == 130
    journal = tmp_path / "runs" / "suite-tiny-llama.journal.jsonl"
    assert len(journal.read_text().splitlines()) == 1 + 10  # the fingerprint, then one line per generation
    monkeypatch.setattr(suite, "greedy_ids", real)
    capsys.readouterr()
    cli.main(command)  # the rerun resumes
    assert "suite: 10 generations read back from runs/suite-tiny-llama.journal.jsonl" in capsys.readouterr().out
    assert not journal.exists()  # removed once the results are written
    res = json.loads((tmp_path / "runs" / "suite-tiny-llama.json").read_text())["results"]
    assert res["methods"] == [suite.BASE, suite.METHOD_IDS["sdtp"], suite.METHOD_IDS["recency"]]
    assert len(res["samples"]) == len(E.TASKS) * 2 * 2 and res["filler"] == {g: sorted(d) for g, d in DOCS.items()}
    assert all(len(rows["score"]) == len(res["samples"]) for rows in res["per_prompt"].values())
    assert set(res["accuracy"]) == set(E.QA_TASKS) and set(res["summarization"]) == {"400", "700", "all"}
    for task, by_length in res["accuracy"].items():
        for by_bucket in by_length.values():
            for cell in by_bucket.values():
                for m in cell["methods"].values():
                    assert m["low"] <= m["mean"] <= m["high"]
                    assert ("recall" in m) == (task == "aggregation")
    assert set(res["verdict"]) == {"long_context", "summary_degenerate", "summary_rouge", "lm_eval"}
    assert res["lm_eval"]["documents"] == 4 and (tmp_path / "runs" / "suite-lm-eval-tiny-llama" / "docs.jsonl").is_file()
    page = (tmp_path / "runs.md").read_text()
    assert "## Held-out long-context suite" in page and "**retrieval**" in page and "**summarization**" in page
    assert "**lm-eval** (`HFLM`" in page and "**Targets** for SDTP (trained)" in page
    assert "Partial credit, share of the three surnames named" in page
    assert "read this run as a smoke test" in page  # 2 prompts a length: too few for trustworthy intervals
    table = [line for line in page.split("\n") if line.startswith("| method | 400 ")]
    assert table, page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "runs.md"]  # nothing in ./sdtp-bench


def test_keep_ratio_and_window_override_every_pruning_method_and_are_recorded(own_model, held_out, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["bench", "suite", "--model", str(own_model / "tiny-llama"), "--adapter", str(own_model / "adapter"),
            "--lengths", "400", "--prompts", "1", "--tasks", "retrieval", "--methods", "sdtp", "recency"]
    shares = {}
    for keep in ("0.9", "0.5"):
        cli.main(base + ["--keep-ratio", keep, "--local-window-ratio", "0.2", "--out", f"r{keep}"])
        res = json.loads((tmp_path / f"r{keep}" / "suite-tiny-llama.json").read_text())["results"]
        assert res["schedule"]["keep_ratio"] == float(keep) and res["schedule"]["local_window_ratio"] == 0.2
        shares[keep] = res["kept_share"]
        assert f"keep ratio {float(keep):g} per stage" in (tmp_path / f"r{keep}.md").read_text()
    for name in (suite.METHOD_IDS["sdtp"], suite.METHOD_IDS["recency"]):
        assert shares["0.5"][name] < shares["0.9"][name] < 1.0
    for flag, value, allowed in (("--keep-ratio", "1.5", "0 < R <= 1"), ("--local-window-ratio", "1", "0 <= W < 1")):
        parser = argparse.ArgumentParser()
        suite.add_arguments(parser)
        with pytest.raises(ValueError, match=f"{flag} {float(value)} is invalid; allowed: {allowed}"):
            suite.run(parser.parse_args(base[2:] + [flag, value]))


def test_few_prompts_warning_tells_a_smoke_test_from_provisional_verdicts_and_small_depth_buckets():
    from sdtp_adapter.bench.suite_render import few_prompts_warning
    from sdtp_adapter.bench.suite_stats import ALL

    def res(whole: int, bucket: int) -> dict:
        return {"accuracy": {"retrieval": {"1024": {"start": {"n": bucket}, "end": {"n": whole - bucket}, ALL: {"n": whole}}}}}

    assert "smoke test" in "".join(few_prompts_warning(res(6, 3)))
    caution = "".join(few_prompts_warning(res(30, 8)))
    assert "smoke test" not in caution and "Depth buckets hold as few as 8 prompts" in caution
    assert few_prompts_warning(res(30, 12)) == []
    provisional = "".join(few_prompts_warning(res(12, 4)))  # enough for intervals, too few for a verdict
    assert "smoke test" not in provisional and "With 12 prompts in a cell the verdicts below are provisional" in provisional
    assert "Depth buckets hold as few as 4 prompts" in provisional
    between = "".join(few_prompts_warning(res(20, 10)))
    assert "With 20 prompts in a cell the verdicts below are provisional" in between and "Depth buckets" not in between
