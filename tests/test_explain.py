"""``SDTPModel.explain`` and ``sdtp explain``: the recorded stages agree with a normal pruned forward, the
scores are the trained modules' and choose the kept tokens by the keep rule, the files are self-contained
and escaped (the real-browser check is tests/test_explain_browser.py)."""

from __future__ import annotations

import html
import json
import math
import re

import matplotlib.image
import numpy as np
import pytest
import torch

from conftest import CharTokenizer, random_ids, tiny_llama
from own_model import PROSE, char_tokenizer, save_own_model
from sdtp_adapter import SDTPConfig, cli, get_sdtp_model
from sdtp_adapter.explain import Explanation
from sdtp_adapter.explain.html import layer_colours, quantiles, token_text, write_html
from sdtp_adapter.explain.png import DROPPED, KEPT, png_size, render_png
from sdtp_adapter.files import CorruptedFileError
from sdtp_adapter.pruning.pruner import keep_margin

STAGES = dict(prune_layers=[2, 3, 5, 6], keep_ratio=0.7, protected_first=4, local_window_ratio=0.1)


@pytest.fixture(scope="module")
def sdtp():
    return get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))


def reference_keep(scores: dict[int, float], protected: set[int], budget: int) -> set[int]:
    """Naive keep rule: every protected token, then the best-scored others (ties: lower position first)."""
    others = sorted((p for p in scores if p not in protected), key=lambda p: (-scores[p], p))
    kept = {p for p in scores if p in protected}
    return kept | set(others[: budget - len(kept)])


def test_explain_agrees_with_a_normal_pruned_forward(sdtp):
    ids = random_ids(90)
    with torch.no_grad():
        out = sdtp(ids)
    record = sdtp.last_pruning
    explanation = sdtp.explain(ids)
    for s, layer in enumerate(explanation.stage_layers):
        assert explanation.kept_positions[s] == sorted(record.kept_positions[layer][0].tolist())
    assert explanation.kept_counts == sdtp.schedule.budgets(90)
    survived = [x == explanation.num_layers for x in explanation.last_layer]
    assert survived == (~out.pruned_positions[0]).tolist()  # the gathered forward's own survivors
    assert explanation.input_ids == ids[0].tolist() and explanation.stage_layers == [2, 3, 5, 6]


def test_scores_are_the_modules_and_choose_the_kept_tokens(sdtp):
    ids = random_ids(90, seed=4)
    explanation = sdtp.explain(ids)
    with torch.no_grad(), sdtp.disable_pruning():  # before the first stage every token is present
        hidden = sdtp(ids, output_hidden_states=True).hidden_states[2]  # the input of layer 2
        first = keep_margin(sdtp.pruner(2)(hidden))[0]
    assert explanation.scored_positions[0] == list(range(90))
    torch.testing.assert_close(torch.tensor(explanation.scores[0]), first, rtol=1e-4, atol=1e-4)
    protected, budgets = set(explanation.protected), sdtp.schedule.budgets(90)
    for s in range(len(explanation.stage_layers)):
        expected = reference_keep(explanation.stage_scores(s), protected, budgets[s])
        assert set(explanation.kept_positions[s]) == expected, s


def test_stages_are_nested_and_last_layer_follows_them(sdtp):
    e = sdtp.explain(random_ids(70, seed=2))
    n, layers = e.length, e.stage_layers
    assert e.scored_positions[0] == list(range(n))
    for s in range(len(layers)):
        assert set(e.kept_positions[s]) < set(e.scored_positions[s])
        if s + 1 < len(layers):
            assert e.scored_positions[s + 1] == e.kept_positions[s]
    for p in range(n):
        reached = [layer for s, layer in enumerate(layers) if p in e.kept_positions[s]]
        dropped_at = next((layer for s, layer in enumerate(layers) if p not in e.kept_positions[s]), e.num_layers)
        assert e.last_layer[p] == dropped_at, p
        assert reached == [layer for layer in layers if layer < dropped_at]
    assert set(e.protected) == {0, 1, 2, 3, *range(63, 70)} and set(e.protected) <= set(e.kept_positions[-1])


def test_explain_follows_the_thread_settings_and_restores_the_scorer(sdtp):
    ids = random_ids(60, seed=3)
    scorer = sdtp.controller.scorer.value
    by_position = lambda layer, hidden, positions: positions.float()  # noqa: E731 - keeps the latest tokens
    with sdtp.use_schedule(layers=(3, 5), keep_ratio=0.5), sdtp.use_scorer(by_position):
        e = sdtp.explain(ids)
    assert e.stage_layers == [3, 5] and e.schedule["keep_ratio"] == 0.5
    assert e.scores[0] == [float(p) for p in range(60)]
    budget = e.kept_counts[-1]
    assert e.kept_positions[-1] == sorted({0, 1, 2, 3} | set(range(60 - (budget - 4), 60)))
    assert sdtp.controller.scorer.value is scorer  # the recorder was for that one forward only
    sdtp(ids)
    assert sorted(sdtp.last_pruning.kept_positions) == list(range(2, 8))


def test_explain_refuses_what_is_not_one_pruned_prompt(sdtp):
    with pytest.raises(ValueError, match=r"input_ids has shape \[2, 30\].*one prompt of shape \[1, N\]"):
        sdtp.explain(random_ids(30, batch=2))
    with pytest.raises(ValueError, match=r"input_ids has shape \[30\]"):
        sdtp.explain(random_ids(30)[0])
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        sdtp.explain(random_ids(30).float())
    mask = torch.ones(1, 30, dtype=torch.long)
    mask[0, :3] = 0
    with pytest.raises(ValueError, match="attention_mask has padding"):
        sdtp.explain(random_ids(30), attention_mask=mask)
    assert sdtp.explain(random_ids(30), attention_mask=torch.ones(1, 30, dtype=torch.long)).length == 30
    with sdtp.disable_pruning(), pytest.raises(RuntimeError, match="disable_pruning"):
        sdtp.explain(random_ids(30))


