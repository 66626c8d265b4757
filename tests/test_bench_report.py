"""The benchmarks page is assembled from whatever section JSON files exist, with their metadata."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from sdtp_adapter.bench import meta, report


def test_page_lists_each_present_section_with_machine_versions_command_and_date(tmp_path):
    m = meta.run_meta("sdtp bench sweep --windows 2")
    for key in ("date", "machine", "versions", "command"):
        assert m[key]
    assert "torch" in m["versions"]
    points = [dict(scorer="SDTP", placement="p", layers=[1], keep_ratio=0.9, kept_share=0.5, delta_nll_pct=1.0, top1=0.9,
                   kl=0.1, speedup=1.5, flops_bound=2.0, pareto=True)]
    sweep = dict(model="m", prefix=10, continuation=2, windows=1, speed_tokens=20, repeats=1, base_nll=3.0, base_prefill_s=0.1, points=points)
    path = meta.write_results("sweep-m", m, sweep, tmp_path)
    assert json.loads(path.read_text())["results"] == sweep
    page = report.write_report(tmp_path / "benchmarks.md", tmp_path).read_text()
    assert page.startswith("# Benchmarks")
    assert "## Sweep" in page and "sdtp bench sweep --windows 2" in page and m["date"] in page
    assert "## Speed" not in page  # absent sections are skipped, not rendered empty


def test_sections_of_the_default_model_come_first(tmp_path):
    for name in ("speed-gemma3-270m", "speed-smollm2-135m-instruct-cuda", "speed-smollm2-135m-instruct"):
        (tmp_path / f"{name}.json").write_text("{}")
    assert report.section_names("speed-*", tmp_path) == [
        "speed-smollm2-135m-instruct", "speed-smollm2-135m-instruct-cuda", "speed-gemma3-270m"]


def test_the_page_sits_next_to_its_results_folder_named_after_it(tmp_path, monkeypatch):
    assert meta.report_path(meta.REPO_RESULTS_DIR) == meta.REPO_RESULTS_DIR.parent / "benchmarks.md"
    monkeypatch.chdir(tmp_path)
    assert meta.report_path(Path("sdtp-bench")) == tmp_path.resolve() / "sdtp-bench.md"
    assert meta.report_path(Path("runs/a/")) == tmp_path.resolve() / "runs" / "a.md"
    assert meta.results_dir(argparse.Namespace()) == Path("sdtp-bench")  # relative: under the working directory
    with pytest.raises(ValueError, match="no folder name"):
        meta.report_path(Path("/"))


def test_repository_page_keeps_its_header_and_links_other_pages_link_their_folder(tmp_path):
    assert report.header(meta.REPO_RESULTS_DIR) == report.HEADER
    lines = ["![a](benchmarks/speed-x-prefill.png) ![b](benchmarks/speed-x-memory.png)", "see benchmarks/earlier"]
    assert report.relink(lines, "benchmarks") == lines
    assert report.relink(lines, "runs") == ["![a](runs/speed-x-prefill.png) ![b](runs/speed-x-memory.png)",
                                            "see benchmarks/earlier"]
    folder = tmp_path / "mine"
    points = [dict(scorer="SDTP", placement="p", layers=[1], keep_ratio=0.9, kept_share=0.5, delta_nll_pct=1.0, top1=0.9,
                   kl=0.1, speedup=1.5, flops_bound=2.0, pareto=True)]
    sweep = dict(model="m", prefix=10, continuation=2, windows=1, speed_tokens=20, repeats=1, base_nll=3.0,
                 base_prefill_s=0.1, points=points)
    meta.write_results("sweep-m", meta.run_meta("sdtp bench sweep --out mine"), sweep, folder)
    page = report.write_report(meta.report_path(folder), folder).read_text()
    assert page.startswith("# Benchmarks") and "[`mine/`](mine/)" in page and "![Pareto plot](mine/sweep-m-pareto.png)" in page
    assert "benchmarks/" not in page
