"""`charrnn viz`: the page is built from any checkpoint, and it works in a real browser.

The browser tests drive headless Chromium through the DevTools protocol over a pipe (the
standard library only): they load the page from disk, click a character and a cell-search
result with real mouse events, press a key, and read the rendered page back (element
counts, computed colours, drawn curves, console errors), then save a screenshot. They skip,
with the reason, where Chromium is absent; .ci/run installs it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli import cli
from charrnn.inspect.viz import ALPHABET, LEVELS, Feature, quantise

from ..conftest import TINY

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome", "chrome")
                if shutil.which(name)), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium on PATH (apt-get install chromium; "
                                                           ".ci/run installs it)")


def invoke(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


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
class Chromium:
    """Headless Chromium driven through the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, profile: Path, width: int = 1200, height: int = 900):
        # Above 10, so that dup2 onto 3 and 4 in the child always makes a new, inheritable descriptor.
        to_browser_r, self._to_browser, self._from_browser, from_browser_w = (
            _high(fd) for fd in (*os.pipe(), *os.pipe()))

        def wire():  # the child's fd 3 reads our commands, fd 4 carries its answers
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False,
            preexec_fn=wire)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                self.messages.put(None)
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                self.messages.put(json.loads(message))

    def call(self, method: str, session: bool = False, timeout: float = 30, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError("Chromium closed the pipe")
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if event is None:
                raise RuntimeError("Chromium closed the pipe")
            self.events.append(event)
            if event.get("method") == method:
                return event

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def centre(self, selector: str) -> list[float]:
        """The middle of the element in the viewport, scrolled into view."""
        return self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                       f" e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();"
                       f" return [r.x + r.width / 2, r.y + r.height / 2]; }})()")

    def hover(self, selector: str) -> None:
        x, y = self.centre(selector)
        self.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)

    def click(self, selector: str) -> None:
        """A real left click (press and release) at the middle of the element."""
        box = self.centre(selector)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left",
                      clickCount=0 if kind == "mouseMoved" else 1)

    def key(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", session=True, type=kind, key=key, code=key,
                      windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)

    def errors(self) -> list[str]:
        """What the console reported as errors, and uncaught exceptions."""
        self.js("0")  # collect the events sent so far
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(params["entry"].get("text", ""))
        return found

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)


def _high(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def open_page(browser: Chromium, path: Path) -> None:
    browser.call("Page.navigate", session=True, url=path.resolve().as_uri())
    browser.wait_for_event("Page.loadEventFired")
    deadline = time.monotonic() + 20
    while browser.js("document.body && document.body.dataset.ready") != "1":
        assert time.monotonic() < deadline, f"the page never got ready: {browser.errors()}"
        time.sleep(0.05)


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
