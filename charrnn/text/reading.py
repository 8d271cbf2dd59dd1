"""Reading a corpus: opening files and standard input with one-line errors, reading in chunks,
hashing and spooling what can be read only once, the decoding rule, and walking the paths of
a corpus of several files into a deterministic order."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import CharrnnError
from ..progress import byte_bar

# Each chunk becomes several tensors of a few bytes per character, so the chunk size sets the
# encoder's peak memory; 1 MiB is past the size where per-chunk overhead shows. See
# docs/experiments.md, "Token encoding chunks".
CHUNK_BYTES = 1 << 20


@contextlib.contextmanager
def open_corpus(path: str) -> Iterator[BinaryIO]:
    """The corpus file (or stdin for '-') opened for binary reads, with one-line errors."""
    if path == "-":
        if sys.stdin is None:  # Python's stdin is None when fd 0 was closed (`0<&-`)
            raise CharrnnError("cannot read standard input: it is closed")
        yield sys.stdin.buffer
        return
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
        f = open(p, "rb")
    except OSError as e:
        raise CharrnnError(f"{path}: {e.strerror}") from None
    with f:
        yield f


def read_chunks(f: BinaryIO, name: str, chunk_bytes: int) -> Iterator[bytes]:
    while True:
        try:
            chunk = f.read(chunk_bytes)
        except (OSError, ValueError) as e:
            raise CharrnnError(f"cannot read {name}: {e}") from None
        if not chunk:
            return
        yield chunk


def file_size(f: BinaryIO) -> int | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode):
            return st.st_size
    return None


def hash_stream(f: BinaryIO, name: str, chunk_bytes: int = CHUNK_BYTES, quiet: bool = True,
                copy_to: BinaryIO | None = None) -> str:
    """sha256 of a stream read to its end, copying it to `copy_to` on the way if given."""
    digest = hashlib.sha256()
    desc = "hashing" if copy_to is None else f"reading {name}"
    with byte_bar(file_size(f), desc, quiet) as bar:
        for chunk in read_chunks(f, name, chunk_bytes):
            digest.update(chunk)
            if copy_to is not None:
                copy_to.write(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def spool(src: BinaryIO, folder: Path, name: str, chunk_bytes: int = CHUNK_BYTES,
          quiet: bool = True) -> tuple[Path, str]:
    """Copies a stream that can be read only once to a temporary file in `folder`, hashing it."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".spool-", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as out:
            sha = hash_stream(src, name, chunk_bytes, quiet, copy_to=out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp), sha


def decoding_codec(encoding: str) -> str:
    """The codec that reads a text in `encoding`: for UTF-8, utf-8-sig, which drops a byte-order
    mark at the very start (as files saved on Windows often begin) and keeps U+FEFF anywhere
    else as the character it is. Unknown and non-text encodings are CharrnnErrors."""
    codec = codec_name(encoding)
    return "utf-8-sig" if codec == "utf-8" else codec


def codec_name(encoding: str) -> str:
    """The codec's canonical name; only codecs between bytes and text are encodings here."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise CharrnnError(f"unknown encoding {encoding!r}") from None
    try:
        "".encode(encoding)  # raises LookupError for bytes-to-bytes codecs such as hex or zlib
    except LookupError:
        raise CharrnnError(f"--encoding {encoding!r} is not a text encoding") from None
    return name


def corpus_files(paths: Sequence[str]) -> list[str]:
    """The files that a corpus's paths name, in a deterministic order: every path sorted (by its
    components, as a recursive walk in sorted order meets them), a directory contributing its
    files recursively, hidden files and folders (names starting with '.') skipped. A path
    given twice counts once; '-' (stdin) may only be given alone. A broken symlink, or anything
    in a directory that is not a regular file, is a one-line error naming it."""
    if "-" in paths:
        if len(paths) != 1:
            raise CharrnnError("- (standard input) cannot be combined with other corpus paths")
        return ["-"]
    if not paths:
        raise CharrnnError("no corpus given")
    found: dict[str, str] = {}
    for path in paths:
        mode = _stat_mode(path)
        if stat.S_ISDIR(mode):
            files = list(_walk(path, set()))
            if not files:
                raise CharrnnError(f"{path}: no files in this directory (names starting with '.' are skipped)")
        else:
            files = [path]  # a pipe or `<(...)` given by name is read like a file
        for f in files:
            found.setdefault(os.path.normpath(f), f)
    return [found[k] for k in sorted(found, key=lambda k: Path(k).parts)]


def _stat_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        why = "a broken symlink" if os.path.islink(path) else "no such file or directory"
        raise CharrnnError(f"{path}: {why}") from None
    except OSError as e:
        raise CharrnnError(f"{path}: {e.strerror}") from None


def _walk(folder: str, seen: set[tuple[int, int]]) -> Iterator[str]:
    """The regular files under `folder`, sorted by name at each level, hidden ones skipped;
    a symlinked folder is followed unless it leads back into one being walked (a loop)."""
    st = os.stat(folder)
    here = (st.st_dev, st.st_ino)
    if here in seen:
        return
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise CharrnnError(f"{folder}: {e.strerror}") from None
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        mode = _stat_mode(path)
        if stat.S_ISDIR(mode):
            yield from _walk(path, seen | {here})
        elif stat.S_ISREG(mode):
            yield path
        else:
            raise CharrnnError(f"{path}: not a regular file")
