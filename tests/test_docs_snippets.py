"""Every ```python block of README.md and docs/*.md runs as written, from an unrelated working directory.

Each block runs alone (fresh interpreter, empty temp cwd), so a block may not lean on an earlier one.
Blocks that load a real model (``load_model``) are ``integration`` tests. A block opts out only with
``# not run: <reason>`` on its first line; those are skipped with the reason and listed by
``test_opt_outs_are_few_and_explained``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPT_OUT = re.compile(r"#\s*not run:\s*(.*)")
MAX_OPT_OUTS = 2  # keep them rare: a block that cannot run is a block nobody checks
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def opt_out(self) -> str | None:
        """The reason given on the first line, or None if the block must run."""
        match = OPT_OUT.match(self.code.lstrip().splitlines()[0]) if self.code.strip() else None
        return match.group(1).strip() if match else None

    @property
    def needs_real_model(self) -> bool:
        return "load_model" in self.code


def snippets() -> list[Snippet]:
    out = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            out.append(Snippet(str(page.relative_to(ROOT)), line, match.group(1)))
    return out


def params():
    for snippet in snippets():
        marks = [pytest.mark.integration] if snippet.needs_real_model else []
        yield pytest.param(snippet, id=snippet.id, marks=marks)


@pytest.mark.parametrize("snippet", list(params()))
def test_snippet_runs_as_written(snippet: Snippet, tmp_path):
    if snippet.opt_out is not None:
        pytest.skip(f"not run: {snippet.opt_out}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, not the checkout
    proc = subprocess.run(
        [sys.executable, "-c", snippet.code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{snippet.id} failed:\n{snippet.code}\n--- stderr:\n{proc.stderr[-4000:]}"


def test_opt_outs_are_few_and_explained(capsys):
    found = snippets()
    assert found, "no python blocks found: did the fence pattern change?"
    opted = [(s.id, s.opt_out) for s in found if s.opt_out is not None]
    with capsys.disabled():
        print(f"\ndocs snippets: {len(found)} python blocks, {len(opted)} not run: {opted}")
    assert all(reason for _, reason in opted), f"an opt-out must say why: {opted}"
    assert len(opted) <= MAX_OPT_OUTS, f"{len(opted)} blocks opt out (allowed: {MAX_OPT_OUTS}): {opted}"


def test_a_block_with_an_error_fails(tmp_path):
    """The runner itself: a failing block is reported, not silently passed."""
    snippet = Snippet("x.md", 1, "raise SystemExit(3)\n")
    with pytest.raises(AssertionError, match="x.md:1 failed"):
        test_snippet_runs_as_written(snippet, tmp_path)
