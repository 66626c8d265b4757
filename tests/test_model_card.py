"""``recipes/model_card.py``: a card never quotes results measured on another budget than the adapter's config
(suite and speed record their keep ratio; compare is matched through SDTP's kept share at its prefix)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sdtp_adapter import SDTPConfig

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("model_card", ROOT / "recipes" / "model_card.py")
model_card = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_card)


@pytest.fixture
def config() -> SDTPConfig:
    return SDTPConfig(keep_ratio=0.95, num_stages=10, first_layer=4, local_window_ratio=0.3, num_hidden_layers=30)


def test_each_sections_keep_ratio_is_read_where_it_records_it(config):
    assert model_card.measured_keep_ratio({"schedule": {"keep_ratio": 0.9}}, config) == 0.9
    assert model_card.measured_keep_ratio({"keep_ratio": 0.95}, config) == 0.95
    share = config.schedule(30).kept_share(2048, 30)  # naive: what the adapter's own schedule keeps at the prefix
    assert model_card.measured_keep_ratio({"prefix": 2048, "sdtp_kept_share": share}, config) == 0.95
    other = SDTPConfig(keep_ratio=0.9, num_stages=10, first_layer=4, local_window_ratio=0.3, num_hidden_layers=30)
    assert model_card.measured_keep_ratio({"prefix": 2048, "sdtp_kept_share": other.schedule(30).kept_share(2048, 30)},
                                          config) is None
    assert model_card.measured_keep_ratio({"rows": []}, config) is None


def test_a_section_measured_on_another_budget_is_refused_naming_both(config, monkeypatch):
    monkeypatch.setattr(model_card, "read_results", lambda name, directory: {"meta": {}, "results": {"keep_ratio": 0.9}})
    with pytest.raises(ValueError, match=r"speed-m.json was measured at keep ratio 0.9 .* configured at 0.95: rerun `sdtp bench speed`"):
        model_card.section("speed-m", lambda data: [], "sdtp bench speed", config)
