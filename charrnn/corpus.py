"""Where training text comes from: files, stdin, and the built-in corpora."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from .errors import CharrnnError
from .fileio import atomic_write_bytes

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
CORPORA = ("python-stdlib", "tinyshakespeare")


def read_bytes(path: str) -> bytes:
    """The raw bytes of a corpus path, or of stdin for '-', with one-line errors."""
    if path == "-":
        if sys.stdin is None:  # Python's stdin is None when fd 0 was closed (`0<&-`)
            raise CharrnnError("cannot read standard input: it is closed")
        try:
            return sys.stdin.buffer.read()
        except (OSError, ValueError, AttributeError) as e:
            raise CharrnnError(f"cannot read standard input: {e}") from None
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise CharrnnError(f"{path}: no such file") from None
    except OSError as e:
        raise CharrnnError(f"{path}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise CharrnnError(f"{path}: is a directory, not a text file")
    try:
        with open(p, "rb") as f:
            return f.read()
    except OSError as e:
        raise CharrnnError(f"{path}: {e.strerror}") from None


def decode(data: bytes, encoding: str, name: str) -> str:
    try:
        return data.decode(encoding)
    except LookupError:
        raise CharrnnError(f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as e:
        raise CharrnnError(
            f"{name}: byte 0x{data[e.start]:02x} at offset {e.start} is not valid {encoding} "
            f"(use --encoding to read it as another encoding)"
        ) from None


def read_text(path: str, encoding: str = "utf-8") -> str:
    name = "<stdin>" if path == "-" else path
    text = decode(read_bytes(path), encoding, name)
    if not text:
        raise CharrnnError(f"{name}: the corpus is empty")
    return text


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


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
        atomic_write_bytes(Path(output), data)
