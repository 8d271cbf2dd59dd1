"""Corpora as token files: encoded once in a streaming pass, cached, memory-mapped.

A corpus is read in bounded chunks through an incremental decoder (so a multi-byte
character split across two chunks decodes whole, and a UTF-8 byte-order mark at the very
start is dropped rather than made a character), and each chunk's characters become
ids through a dense code-point lookup table, vectorised in torch. The ids go to a flat
little-endian file of the narrowest width that holds the vocabulary (uint8, uint16 or
uint32), which training maps into memory instead of reading: memory use stays flat
however large the corpus is.

The cache is keyed by the sha256 of the corpus's bytes, so a second run on the same
corpus only hashes it.

A corpus of several files (or directories of them) is several documents: each file is cached
on its own as above, and their ids, renumbered into the union of their vocabularies, are
joined into one more entry keyed by the files' sha256s in order (never by their names or
times), which records where each document starts (`EncodedCorpus.doc_starts`).
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import hashlib
import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import torch

from ..errors import CharrnnError
from ..fileio import atomic_path, atomic_write_bytes, made_folder, why_write_failed
from ..progress import byte_bar, count_bar
from .vocab import Vocabulary, escape_chars

CACHE_FOLDER = "cache"  # inside the checkpoint dir, unless --cache-dir says otherwise
# Each chunk becomes several tensors of a few bytes per character, so the chunk size sets the
# encoder's peak memory; 1 MiB is past the size where per-chunk overhead shows. See
# docs/experiments.md, "Token encoding chunks".
CHUNK_BYTES = 1 << 20
CACHE_FORMAT = "charrnn-tokens"
# 2: a leading UTF-8 byte-order mark is dropped. Entries are keyed by the corpus bytes, so a
# version 1 entry of a file that starts with one holds U+FEFF as a character: rebuilt.
CACHE_VERSION = 2
UNICODE_SIZE = 0x110000

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


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())


@dataclass
class EncodedCorpus:
    tokens: torch.Tensor  # 1-D, memory-mapped, ids in `vocab` order
    vocab: Vocabulary
    sha256: str  # of the corpus bytes; of several files, of their sha256s in order (`_joined_key`)
    path: Path  # the token file
    reused: bool  # found in the cache rather than encoded now
    doc_starts: torch.Tensor | None = None  # int64, each document's first position; None: one document
    documents: tuple[str, ...] = ()  # of several files, their names in order (not part of the cache entry)

    def __len__(self) -> int:
        return len(self.tokens)


def map_tokens(path: Path, length: int, vocab_size: int) -> torch.Tensor:
    """The token file as a read-only, lazily paged tensor."""
    dtype, width = WIDTHS[storage_name(vocab_size)]
    if length == 0:
        return torch.empty(0, dtype=dtype)
    # shared=False maps the file copy-on-write: nothing we do can change the cache.
    return torch.from_file(str(path), shared=False, size=length, dtype=dtype)


# ---- reading corpora -------------------------------------------------------------------------
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


# ---- the streaming encoder -------------------------------------------------------------------
@dataclass
class EncodeResult:
    vocab: Vocabulary
    length: int  # ids written
    unknown: list[str]  # characters outside a fixed vocabulary (sorted)
    skipped: int  # of those, how many occurrences were dropped


class StreamEncoder:
    """Characters to ids, chunk by chunk, into a binary file.

    With `vocab` the ids are that vocabulary's; without, the vocabulary is whatever the
    text holds: ids are handed out as new characters appear, and `finish` renumbers the
    file into sorted-character order (a pass over the ids, not the text, and none at all
    when every character already appeared in sorted order in the first chunk).
    """

    def __init__(self, out_path: Path, encoding: str, name: str, vocab: Vocabulary | None = None,
                 skip_unknown: bool = False):
        self.codec = _codec_name(encoding)
        self.decoder = codecs.getincrementaldecoder(decoding_codec(encoding))(errors="strict")
        self.encoding = encoding
        self.name = name
        self.out_path = out_path
        self.out = open(out_path, "wb")
        self.fixed = vocab is not None
        self.skip_unknown = skip_unknown
        self.table = torch.full((UNICODE_SIZE,), -1, dtype=torch.int32)
        self.code_points: list[int] = []  # by id
        if vocab is not None:
            self.code_points = [ord(c) for c in vocab.chars]
            self.table[torch.tensor(self.code_points, dtype=torch.long)] = torch.arange(len(vocab), dtype=torch.int32)
        self.storage = storage_name(max(1, len(self.code_points)))
        self.length = 0
        self.offset = 0  # bytes fed so far
        self.unknown: set[int] = set()
        self.skipped = 0

    def feed(self, data: bytes, final: bool = False) -> None:
        utf8 = self.codec in ("utf-8", "utf-8-sig")
        try:
            text = self.decoder.decode(data, final)
            held = self.decoder.getstate()[0]
            if final and utf8 and held:
                # utf-8-sig holds a text's first bytes while they may yet be a byte-order mark,
                # and at the end drops them unread (a text of b"\xef\xbb"): read them as UTF-8.
                codecs.utf_8_decode(held, "strict", True)
        except UnicodeDecodeError as e:
            # The decoder read the bytes it held from earlier calls, then `data`, less a leading
            # byte-order mark: whatever it began with, it ended where `data` ends.
            at = self.offset + len(data) - len(e.object) + e.start
            byte = e.object[e.start]
            starts_mid_char = at == 0 and 0x80 <= byte < 0xC0  # a continuation byte first
            ends_mid_char = e.reason == "unexpected end of data"
            if utf8 and (starts_mid_char or ends_mid_char):
                # `tail -c` and `head -c` cut by bytes: a cut through a multi-byte character is
                # far likelier than a text in another encoding that fails only at its very edge.
                raise CharrnnError(
                    f"{self.name} {'begins' if starts_mid_char else 'ends'} in the middle of a UTF-8 character "
                    f"(offset {at}): cut by bytes, as tail -c and head -c do? (tail -n and head -n cut at "
                    f"lines; --encoding reads another encoding)"
                ) from None
            raise CharrnnError(
                f"{self.name}: byte 0x{byte:02x} at offset {at} is not valid {self.encoding} "
                f"(use --encoding to read it as another encoding)"
            ) from None
        except UnicodeError as e:  # a codec's own complaint, e.g. UTF-16 without a byte-order mark
            raise CharrnnError(f"{self.name}: cannot be read as {self.encoding}: {e}") from None
        self.offset += len(data)
        if text:
            self._encode(text)

    def _encode(self, text: str) -> None:
        raw = bytearray(text.encode("utf-32-le", "surrogatepass"))
        points = torch.frombuffer(raw, dtype=torch.int32).long()
        ids = self.table[points]
        missing = ids < 0
        if missing.any():
            fresh = torch.unique(points[missing])
            if self.fixed:
                self.unknown.update(fresh.tolist())
                if not self.skip_unknown:
                    return
                ids = ids[~missing]
                self.skipped += int(missing.sum())
            else:
                start = len(self.code_points)
                self.table[fresh] = torch.arange(start, start + len(fresh), dtype=torch.int32)
                self.code_points.extend(fresh.tolist())
                self._widen_if_needed()
                ids = self.table[points]
        if not self.unknown or self.skip_unknown:
            self.out.write(_tensor_bytes(ids.to(WIDTHS[self.storage][0])))
            self.length += len(ids)

    def _widen_if_needed(self) -> None:
        wider = storage_name(len(self.code_points))
        if wider == self.storage:
            return
        self.out.close()
        _convert_file(self.out_path, self.length, self.storage, wider)
        self.storage = wider
        self.out = open(self.out_path, "ab")

    def finish(self) -> EncodeResult:
        self.feed(b"", final=True)
        self.out.close()
        chars = [chr(p) for p in self.code_points]
        vocab = Vocabulary(chars)
        if not self.fixed:
            # Provisional id i is chars[i]; its final id is that character's sorted rank.
            ranks = vocab.encode(chars)
            if not torch.equal(ranks, torch.arange(len(chars))):
                _convert_file(self.out_path, self.length, self.storage, self.storage, ranks)
        unknown = sorted(chr(p) for p in self.unknown)
        return EncodeResult(vocab, self.length, unknown, self.skipped)

    def close(self) -> None:
        self.out.close()


def _convert_file(path: Path, length: int, old: str, new: str, mapping: torch.Tensor | None = None) -> None:
    """Rewrites a token file in place at another width, optionally renumbering its ids."""
    with atomic_path(path) as tmp:
        _rewrite(path, tmp, length, old, new, mapping)


def _rewrite(src_path: Path, dst_path: Path, length: int, old: str, new: str, mapping: torch.Tensor | None = None,
             chunk: int = CHUNK_BYTES) -> None:
    """Copies `length` ids from one token file to another of width `new`, renumbered by `mapping`.

    Plain reads and writes rather than a memory map: mapped pages, once read or dirtied,
    would count against the process's memory for the whole pass.
    """
    with open(dst_path, "wb") as dst:
        _copy_ids(src_path, dst, length, old, new, mapping, chunk)


def _copy_ids(src_path: Path, dst: BinaryIO, length: int, old: str, new: str, mapping: torch.Tensor | None = None,
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
            dst.write(_tensor_bytes(ids.to(new_dtype)))
            remaining -= n


def encode_file(src: Path, out_path: Path, encoding: str, name: str, vocab: Vocabulary | None = None,
                skip_unknown: bool = False, chunk_bytes: int = CHUNK_BYTES, quiet: bool = True) -> EncodeResult:
    with open_corpus(str(src)) as f:
        return encode_stream(f, out_path, encoding, name, vocab, skip_unknown, chunk_bytes, quiet, file_size(f))


def encode_stream(f: BinaryIO, out_path: Path, encoding: str, name: str, vocab: Vocabulary | None = None,
                  skip_unknown: bool = False, chunk_bytes: int = CHUNK_BYTES, quiet: bool = True,
                  total_bytes: int | None = None) -> EncodeResult:
    encoder = StreamEncoder(out_path, encoding, name, vocab, skip_unknown)
    try:
        with byte_bar(total_bytes, "encoding", quiet) as bar:
            for chunk in read_chunks(f, name, chunk_bytes):
                encoder.feed(chunk)
                bar.update(len(chunk))
        return encoder.finish()
    finally:
        encoder.close()


# ---- the cache -------------------------------------------------------------------------------
def decoding_codec(encoding: str) -> str:
    """The codec that reads a text in `encoding`: for UTF-8, utf-8-sig, which drops a byte-order
    mark at the very start (as files saved on Windows often begin) and keeps U+FEFF anywhere
    else as the character it is. Unknown and non-text encodings are CharrnnErrors."""
    codec = _codec_name(encoding)
    return "utf-8-sig" if codec == "utf-8" else codec


def _codec_name(encoding: str) -> str:
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


def _vocab_key(vocab: Vocabulary) -> str:
    return hashlib.sha256(json.dumps(vocab.chars).encode()).hexdigest()[:16]


def _read_meta(meta_path: Path, token_path: Path) -> dict | None:
    """The cache entry's metadata, or None if the entry is missing, stale or damaged."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
            return None
        vocab_size = len(meta["vocab"])
        width = WIDTHS[storage_name(vocab_size)][1]
        if token_path.stat().st_size != meta["length"] * width:
            return None
        if not ids_fit(map_tokens(token_path, meta["length"], vocab_size), vocab_size):
            return None
        starts = meta.get("doc_starts")
        if starts is not None and not (starts and starts[0] == 0 and all(type(v) is int for v in starts)
                                       and all(a < b for a, b in zip(starts, starts[1:]))
                                       and starts[-1] < meta["length"]):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):  # RuntimeError: torch.from_file
        return None


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


