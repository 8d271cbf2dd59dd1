"""The exported page in a real browser: its numbers are PyTorch's, its text is charrnn's, and
nothing from a link or a checkpoint runs.

Headless Chromium is driven over the DevTools pipe (chromium.py, standard library only) with
real clicks and keys; the page's own `window.charrnnPage` hook gives its probabilities.
Skipped, with the reason, where Chromium is absent.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

import charrnn
from charrnn import checkpoint
from charrnn.export import export
from charrnn.text.records import record_hash, record_hashes

from ..browser import BROWSER, Chromium, needs_browser, open_page, requests, wait_for
from .models import FIXTURE, NAMES, assert_page_is_charrnn, make_checkpoint, page_for

pytestmark = needs_browser

PRIME = "ROMEO: But soft, what light"
OUTPUT = "document.getElementById('output').textContent"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(tmp_path_factory.mktemp("profile"))
    yield chromium
    chromium.close()


@pytest.fixture(autouse=True)
def clean_page(browser):
    """Every test ends with no console error and no request but the page's own file."""
    browser.events.clear()
    yield
    assert browser.errors() == []
    assert all(url.startswith("file://") for url in requests(browser)), requests(browser)


def run_fragment(browser, page: Path, fragment: str) -> None:
    open_page(browser, page, fragment)
    wait_for(browser, "document.body.dataset.done")


@pytest.mark.parametrize("case", ["lstm-wasm", "lstm-js", "gru", "rnn", "fixture"])
def test_probabilities_and_greedy_text_equal_charrnn(browser, tmp_path, case):
    if case == "fixture":
        ck, prime = FIXTURE, None
    else:
        cell = case.split("-")[0]
        ck = make_checkpoint(tmp_path / "m.pt", cell=cell, layers={"lstm": 2, "gru": 3, "rnn": 1}[cell],
                             hidden={"lstm": 24, "gru": 22, "rnn": 17}[cell])
        prime = PRIME
    page, rounded = page_for(tmp_path, ck)
    chars = checkpoint.load(rounded).vocab.chars
    prime = prime or "".join(chars[i % len(chars)] for i in range(0, 60, 7))
    engine = "engine=js&" if case.endswith("-js") else ""
    run_fragment(browser, page, f"{engine}prime={quote(prime)}&temp=0&length=300&run")
    assert browser.js("document.body.dataset.engine") == ("JavaScript" if engine else "WebAssembly SIMD")
    assert_page_is_charrnn(browser, rounded, prime)


def test_the_write_button_streams_and_stops(browser, tmp_path):
    page, rounded = page_for(tmp_path, make_checkpoint(tmp_path / "m.pt"))
    open_page(browser, page)
    browser.click("#prime")
    browser.call("Input.insertText", session=True, text="ROMEO:")
    browser.js("document.getElementById('temp').value = '0'; document.getElementById('length').value = '120'")
    browser.click("#write")
    wait_for(browser, "document.body.dataset.done")
    assert browser.js(OUTPUT) == charrnn.load(rounded).generate(prime="ROMEO:", length=120, temperature=0)

    # A long run streams in and Stop ends it.
    browser.js("document.getElementById('length').value = '100000000'; document.getElementById('temp').value = '1'")
    browser.click("#write")
    wait_for(browser, f"{OUTPUT}.length > 50")
    browser.click("#stop")
    status = wait_for(browser, "document.body.dataset.done === '2' && "
                               "document.getElementById('write-status').textContent")
    assert "(stopped)" in status and len(browser.js(OUTPUT)) < 100_000_000


def test_a_seed_gives_the_same_text_and_the_prime_is_checked(browser, tmp_path):
    page, _ = page_for(tmp_path, make_checkpoint(tmp_path / "m.pt"))
    texts = []
    for _ in range(2):
        run_fragment(browser, page, "prime=ROMEO:&temp=0.9&topk=10&topp=0.9&length=200&seed=7&run")
        texts.append(browser.js(OUTPUT))
    assert texts[0] == texts[1] and len(texts[0]) == len("ROMEO:") + 200
    run_fragment(browser, page, "prime=%E2%82%AC%20X&run")  # "€ X": characters the model never saw
    assert "never saw" in browser.js("document.getElementById('write-status').textContent")


def test_records_are_whole_and_new(browser, tmp_path):
    chars = sorted(set("".join(NAMES)))
    ck = make_checkpoint(tmp_path / "r.pt", chars=chars, records=NAMES, scale=4.0)
    page, _ = page_for(tmp_path, ck)
    # The page hashes records as charrnn does (blake2b, 8 bytes, little-endian, signed).
    open_page(browser, page)
    for text in ["anna", "", "é ü 日本", "x" * 300]:
        assert browser.js(f"charrnnPage.recordHash({json.dumps(text)})") == str(record_hash(text))

    fragment = "mode=records&n=12&temp=0.7&seed=5&length=30&novel=0&run"
    run_fragment(browser, page, fragment)
    drawn = browser.js("Array.from(document.querySelectorAll('#records li'), l => l.textContent)")
    assert len(drawn) == 12 and all(set(r) <= set(chars) for r in drawn)

    # Make the model's own draws training records: the novel filter must drop every one of them.
    data = {k: v for k, v in checkpoint.load(ck).data.items() if k not in ("format", "format_version")}
    data["record_hashes"] = record_hashes(NAMES + drawn[:6])
    checkpoint.save(ck, data)
    export(ck, page)
    run_fragment(browser, page, fragment.replace("novel=0", "novel=1"))
    novel = browser.js("Array.from(document.querySelectorAll('#records li'), l => l.textContent)")
    assert novel and not set(novel) & set(NAMES + drawn[:6])
    assert "already in the training data" in browser.js("document.getElementById('records-status').textContent")

    # The prime is every record's start; a real click on "New ones" draws them.
    open_page(browser, page, "mode=records&temp=1&n=5")
    browser.js("document.getElementById('prime').value = 'an'")
    browser.click("#draw")
    wait_for(browser, "document.body.dataset.done")
    again = browser.js("Array.from(document.querySelectorAll('#records li'), l => l.textContent)")
    assert len(again) == 5 and all(r.startswith("an") for r in again)


