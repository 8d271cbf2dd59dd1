"""Headless Firefox driven through WebDriver BiDi, with the standard library only: a second
engine (Gecko, SpiderMonkey) for the exported page, which must work from disk in every browser.

Firefox speaks BiDi on a WebSocket (`--remote-debugging-port`), so this module carries the small
WebSocket client it needs (RFC 6455: one handshake, masked text frames out, frames in)."""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

FIREFOX = next((shutil.which(name) for name in ("firefox-esr", "firefox") if shutil.which(name)), None)
needs_firefox = pytest.mark.skipif(FIREFOX is None, reason="no Firefox on PATH (apt-get install firefox-esr; "
                                                           ".ci/run installs it)")
TAB = "\ue004"  # WebDriver's key value for Tab
PREFS = {  # a quiet profile: no first-run pages, no reports, no update checks
    "browser.shell.checkDefaultBrowser": False, "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False, "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True, "browser.aboutwelcome.enabled": False,
}


class WebSocket:
    """A client WebSocket for text messages (RFC 6455), enough for a local BiDi endpoint."""

    def __init__(self, url: str, timeout: float = 30):
        host, port, path = re.fullmatch(r"ws://([^:/]+):(\d+)(/.*)?", url).groups()
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"WebSocket handshake refused: {head[:200]!r}")
        self.sock.settimeout(None)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the WebSocket closed")
        return chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._recv()
        taken, self.buffer = self.buffer[:n], self.buffer[n:]
        return taken

    def _send_frame(self, opcode: int, data: bytes) -> None:
        n = len(data)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = (int.from_bytes(data, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._take(2)
            n = second & 0x7F
            if n == 126:
                n = int.from_bytes(self._take(2), "big")
            elif n == 127:
                n = int.from_bytes(self._take(8), "big")
            mask = self._take(4) if second & 0x80 else None
            payload = self._take(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the WebSocket closed")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if first & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class Firefox:
    """Headless Firefox with one BiDi session on its first tab."""

    def __init__(self, profile: Path, width: int = 1200, height: int = 900):
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n"
                                                 for k, v in PREFS.items()))
        self.proc = subprocess.Popen(
            [FIREFOX, "--headless", "--no-remote", "--profile", str(profile), "--remote-debugging-port", "0",
             "--width", str(width), "--height", str(height), "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1"})
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        try:
            self.socket = WebSocket(self._bidi_url() + "/session")
            threading.Thread(target=self._read, daemon=True).start()
            # A first start on a busy machine is slow.
            self.capabilities = self.call("session.new", timeout=180, capabilities={})["capabilities"]
            self.context = self.call("browsingContext.getTree")["contexts"][0]["context"]
            self.call("session.subscribe", events=["log.entryAdded", "network.beforeRequestSent"])
        except BaseException:  # no Firefox left running after a failed start
            self.proc.kill()
            self.proc.wait()
            raise

    def _bidi_url(self) -> str:
        """Firefox prints its BiDi address on stderr; the rest of stderr is drained unread."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            found = re.search(r"WebDriver BiDi listening on (ws://\S+)", line)
            if found:
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                return found.group(1)
        raise RuntimeError("Firefox did not open its WebDriver BiDi port")

    def _read(self) -> None:
        while True:
            try:
                self.messages.put(json.loads(self.socket.receive()))
            except (ConnectionError, OSError):
                self.messages.put(None)
                return

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError("Firefox closed the WebSocket")
            if reply.get("id") == self.next_id:
                if reply.get("type") == "error":
                    raise RuntimeError(f"{method}: {reply.get('error')}: {reply.get('message')}")
                return reply["result"]
            self.events.append(reply)

    def js(self, expression: str):
        """The value of a JavaScript expression (awaited where it is a promise), through JSON."""
        wrapped = f"Promise.resolve({expression}).then((v) => JSON.stringify(v === undefined ? null : v))"
        result = self.call("script.evaluate", expression=wrapped, target={"context": self.context},
                           awaitPromise=True, resultOwnership="none")
        if result["type"] == "exception":
            raise AssertionError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return json.loads(result["result"]["value"])

    def open(self, url: str) -> None:
        self.call("browsingContext.navigate", context=self.context, url=url, wait="complete")

    def open_page(self, path: Path, fragment: str = "") -> None:
        """Loads an exported page afresh (through about:blank, so that a new fragment makes a new
        document) and waits until its model is loaded."""
        self.open("about:blank")
        self.open(path.resolve().as_uri() + (f"#{fragment}" if fragment else ""))
        deadline = time.monotonic() + 60
        while self.js("document.body && document.body.dataset.ready") != "1":
            assert time.monotonic() < deadline, f"the page never got ready: {self.errors()}"
            time.sleep(0.02)

    def click(self, selector: str) -> None:
        """A real left click at the middle of the element."""
        x, y = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                       f" e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();"
                       f" return [Math.round(r.x + r.width / 2), Math.round(r.y + r.height / 2)]; }})()")
        self._act({"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                   "actions": [{"type": "pointerMove", "x": x, "y": y}, {"type": "pointerDown", "button": 0},
                               {"type": "pointerUp", "button": 0}]})

    def type(self, text: str) -> None:
        """Real key presses, one character (or WebDriver key value, e.g. TAB) at a time."""
        keys = [a for c in text for a in ({"type": "keyDown", "value": c}, {"type": "keyUp", "value": c})]
        self._act({"type": "key", "id": "keyboard", "actions": keys})

    def _act(self, source: dict) -> None:
        self.call("input.performActions", context=self.context, actions=[source])

    def version(self) -> str:
        """The browser's name and version, as its session reports them."""
        return f"{self.capabilities['browserName']}/{self.capabilities['browserVersion']}"

    def errors(self) -> list[str]:
        """What the console and the page reported as errors."""
        self.js("0")  # collect the events sent so far
        return [e["params"].get("text") or json.dumps(e["params"])[:500] for e in self.events
                if e.get("method") == "log.entryAdded" and e["params"].get("level") == "error"]

    def requests(self) -> list[str]:
        self.js("0")
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "network.beforeRequestSent"]

    def close(self) -> None:
        try:
            self.call("browser.close", timeout=10)
        except Exception:
            pass
        self.socket.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