def _write_meta(meta_path: Path, **fields) -> None:
    meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, **fields}
    atomic_write_bytes(meta_path, json.dumps(meta).encode("utf-8"))


def _entry(meta: dict, token_path: Path, reused: bool) -> EncodedCorpus:
    vocab = Vocabulary(meta["vocab"])
    starts = meta.get("doc_starts")
    return EncodedCorpus(map_tokens(token_path, meta["length"], len(vocab)), vocab, meta["sha256"], token_path, reused,
                         None if starts is None else torch.tensor(starts, dtype=torch.int64))


def prepare(path: str, encoding: str, cache_dir: Path, quiet: bool = True,
            chunk_bytes: int = CHUNK_BYTES, allow_empty: bool = False) -> EncodedCorpus:
    """The corpus at `path` (or stdin for '-') as memory-mapped tokens, encoding it if not cached.

    A regular file is hashed in place; anything that can be read only once (stdin, a
    pipe, `<(...)`) is first spooled into the cache folder, hashed on the way. An empty
    corpus is an error unless `allow_empty` (one document of several).
    """
    name = "<stdin>" if path == "-" else path
    codec = _codec_name(encoding)
    with open_corpus(path) as f, _cache_errors(Path(cache_dir)), made_folder(Path(cache_dir)) as cache_dir:
        if path != "-" and file_size(f) is not None:
            sha = hash_stream(f, name, chunk_bytes, quiet)
            return _cached_or_encoded(Path(path), name, sha, encoding, codec, cache_dir, chunk_bytes, quiet,
                                      allow_empty)
        spooled, sha = spool(f, cache_dir, name, chunk_bytes, quiet)
        try:
            return _cached_or_encoded(spooled, name, sha, encoding, codec, cache_dir, chunk_bytes, quiet,
                                      allow_empty)
        finally:
            spooled.unlink()


