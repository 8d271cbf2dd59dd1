"""Token files: a corpus's ids as a flat little-endian file of the narrowest width that holds the
vocabulary (uint8, uint16 or uint32), mapped into memory, checked, and rewritten at another
width or in another vocabulary's ids."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import torch

from ..errors import CharrnnError
from ..fileio import atomic_path, why_write_failed
from .reading import CHUNK_BYTES

# On-disk widths. torch has no unsigned 16- or 32-bit arithmetic on every supported
# version, so those files are mapped as signed and widened by `as_ids`.
WIDTHS = {"uint8": (torch.uint8, 1), "uint16": (torch.int16, 2), "uint32": (torch.int32, 4)}


def storage_name(vocab_size: int) -> str:
    if vocab_size <= 1 << 8:
        return "uint8"
    if vocab_size <= 1 << 16:
        return "uint16"
    return "uint32"


def as_ids(tokens: torch.Tensor) -> torch.Tensor:
    """int64 ids from stored tokens (a uint16 file is mapped as int16, so undo the sign)."""
    ids = tokens.long()
    return ids & 0xFFFF if tokens.dtype == torch.int16 else ids


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())


def map_tokens(path: Path, length: int, vocab_size: int) -> torch.Tensor:
    """The token file as a read-only, lazily paged tensor."""
    dtype, width = WIDTHS[storage_name(vocab_size)]
    if length == 0:
        return torch.empty(0, dtype=dtype)
    # shared=False maps the file copy-on-write: nothing we do can change the cache.
    return torch.from_file(str(path), shared=False, size=length, dtype=dtype)


def convert_file(path: Path, length: int, old: str, new: str, mapping: torch.Tensor | None = None) -> None:
    """Rewrites a token file in place at another width, optionally renumbering its ids."""
    with atomic_path(path) as tmp:
        rewrite(path, tmp, length, old, new, mapping)


def rewrite(src_path: Path, dst_path: Path, length: int, old: str, new: str, mapping: torch.Tensor | None = None,
             chunk: int = CHUNK_BYTES) -> None:
    """Copies `length` ids from one token file to another of width `new`, renumbered by `mapping`.

    Plain reads and writes rather than a memory map: mapped pages, once read or dirtied,
    would count against the process's memory for the whole pass.
    """
    with open(dst_path, "wb") as dst:
        copy_ids(src_path, dst, length, old, new, mapping, chunk)


def copy_ids(src_path: Path, dst: BinaryIO, length: int, old: str, new: str, mapping: torch.Tensor | None = None,
              chunk: int = CHUNK_BYTES) -> None:
    """`_rewrite` into an open file, at its current position."""
    old_dtype, old_width = WIDTHS[old]
    new_dtype, _ = WIDTHS[new]
    with open(src_path, "rb") as src:
        remaining = length
        while remaining:
            n = min(remaining, chunk)
            buf = bytearray(src.read(n * old_width))
            ids = as_ids(torch.frombuffer(buf, dtype=old_dtype))
            if mapping is not None:
                ids = mapping[ids]
            dst.write(tensor_bytes(ids.to(new_dtype)))
            remaining -= n


def ids_fit(tokens: torch.Tensor, vocab_size: int, chunk: int = 1 << 22) -> bool:
    """Whether every stored id is below `vocab_size`.

    A file of the right length can still hold damaged bytes, and an id past the vocabulary
    would fail only when its batch reaches the embedding, mid-run. The ids are read at their
    stored width, without an int64 copy, so the pass takes a fraction of the corpus's hashing.
    """
    for start in range(0, len(tokens), chunk):
        part = tokens[start:start + chunk]
        if part.dtype == torch.int16:
            # uint16 on disk, mapped as int16: flipping the sign bit keeps the unsigned order,
            # shifted down by 32768.
            low, high = (int(v) + 0x8000 for v in torch.aminmax(part ^ -0x8000))
        else:
            low, high = (int(v) for v in torch.aminmax(part))
        if low < 0 or high >= vocab_size:
            return False
    return True


@contextlib.contextmanager
def writing_tokens(folder: Path | None) -> Iterator[None]:
    """Reading errors are already one-line CharrnnErrors; what is left is writing tokens."""
    try:
        yield
    except OSError as e:
        why = why_write_failed(e)
        where = f"in {folder}" if folder is not None else "in the temporary folder ($TMPDIR)"
        hint = "; choose another place with --cache-dir" if folder is not None else ""
        raise CharrnnError(f"cannot write encoded tokens {where}: {why}{hint}") from None
