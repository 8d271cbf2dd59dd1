"""The exported page in Firefox, the second engine it must work in from disk: the same
probabilities and greedy text as PyTorch's, through WebAssembly SIMD and through the plain
JavaScript path, and co-writing with real keys. Headless Firefox is driven over WebDriver BiDi
(tests/firefox.py); skipped, with the reason, where Firefox is absent. Chromium runs the whole
set (test_page_browser.py)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

import charrnn

from ..browser import wait_for
from ..firefox import TAB, Firefox, needs_firefox
from .models import assert_page_is_charrnn, make_checkpoint, page_for

pytestmark = needs_firefox

PRIME = "ROMEO: But soft, what light"


@pytest.fixture(scope="module")
def firefox(tmp_path_factory):
    browser = Firefox(tmp_path_factory.mktemp("firefox-profile"))
    yield browser
    browser.close()


@pytest.fixture(autouse=True)
def clean_page(firefox):
    """Every test ends with no console error and no request but the page's own file and data:
    URLs (Firefox reports a data: font it loads itself; neither reaches the network)."""
    firefox.events.clear()
    yield
    assert firefox.errors() == []
    assert all(url.startswith(("file://", "data:")) for url in firefox.requests()), firefox.requests()


@pytest.mark.parametrize("case", ["lstm-wasm", "lstm-js", "gru"])
def test_probabilities_and_greedy_text_equal_charrnn_in_firefox(firefox, tmp_path, case):
    cell = case.split("-")[0]
    ck = make_checkpoint(tmp_path / "m.pt", cell=cell, layers=2, hidden=24 if cell == "lstm" else 22)
    page, rounded = page_for(tmp_path, ck)
    engine = "engine=js&" if case.endswith("-js") else ""
    firefox.open_page(page, f"{engine}prime={quote(PRIME)}&temp=0&length=300&run")
    wait_for(firefox, "document.body.dataset.done")
    assert firefox.js("document.body.dataset.engine") == ("JavaScript" if engine else "WebAssembly SIMD")
    assert_page_is_charrnn(firefox, rounded, PRIME)


def test_cowrite_offers_continuations_and_tab_accepts_in_firefox(firefox, tmp_path):
    page, rounded = page_for(tmp_path, make_checkpoint(tmp_path / "m.pt"))
    firefox.open_page(page, "mode=cowrite&temp=0.8&seed=3")
    firefox.click("#cowrite")
    firefox.type("ROMEO: " + TAB)
    suggestions = wait_for(firefox, "Array.from(document.querySelectorAll('#suggestions button'), b => b.textContent)")
    assert 1 <= len(suggestions) <= 3
    greedy = charrnn.load(rounded).generate(prime="ROMEO: ", length=len(suggestions[0]), temperature=0)
    assert suggestions[0] == greedy[len("ROMEO: "):]
    firefox.type(TAB)  # takes the highlighted one
    assert firefox.js("document.getElementById('cowrite').value") == "ROMEO: " + suggestions[0]
    assert firefox.js("document.activeElement.id") == "cowrite"