@contextlib.contextmanager
def _cache_errors(folder: Path | None) -> Iterator[None]:
    """Reading errors are already one-line CharrnnErrors; what is left is writing tokens."""
    try:
        yield
    except OSError as e:
        why = why_write_failed(e)
        where = f"in {folder}" if folder is not None else "in the temporary folder ($TMPDIR)"
        hint = "; choose another place with --cache-dir" if folder is not None else ""
        raise CharrnnError(f"cannot write encoded tokens {where}: {why}{hint}") from None


def _cached_or_encoded(source: Path, name: str, sha: str, encoding: str, codec: str, cache_dir: Path,
                       chunk_bytes: int, quiet: bool, allow_empty: bool = False) -> EncodedCorpus:
    key = sha if codec == "utf-8" else f"{sha}-{codec}"
    token_path, meta_path = cache_dir / f"{key}.tokens", cache_dir / f"{key}.json"
    meta = _read_meta(meta_path, token_path)
    if meta is not None:
        return _entry(meta, token_path, reused=True)
    # Synced: the JSON beside it, written next, vouches for the tokens by their length alone.
    with atomic_path(token_path, sync=True) as tmp:
        result = encode_file(source, tmp, encoding, name, chunk_bytes=chunk_bytes, quiet=quiet)
        if result.length == 0 and not allow_empty:
            raise CharrnnError(f"{name}: the corpus is empty")
    meta = {"sha256": sha, "encoding": codec, "length": result.length, "vocab": result.vocab.chars}
    _write_meta(meta_path, **meta)
    return _entry(meta, token_path, reused=False)


