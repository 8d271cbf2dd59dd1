"""Atomic file writes: a crash mid-write leaves the previous file whole."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def made_folder(folder: Path) -> Iterator[Path]:
    """Creates `folder` and its missing parents; if the block fails, removes the ones it
    created (when empty), so a failed start leaves no stray folders behind."""
    folder = Path(folder)
    created = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for made in created:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()
        raise


@contextlib.contextmanager
def atomic_path(path: Path, sync: bool = False) -> Iterator[Path]:
    """Yields a temp path in the target's folder to write; on success it replaces `path`
    atomically. On any error the temp file is removed and `path` is untouched.

    With `sync` the written file is fsynced before the replace and the folder after, for
    files written by code that has already closed them (a power cut then cannot leave a
    full-length file of zeros under `path`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        chmod_as_created(tmp)
        yield Path(tmp)
        if sync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Yields a temp file in the target's folder; on success it replaces `path` atomically.

    The temp file is flushed and fsynced (through the descriptor that wrote it, which is
    the one a delayed write error is reported to) before `os.replace`, and the folder is
    fsynced after, so that neither a crash nor a power cut can leave a partial file under
    `path`. On any error the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    with atomic_path(path) as tmp, os.fdopen(os.open(tmp, os.O_WRONLY), "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)


def chmod_as_created(path: str | Path) -> None:
    """mkstemp makes files 0600; give them the mode open() would have."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def why_write_failed(e: OSError) -> str:
    """Why a write failed, for a one-line message: "the disk is full" for ENOSPC, else the
    system's own words. Checkpoints and the token cache report a failed write alike."""
    return "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    with atomic_writer(path) as f:
        write(f)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