def test_cowrite_offers_continuations_and_tab_accepts(browser, tmp_path):
    page, rounded = page_for(tmp_path, make_checkpoint(tmp_path / "m.pt"))
    open_page(browser, page, "mode=cowrite&temp=0.8&seed=3")
    browser.click("#cowrite")
    browser.call("Input.insertText", session=True, text="ROMEO: é")
    browser.key("Tab", 9)
    suggestions = wait_for(browser, "Array.from(document.querySelectorAll('#suggestions button'), b => b.textContent)")
    assert 1 <= len(suggestions) <= 3
    # The first is the likeliest continuation of the state over the known characters ("é" skipped).
    greedy = charrnn.load(rounded).generate(prime="ROMEO: ", length=len(suggestions[0]), temperature=0)
    assert suggestions[0] == greedy[len("ROMEO: "):]
    assert '"é"' in browser.js("document.getElementById('cowrite-status').textContent")
    browser.key("Tab", 9)  # takes the highlighted one
    assert browser.js("document.getElementById('cowrite').value") == "ROMEO: é" + suggestions[0]
    assert browser.js("document.querySelectorAll('#suggestions button').length") == 0
    assert browser.js("document.activeElement.id") == "cowrite"

    # The button (for touch screens) offers them too, and a tap takes one, at the cursor.
    browser.js("const t = document.getElementById('cowrite'); t.value = 'ab cd'; t.setSelectionRange(2, 2)")
    browser.click("#suggest")
    wait_for(browser, "document.querySelectorAll('#suggestions button').length")
    picked = browser.js("document.querySelectorAll('#suggestions button')[0].textContent")
    browser.click("#suggestions li:last-child button")
    last = browser.js("(() => { const v = document.getElementById('cowrite').value; return v; })()")
    assert last.startswith("ab") and last.endswith(" cd") and len(last) > 5
    assert picked  # the list was there to tap


def test_nothing_from_a_link_or_the_vocabulary_runs(browser, tmp_path):
    chars = sorted(set("<img src=x onerror=alert(1)>\"' \n!</script>"))
    assert {"<", ">", '"'} <= set(chars)
    page, rounded = page_for(tmp_path, make_checkpoint(tmp_path / "m.pt", chars=chars))
    browser.call("Page.addScriptToEvaluateOnNewDocument", session=True,
                 source="window.alerted = 0; window.alert = () => { window.alerted += 1; };")
    prime = "<img src=x onerror=alert(1)>"
    open_page(browser, page)
    before = browser.js("document.getElementsByTagName('*').length")
    browser.js(f"location.hash = {json.dumps('prime=' + quote(prime) + '&temp=0&length=300&run')}")
    wait_for(browser, "document.body.dataset.done")
    assert browser.js("document.getElementsByTagName('*').length") == before
    assert browser.js("document.getElementsByTagName('img').length") == 0
    assert browser.js("window.alerted") == 0
    assert not [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"]
    text = browser.js(OUTPUT)
    assert text == charrnn.load(rounded).generate(prime=prime, length=300, temperature=0)
    assert browser.js("document.getElementById('prime').value") == prime  # shown as typed, as text


def test_cowrite_on_a_record_model_continues_the_current_record(browser, tmp_path):
    chars = sorted(set("".join(NAMES)))
    page, rounded = page_for(tmp_path, make_checkpoint(tmp_path / "r.pt", chars=chars, records=NAMES, scale=4.0))
    open_page(browser, page, "mode=cowrite&text=" + quote("anna\nbob\nca"))
    browser.click("#cowrite")
    browser.key("End", 35)
    browser.js("const t = document.getElementById('cowrite'); t.setSelectionRange(t.value.length, t.value.length)")
    browser.click("#suggest")
    first = wait_for(browser, "document.querySelectorAll('#suggestions button').length && "
                              "document.querySelector('#suggestions button').textContent")
    # The likeliest continuation of the record "ca", read from START; it stops at END.
    greedy = charrnn.load(rounded).generate(prime="ca", n=1, length=60, temperature=0)[0]
    assert "ca" + first == greedy[:len(first) + 2] and "\n" not in first


def test_a_link_runs_a_sample_for_dump_dom(tmp_path):
    """The shareable link, read by a plain `chromium --dump-dom` (no driver): its sample is in the DOM."""
    page, rounded = page_for(tmp_path, make_checkpoint(tmp_path / "m.pt"))
    url = page.resolve().as_uri() + "#prime=ROMEO:&temp=0&length=150&seed=1&run"
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}",
               "--virtual-time-budget=10000", "--dump-dom", url]
    want = charrnn.load(rounded).generate(prime="ROMEO:", length=150, temperature=0)
    # Up to three dumps: Chromium's virtual time can run out while the page's main thread waits
    # on off-thread work (gunzip, WebAssembly compile), dumping the DOM before the sample is in
    # it; seen once in 2026-12-07's clean-clone runs, under load, and not reproduced alone.
    for _ in range(3):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        found = re.search(r'<span class="prime" id="output-prime">(.*?)</span><span id="output-text">(.*?)</span>',
                          done.stdout, re.S)
        assert found, done.stdout[-2000:]
        text = html.unescape(found.group(1) + found.group(2))
        if text:
            break
    assert text == want
