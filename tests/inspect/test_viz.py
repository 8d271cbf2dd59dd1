"""`charrnn viz`: the page is built from any checkpoint, and it works in a real browser.

The browser tests drive headless Chromium through the DevTools protocol over a pipe (the
standard library only): they load the page from disk, click a character and a cell-search
result with real mouse events, press a key, and read the rendered page back (element
counts, computed colours, drawn curves, console errors), then save a screenshot. They skip,
with the reason, where Chromium is absent; .ci/run installs it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from charrnn import checkpoint
from charrnn.inspect.viz import ALPHABET, LEVELS, Feature, quantise

from ..browser import Chromium, needs_browser, open_page
from ..helpers import TINY, invoke


@pytest.fixture(scope="module")
def page(tmp_path_factory, trained_dir, corpus_file) -> Path:
    out = tmp_path_factory.mktemp("viz") / "viz.html"
    text = corpus_file.read_text()[:1500]
    result = invoke("viz", "-", "--checkpoint", str(trained_dir), "-o", str(out), "--feature", "vowel=[aeiou]",
                    input=text)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr and "1,500 characters" in result.stderr
    return out


@pytest.fixture(scope="module")
def record_page(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("viz_records")
    names = folder / "names.txt"
    names.write_text("\n".join(["anna", "bob", "carla", "dave", "emma", "finn", "greta", "hugo"] * 30) + "\n")
    trained = invoke("train", str(names), "--records", "--checkpoint-dir", str(folder / "ck"), "--max-steps", "3",
                     "-q", *TINY)
    assert trained.exit_code == 0, trained.output
    return names


# ---- the page, built -------------------------------------------------------------------------
def page_data(path: Path) -> dict:
    html = path.read_text(encoding="utf-8")
    start = html.index('<script id="data" type="application/json">') + len('<script id="data" type="application/json">')
    return json.loads(html[start:html.index("</script>", start)])


def test_page_is_self_contained(page):
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "<link" not in html and "src=" not in html and "@import" not in html and "url(" not in html
    data = page_data(page)
    assert len(data["text"]) == len(data["loss"]) == len(data["top_ids"]) == 1500
    assert data["loss"][0] is None and all(v is not None for v in data["loss"][1:])  # a stream: the first unpredicted
    assert [row["step"] for row in data["metrics"]] == [50, 100, 150]
    assert {row["feature"] for row in data["search"]} >= {"inside quotes", "inside brackets", "vowel"}
    assert data["kinds"] == ["c", "h"] and len(data["layers"]) == 1
    assert len(data["layers"][0]["c"]["data"]) == 1500 * data["hidden"]
    card = dict(data["card"])
    assert card["cell"] == "LSTM" and card["steps"] == "150" and "32 units" in card["width"]


def test_quantised_activations_round_trip():
    values = torch.randn(300, 7) * torch.tensor([0.01, 1, 5, 10, 0.5, 2, 3])
    values[:, 6] = 0.0
    data, scale = quantise(values)
    assert len(data) == 300 * 7 and set(data) <= set(ALPHABET)
    levels = torch.tensor([ALPHABET.index(c) for c in data], dtype=torch.float32).view(7, 300).t()
    back = (levels / ((LEVELS - 1) / 2) - 1) * torch.tensor(scale)
    assert ((back - values).abs() <= torch.tensor(scale) / (LEVELS - 1) + 1e-4).all()  # half a level's step
    assert scale[6] == 1.0 and (back[:, 6] == 0).all()  # a silent unit stays 0


def test_text_that_would_end_the_script_is_escaped(tmp_path, trained_dir):
    out = tmp_path / "v.html"
    text = "the cat </script><!-- sat on -->"
    vocab = checkpoint.load(trained_dir).vocab
    result = invoke("viz", "-", "--checkpoint", str(trained_dir), "-o", str(out), "--skip-unknown", input=text)
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert html.count("</script>") == 2  # the two scripts' own ends
    assert page_data(out)["text"] == "".join(c for c in text if c in vocab)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_viz_of_every_cell_from_its_own_sample(tmp_path, corpus_file, cell):
    ck = tmp_path / "ck"
    trained = invoke("train", str(corpus_file), "--checkpoint-dir", str(ck), "--max-steps", "3", "--cell", cell,
                     "--layers", "2", "--hidden", "16", "--batch-size", "4", "--seq-len", "16", "-q")
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "v.html"
    result = invoke("viz", "--checkpoint", str(ck), "-o", str(out), "--max-chars", "300", "--gates", "--seed", "3")
    assert result.exit_code == 0, result.output
    data = page_data(out)
    assert len(data["text"]) == 300 and len(data["layers"]) == 2
    assert data["kinds"] == {"lstm": ["c", "h", "i", "f", "g", "o"], "gru": ["h", "r", "z", "n"], "rnn": ["h"]}[cell]
    again = tmp_path / "again.html"
    assert invoke("viz", "--checkpoint", str(ck), "-o", str(again), "--max-chars", "300", "--seed", "3").exit_code == 0
    assert page_data(again)["text"] == data["text"]  # seeded


def test_viz_of_a_record_model(tmp_path, record_page):
    names, ck = record_page, record_page.parent / "ck"
    out = tmp_path / "v.html"
    result = invoke("viz", str(names), "--checkpoint", str(ck), "-o", str(out), "--max-chars", "40")
    assert result.exit_code == 0, result.output
    data = page_data(out)
    assert data["text"] == names.read_text()[:40]
    assert all(v is not None for v in data["loss"])  # every record is read from MARKER, a newline is END
    assert "END" in data["labels"]
    newline = data["text"].index("\n")
    assert data["labels"][data["top_ids"][newline][data["top_hit"][newline]]] == "END" or data["top_hit"][newline] == -1
    sampled = tmp_path / "s.html"
    assert invoke("viz", "--checkpoint", str(ck), "-o", str(sampled), "--max-chars", "60").exit_code == 0
    assert len(page_data(sampled)["text"]) == 60


def test_viz_of_the_oldest_checkpoint_format(tmp_path):
    fixture = Path(__file__).resolve().parents[1] / "fixtures"
    out = tmp_path / "v.html"
    result = invoke("viz", str(fixture / "tiny_corpus.txt"), "--checkpoint", str(fixture / "tiny_run"), "-o",
                    str(out), "--max-chars", "300")
    assert result.exit_code == 0, result.output
    assert len(page_data(out)["text"]) == 300


def test_viz_errors_are_one_line(tmp_path, trained_dir):
    bad = invoke("viz", "-", "--checkpoint", str(trained_dir), "-o", str(tmp_path / "v.html"), input="the cat ZZZ")
    assert bad.exit_code == 1 and "outside the model's vocabulary" in bad.stderr and "--skip-unknown" in bad.stderr
    regex = invoke("viz", "--checkpoint", str(trained_dir), "--feature", "x=[", "-o", str(tmp_path / "v.html"))
    assert regex.exit_code == 2 and "not a regular expression" in regex.stderr
    shape = invoke("viz", "--checkpoint", str(trained_dir), "--feature", "novalue", "-o", str(tmp_path / "v.html"))
    assert shape.exit_code == 2 and "NAME=REGEX" in shape.stderr
    missing = invoke("viz", str(tmp_path / "nope.txt"), "--checkpoint", str(trained_dir))
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    assert Feature.parse("digits=[0-9]+") == Feature("digits", "[0-9]+")


def test_viz_to_stdout(trained_dir):
    result = invoke("viz", "--checkpoint", str(trained_dir), "-o", "-", "--max-chars", "50", "-q")
    assert result.exit_code == 0 and result.stdout.startswith("<!DOCTYPE html>") and result.stderr == ""


# ---- the page, in a real browser -------------------------------------------------------------
COLOURS = "Array.from(document.querySelectorAll('#text .ch'), s => getComputedStyle(s).backgroundColor)"


@needs_browser
def test_page_in_a_real_browser(page, record_page, tmp_path):
    browser = Chromium(tmp_path / "profile")
    try:
        open_page(browser, page)
        data = page_data(page)
        # One element per character, each painted by its surprise.
        assert browser.js("document.querySelectorAll('#text .ch').length") == len(data["text"]) == 1500
        surprise = browser.js(COLOURS)
        assert len(set(surprise)) > 10 and "rgba(0, 0, 0, 0)" not in surprise
        assert browser.js("document.getElementById('legend-note').textContent").startswith("surprise")

        # Hovering shows a character; a click pins it and shows the top 5 guesses and its loss.
        assert browser.js("document.getElementById('info-body').hidden")
        browser.hover("#text .ch:nth-child(12)")
        assert browser.js("document.getElementById('info-pos').textContent").endswith("character 11")
        browser.click("#text .ch:nth-child(40)")
        shown = browser.js("""(() => {
            const body = document.getElementById('info-body'), r = body.getBoundingClientRect();
            return {visible: !body.hidden && r.height > 0, guesses: document.querySelectorAll('#top5 .guess').length,
                    bars: Array.from(document.querySelectorAll('#top5 .barfill'), b => b.getBoundingClientRect().width),
                    loss: document.getElementById('info-loss').textContent,
                    pinned: document.querySelectorAll('#text .sel').length,
                    sel: Array.from(document.querySelectorAll('#text .ch')).indexOf(document.querySelector('.sel'))};
        })()""")
        assert shown["visible"] and shown["guesses"] == 5 and shown["pinned"] == 1 and shown["sel"] == 39
        assert shown["bars"][0] > 0 and shown["bars"] == sorted(shown["bars"], reverse=True)
        assert shown["loss"].startswith(f"loss {data['loss'][39]:.3f} nats")

        # A cell-search result, one click away: the text is recoloured by that unit.
        first = next(f["units"][0] for f in data["search"] if f["units"])
        browser.click(f".unitbtn[data-layer='{first['layer']}'][data-kind='{first['kind']}']"
                      f"[data-unit='{first['unit']}']")
        neuron = browser.js(COLOURS)
        assert browser.js("document.getElementById('mode-neuron').getAttribute('aria-pressed')") == "true"
        assert browser.js("document.getElementById('unit').value") == str(first["unit"])
        changed = sum(a != b for a, b in zip(surprise, neuron))
        assert changed > 1000, changed
        assert "unit" in browser.js("document.getElementById('info-act').textContent")

        # A key steps to the next unit, which colours the text differently.
        browser.js("document.activeElement.blur()")
        browser.key("ArrowRight", 39)
        assert browser.js("document.getElementById('unit').value") == str((first["unit"] + 1) % data["hidden"])
        stepped = browser.js(COLOURS)
        assert stepped != neuron
        browser.key("ArrowLeft", 37)
        assert browser.js(COLOURS) == neuron

        # The curves: a line per series in each chart, with labelled axes.
        curves = browser.js("""Array.from(document.querySelectorAll('#curves svg'), svg => ({
            lines: Array.from(svg.querySelectorAll('path.line'), p => p.getBBox().width),
            points: svg.querySelectorAll('circle').length,
            labels: Array.from(svg.querySelectorAll('.xlabel, .ylabel'), t => t.textContent)}))""")
        assert len(curves) == 2
        for chart in curves:
            assert len(chart["lines"]) == 2 and all(w > 50 for w in chart["lines"]) and chart["points"] == 6
            assert chart["labels"][1] == "loss (nats/char)"
        assert curves[0]["labels"][0] == "step" and curves[1]["labels"][0].startswith("training time")
        assert browser.js("document.querySelectorAll('#card tr').length") >= 10

        assert browser.errors() == []
        shot = tmp_path / "viz.png"
        browser.js("window.scrollTo(0, 0)")
        browser.screenshot(shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        if os.environ.get("CHARRNN_VIZ_SCREENSHOT"):  # keep it, e.g. as a CI artifact
            shutil.copy(shot, os.environ["CHARRNN_VIZ_SCREENSHOT"])

        # A record model's page: a record's end is scored as END.
        records = tmp_path / "records.html"
        made = invoke("viz", str(record_page), "--checkpoint", str(record_page.parent / "ck"), "-o", str(records),
                      "--max-chars", "200")
        assert made.exit_code == 0, made.output
        open_page(browser, records)
        assert browser.js("document.querySelectorAll('#text .ch').length") == 200
        browser.click("#text .ch:nth-child(5)")  # the newline after "anna"
        assert browser.js("document.getElementById('info-pos').textContent") == "newline, character 4"
        guesses = browser.js("Array.from(document.querySelectorAll('#top5 .guess code'), c => c.textContent)")
        assert len(guesses) == 5 and browser.js("document.getElementById('info-loss').textContent").startswith("loss")
        assert browser.errors() == []
    finally:
        browser.close()