# ---- several files ---------------------------------------------------------------------------
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


def prepare_corpus(paths: Sequence[str], encoding: str, cache_dir: Path, quiet: bool = True,
                   chunk_bytes: int = CHUNK_BYTES) -> EncodedCorpus:
    """`prepare` for a corpus of one or more paths (see `corpus_files`).

    One file (or one that is not empty, among several) gives exactly `prepare`'s entry. Several
    give one entry of every non-empty file's ids in order, in the union of their vocabularies,
    with `doc_starts` and `documents` set.
    """
    files = corpus_files(paths)
    if len(files) == 1:
        return prepare(files[0], encoding, cache_dir, quiet, chunk_bytes)
    codec = _codec_name(encoding)
    parts: list[tuple[str, EncodedCorpus]] = []
    with count_bar(len(files), "reading files", "file", quiet) as bar:
        for f in files:
            part = prepare(f, encoding, cache_dir, quiet=True, chunk_bytes=chunk_bytes, allow_empty=True)
            if len(part):
                parts.append((f, part))
            bar.update(1)
    if not parts:
        raise CharrnnError(f"{', '.join(paths)}: the corpus is empty (every file is)")
    if len(parts) == 1:
        return replace(parts[0][1], documents=(parts[0][0],))
    with _cache_errors(Path(cache_dir)):
        joined = _joined([p for _, p in parts], codec, Path(cache_dir))
    return replace(joined, documents=tuple(f for f, _ in parts))


