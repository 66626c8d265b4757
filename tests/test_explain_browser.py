"""The explain page in a real headless browser: Debian's chromium-headless-shell, fetched once into the cache
by ``browser.py`` (~90 MB of packages, 280 MB unpacked, about 10 s). It renders, and the prompt's markup
stays text."""

from __future__ import annotations

import html

import matplotlib.image
import numpy as np
import pytest
import torch

import browser
from conftest import CharTokenizer, random_ids, tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.explain.html import layer_colours, write_html

pytestmark = pytest.mark.browser
HOSTILE = ["<script>", "document.title='pwned'", "</script>", "<img src=x onerror=alert(1)>", "\n", "a\tb", "&amp;", "ü"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    torch.manual_seed(0)
    sdtp = get_sdtp_model(tiny_llama(), SDTPConfig(prune_layers=[2, 4, 6], keep_ratio=0.6, protected_first=2))
    e = sdtp.explain(random_ids(300, seed=7), tokenizer=CharTokenizer())
    e.tokens[10 : 10 + len(HOSTILE)] = HOSTILE
    e.highlight, e.highlight_text = [10, 11, 12], "".join(HOSTILE[:3])
    return e, write_html(e, tmp_path_factory.mktemp("explain") / "explain.html")


@pytest.fixture(scope="module")
def chromium():
    try:
        browser.browser()
    except browser.BrowserUnavailable as err:  # not Debian: nothing to fetch the browser with
        pytest.skip(str(err))


def test_page_renders_its_text_and_colours(page, chromium, tmp_path):
    e, path = page
    shot = matplotlib.image.imread(browser.screenshot(path, tmp_path / "shot.png", width=1280, height=1600))[..., :3]
    assert shot.shape[:2] == (1600, 1280)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50  # not blank: text antialiasing, swatches, bars
    dark = (shot.mean(axis=-1) < 0.35).mean()
    assert dark > 0.005, f"only {dark:.4f} of the pixels are dark: no text drawn?"
    for level, colour in layer_colours(e).items():  # the legend swatches and shaded tokens: the CSS applied
        rgb = np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        assert (np.abs(shot - rgb).max(axis=-1) < 0.02).sum() > 200, (level, colour)


def test_prompt_markup_stays_text_in_the_browser(page, chromium):
    e, path = page
    dom = browser.dump_dom(path)
    assert "<script" not in dom and "<img" not in dom  # nothing of the prompt became an element
    assert "pwned" not in dom.split("<title>")[1].split("</title>")[0]
    for token in HOSTILE[:4]:
        assert html.escape(token, quote=False) in dom, token
