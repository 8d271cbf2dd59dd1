"""Headless Chromium driven through the DevTools protocol on a pipe, with the standard library
only: the real browser the page tests (`charrnn viz`'s and `charrnn export`'s) click and type
in. The Network domain is on, so that a test sees every request a page makes."""

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

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome", "chrome")
                if shutil.which(name)), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium on PATH (apt-get install chromium; "
                                                           ".ci/run installs it)")


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
        for domain in ("Page", "Runtime", "Log", "Network"):
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


def open_page(browser: Chromium, path: Path, fragment: str = "") -> None:
    """Loads the page afresh (with `#fragment`) and waits until its model is loaded. Going
    through about:blank makes it a new document even when only the fragment differs."""
    for url in ("about:blank", path.resolve().as_uri() + (f"#{fragment}" if fragment else "")):
        browser.events = [e for e in browser.events if e.get("method") != "Page.loadEventFired"]
        browser.call("Page.navigate", session=True, url=url)
        browser.wait_for_event("Page.loadEventFired")
    deadline = time.monotonic() + 30
    while browser.js("document.body && document.body.dataset.ready") != "1":
        assert time.monotonic() < deadline, f"the page never got ready: {browser.errors()}"
        time.sleep(0.02)


def wait_for(browser: Chromium, expression: str, timeout: float = 30):
    """Polls a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = browser.js(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {expression}: {browser.errors()}"
        time.sleep(0.02)


def requests(browser: Chromium) -> list[str]:
    """The URLs of every request the page has made since the browser started."""
    browser.js("0")
    return [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