def test_tokens_find_text_and_json_round_trip(sdtp, tmp_path):
    tokenizer, text = char_tokenizer(), "the quick brown fox jumps over the lazy dog; " * 3
    e = sdtp.explain(torch.tensor([tokenizer(text)["input_ids"]]), tokenizer=tokenizer)
    assert "".join(e.tokens) == text
    start = text.index("lazy dog")
    assert e.find_text("lazy dog") == list(range(start, start + 8))
    with pytest.raises(ValueError, match="'zebra' does not occur"):
        e.find_text("zebra")
    e.highlight, e.highlight_text = e.find_text("lazy dog"), "lazy dog"
    e.scores[1][0] = math.nan
    path = e.save_json(tmp_path / "explain.json")
    data = json.loads(path.read_text())
    assert data["kept_counts"] == e.kept_counts and data["highlight_surviving"] == e.surviving(e.highlight)
    assert data["scores"][1][0] is None and "kept_positions" not in data  # rebuilt from last_layer
    back = Explanation.load_json(path)
    assert (back.kept_positions, back.scored_positions, back.tokens, back.highlight) == (
        e.kept_positions, e.scored_positions, e.tokens, e.highlight)
    assert math.isnan(back.scores[1][0])
    np.testing.assert_allclose(np.nan_to_num(back.scores[2]), np.nan_to_num(e.scores[2]), atol=5e-4)
    data["last_layer"][0] = 2  # a protected token dropped: disagrees with nothing stored but its scores
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptedFileError, match="not a valid explain file"):
        Explanation.load_json(path)


def test_html_is_self_contained_and_escapes_the_prompt(sdtp, tmp_path):
    e = sdtp.explain(random_ids(40, seed=5), tokenizer=CharTokenizer())
    e.tokens[5:12] = ["<script>", "alert(1)", "</script>", "\n", "a\tb", "\x01", ""]
    e.highlight, e.highlight_text = [5, 6, 7], "<script>alert(1)</script>"
    page = write_html(e, tmp_path / "explain.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    for external in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert external not in page, external
    assert "↵\n" in page and "␁" in page and "∅" in page
    assert page.count('<span class="l') == 40 and page.count('<span class="sw l') == len(layer_colours(e))
    for level in layer_colours(e):
        assert f"{e.last_layer.count(level)}</span>" in page
    assert all(f"<td>{count}</td>" in page for count in e.kept_counts)
    assert token_text('a"b<&') == "a&quot;b&lt;&amp;"


def test_quantiles_match_numpy():
    values = [3.0, -1.0, 2.5, 7.0, 0.0, math.nan]
    assert quantiles(values) == pytest.approx(np.quantile([3.0, -1.0, 2.5, 7.0, 0.0], [0, 0.1, 0.5, 0.9, 1]).tolist())


def test_png_has_the_stated_size_and_shows_kept_and_dropped(sdtp, tmp_path):
    e = sdtp.explain(random_ids(200, seed=6))
    image = matplotlib.image.imread(render_png(e, tmp_path / "explain.png"))[..., :3]
    width, height = png_size(e)
    assert image.shape[:2] == (height, width)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 20
    for colour in (KEPT, DROPPED):  # the status panel's cells (a 256-colour palette: allow a small shift)
        assert (np.abs(image - np.array(colour)).max(axis=-1) < 0.03).sum() > 50, colour


def test_cli_writes_the_three_files_into_out(tmp_path, monkeypatch, capsys):
    root = save_own_model(tmp_path / "own")
    monkeypatch.chdir(tmp_path)
    argv = ["explain", "--model", str(root / "tiny-llama"), "--adapter", str(root / "adapter"),
            "--text-file", str(root / "prose.txt"), "--prompt", "<script>alert(1)</script>", "--highlight", "lazy dog"]
    cli.main(argv)
    out = tmp_path / "sdtp-explain"
    assert sorted(p.name for p in out.iterdir()) == ["explain.html", "explain.json", "explain.png"]
    e = Explanation.load_json(out / "explain.json")
    assert e.length == len(PROSE) + 2 + len("<script>alert(1)</script>") and e.stage_layers == [2, 4, 6]
    assert e.highlight == list(range(PROSE.index("lazy dog"), PROSE.index("lazy dog") + 8))
    page = (out / "explain.html").read_text()
    assert "<script" not in page and "<script>alert(1)</script>" in html.unescape(re.sub("<[^>]*>", "", page))
    printed = capsys.readouterr().out
    assert f"kept per stage: L2 {e.kept_counts[0]}" in printed and "highlight (8 tokens) left after each stage" in printed


def error_line(capsys, argv: list[str]) -> str:
    """The one-line error of a failing command (after the model's loading bars, where it loads first)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    root = save_own_model(tmp_path / "own")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    model = ["--model", str(root / "tiny-llama"), "--adapter", str(root / "adapter")]
    assert "no prompt: pass --text-file" in error_line(capsys, ["explain", *model])
    assert "'missing.txt' is not a file" in error_line(capsys, ["explain", *model, "--text-file", "missing.txt"])
    assert "--chat needs a tokenizer with a chat template" in error_line(capsys, ["explain", *model, "--prompt", "hi", "--chat"])
    assert "more than --max-tokens 5" in error_line(capsys, ["explain", *model, "--prompt", "hello!", "--max-tokens", "5"])
    assert "leave out --text-file" in error_line(capsys, ["explain", *model, "--demo-prompt", "--prompt", "x"])
    assert not (tmp_path / "sdtp-explain").exists()
