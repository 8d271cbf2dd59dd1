"""The built-in corpora: built offline from this Python, or downloaded and checked."""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import CharrnnError
from ..fileio import atomic_write_bytes

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
CORPORA = ("python-stdlib", "tinyshakespeare")


def python_stdlib(max_bytes: int | None = None) -> bytes:
    """The running interpreter's standard library sources, concatenated in sorted path order.

    Third-party packages and caches are skipped so that the result depends only on the
    Python version. Files that are not valid UTF-8 are skipped too.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "__pycache__"}
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    files.sort(key=lambda f: f.relative_to(root).as_posix())
    out = bytearray()
    for f in files:
        try:
            data = f.read_bytes()
            data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        out += data
        if not data.endswith(b"\n"):
            out += b"\n"
        if max_bytes is not None and len(out) >= max_bytes:
            break
    if not out:
        raise CharrnnError(f"no Python sources found under {root}")
    if max_bytes is not None:
        # Cut on a character boundary so the text stays valid UTF-8.
        out = bytearray(bytes(out[:max_bytes]).decode("utf-8", "ignore").encode("utf-8"))
    return bytes(out)


def download(url: str, sha256: str, timeout: float = 60.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise CharrnnError(f"cannot download {url}: {reason}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise CharrnnError(f"{url}: sha256 {digest} does not match the expected {sha256}")
    return data


def build(name: str, max_bytes: int | None = None, url: str | None = None) -> bytes:
    if name == "python-stdlib":
        return python_stdlib(max_bytes)
    if name == "tinyshakespeare":
        data = download(url or TINYSHAKESPEARE_URL, TINYSHAKESPEARE_SHA256)
        return data[:max_bytes] if max_bytes is not None else data
    raise CharrnnError(f"unknown corpus {name!r}; choose from {', '.join(CORPORA)}")


def write_output(data: bytes, output: str) -> None:
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        try:
            atomic_write_bytes(Path(output), data)
        except OSError as e:
            raise CharrnnError(f"cannot write {output}: {e.strerror or e}") from None


def write_corpus(name: str, output: str, max_bytes: int | None = None, url: str | None = None) -> None:
    """Builds a ready-made corpus and writes it to `output` ('-': stdout)."""
    write_output(build(name, max_bytes=max_bytes, url=url), output)