def _joined_key(parts: Sequence[EncodedCorpus], codec: str, vocab: Vocabulary) -> str:
    """The joined entry's key: the documents' contents in order (their sha256s), the encoding
    and the vocabulary they make; nothing of their names or times."""
    key = {"documents": [p.sha256 for p in parts], "encoding": codec, "vocab": vocab.chars}
    return hashlib.sha256(json.dumps(key).encode("utf-8")).hexdigest()


def _joined(parts: Sequence[EncodedCorpus], codec: str, cache_dir: Path) -> EncodedCorpus:
    """The parts' ids one after another in the union vocabulary, cached under `_joined_key`."""
    vocab = Vocabulary(set().union(*(p.vocab.chars for p in parts)))
    key = _joined_key(parts, codec, vocab)
    token_path, meta_path = cache_dir / f"docs-{key}.tokens", cache_dir / f"docs-{key}.json"
    meta = _read_meta(meta_path, token_path)
    if meta is not None:
        return _entry(meta, token_path, reused=True)
    starts, length = [], 0
    width = storage_name(len(vocab))
    with atomic_path(token_path, sync=True) as tmp, open(tmp, "wb") as out:
        for part in parts:
            mapping = vocab.encode(part.vocab.chars)
            _copy_ids(part.path, out, len(part), storage_name(len(part.vocab)), width, mapping)
            starts.append(length)
            length += len(part)
    meta = {"sha256": key, "encoding": codec, "length": length, "vocab": vocab.chars,
            "documents": [p.sha256 for p in parts], "doc_starts": starts}
    _write_meta(meta_path, **meta)
    return _entry(meta, token_path, reused=False)


def renumber(corpus: EncodedCorpus, vocab: Vocabulary) -> EncodedCorpus:
    """The corpus in another vocabulary's ids (a superset of its own), cached beside it.

    Used when resuming on a corpus whose characters are a strict subset of the model's.
    """
    unknown = vocab.unknown(corpus.vocab.chars)
    if unknown:
        raise CharrnnError(f"characters outside the vocabulary: {escape_chars(unknown, limit=20)}")
    if corpus.vocab == vocab:
        return corpus
    stem = corpus.path.name.removesuffix(".tokens")
    token_path = corpus.path.with_name(f"{stem}-v{_vocab_key(vocab)}.tokens")
    meta_path = token_path.with_suffix(".json")
    meta = _read_meta(meta_path, token_path)
    if meta is None:
        mapping = vocab.encode(corpus.vocab.chars)
        # atomic_path's temp names are unique: under torchrun every rank may get here at once.
        with _cache_errors(token_path.parent):
            with atomic_path(token_path, sync=True) as tmp:
                _rewrite(corpus.path, tmp, len(corpus), storage_name(len(corpus.vocab)), storage_name(len(vocab)),
                         mapping)
            meta = {"sha256": corpus.sha256, "length": len(corpus), "vocab": vocab.chars}
            if corpus.doc_starts is not None:
                meta["doc_starts"] = corpus.doc_starts.tolist()
            _write_meta(meta_path, **meta)
    return replace(_entry(meta, token_path, reused=corpus.reused), documents=corpus.documents)


def encode_for_model(path: str, encoding: str, vocab: Vocabulary, skip_unknown: bool, folder: Path | None = None,
                     quiet: bool = True, chunk_bytes: int = CHUNK_BYTES) -> tuple[torch.Tensor, int]:
    """Text (a file, or stdin for '-') as memory-mapped tokens in `vocab`'s ids, and how
    many unknown characters were skipped.

    Unknown characters are an error listing them all, unless `skip_unknown` drops them.
    The token file is unlinked as soon as it is mapped, so nothing is left behind.
    """
    name = "<stdin>" if path == "-" else path
    with _cache_errors(folder):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".charrnn-eval-", suffix=".tokens")
    os.close(fd)
    try:
        with open_corpus(path) as f, _cache_errors(folder):
            result = encode_stream(f, Path(tmp), encoding, name, vocab, skip_unknown, chunk_bytes, quiet,
                                   file_size(f))
        if result.unknown and not skip_unknown:
            raise CharrnnError(
                f"the text has {len(result.unknown)} characters outside the model's vocabulary: "
                f"{escape_chars(result.unknown, limit=20)} (--skip-unknown drops them)"
            )
        return map_tokens(Path(tmp), result.length, len(vocab)), result.skipped
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
