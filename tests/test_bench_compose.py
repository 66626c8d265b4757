"""``sdtp bench compose`` end to end on a tiny model of one's own: every row measured, the KV budget
arithmetic exact after the prefill and after decoding, the page rendered."""

from __future__ import annotations

import json

import pytest
from own_model import save_own_model

from sdtp_adapter import cli
from sdtp_adapter.bench import composition

ENTRY_BYTES = 2 * 2 * 16 * 4  # keys and values, 2 key/value heads of 16 dims, float32: one cached token of one layer


@pytest.fixture(scope="module")
def own_model(tmp_path_factory):
    return save_own_model(tmp_path_factory.mktemp("own"))


def test_compose_measures_every_row_at_one_kv_budget(own_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli.main(["bench", "compose", "--model", str(own_model / "tiny-llama"), "--adapter", str(own_model / "adapter"),
              "--text-file", str(own_model / "prose.txt"), "--windows", "2", "--prefix", "32", "--continuation", "8",
              "--decode-tokens", "6", "--sink", "2", "--recent", "4", "--lengths", "64", "--tasks", "passkey",
              "--depths", "0.5", "--out", "runs/c"])
    res = json.loads((tmp_path / "runs" / "c" / "compose-tiny-llama.json").read_text())["results"]
    rows = {r["method"]: r for r in res["rows"]}
    assert list(rows) == ["base (unpruned)", "SDTP (trained)", "H2O", "SDTP + H2O", "SnapKV", "SDTP + SnapKV"]
    # the adapter keeps 32, 32, 16, 16, 8, 8, 4, 4 tokens in its 8 layers: a share of 120 / 256
    assert res["kv_share"] == 120 / 256

    def entries(row: dict, when: str) -> int:
        return round(row[f"kv_mib_{when}"] * 2**20 / ENTRY_BYTES)

    assert entries(rows["base (unpruned)"], "prefill") == 8 * 32 and entries(rows["base (unpruned)"], "decode") == 8 * 38
    assert entries(rows["SDTP (trained)"], "prefill") == 120 and entries(rows["SDTP (trained)"], "decode") == 120 + 8 * 6
    for press in ("H2O", "SnapKV"):
        assert entries(rows[press], "prefill") == 8 * 15  # 32 * 120 / 256 per layer: SDTP's total, spread evenly
        assert entries(rows[press], "decode") == 8 * 18  # ceil(38 * 120 / 256): the budget follows the positions seen
        both = rows[f"SDTP + {press}"]  # each layer: the smaller of SDTP's count and the press's budget
        assert entries(both, "prefill") == 4 * 15 + 2 * 8 + 2 * 4
        assert entries(both, "decode") == 4 * 18 + 2 * 14 + 2 * 10
        assert rows[press]["kept_share"] == 1.0 and both["kept_share"] == res["kv_share"]
        assert rows[press]["kind"] == "press" and both["kind"] == "pruning + press"
    for row in res["rows"]:
        assert row["prefill_speedup"] > 0 and 0 <= row["top1"] <= 1 and "passkey" in row["tasks"]["per_task"]
    assert rows["base (unpruned)"]["delta_nll_pct"] == 0.0 and rows["H2O"]["kl"] > 0
    page = (tmp_path / "runs" / "c.md").read_text()
    assert "## SDTP with KV-cache compression (H2O, SnapKV) at the same KV budget" in page
    assert "| SDTP + SnapKV | pruning + press | 0.47 |" in page and "KV MiB after 6 tokens" in page
    assert "H2O `H2OPress(max_tokens=None, compression_ratio=0.53125, sink_tokens=2, recent_tokens=4)`" in page


def test_compose_refuses_bad_sizes_before_loading(own_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser(["bench", "compose"]).parse_args(
        ["bench", "compose", "--model", str(own_model / "tiny-llama"), "--adapter", str(own_model / "adapter"), "--recent", "0"])
    args.command_line = "test"
    monkeypatch.setattr(composition, "load_sdtp", lambda *a, **k: pytest.fail("loaded the model first"))
    with pytest.raises(ValueError, match="--recent 0 is invalid; allowed: an integer >= 1"):
        composition.run(args)
