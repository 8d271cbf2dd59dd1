"""The token cache: a corpus encoded once (text/encoder.py) into a token file
(text/token_files.py), keyed by the sha256 of its bytes, so a second run on the same corpus
only hashes it; training maps the file into memory instead of reading it, so memory use stays
flat however large the corpus is.

A corpus of several files (or directories of them) is several documents: each file is cached
on its own, and their ids, renumbered into the union of their vocabularies, are joined into
one more entry keyed by the files' sha256s in order (never by their names or times), which
records where each document starts (`EncodedCorpus.doc_starts`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import CharrnnError
from ..fileio import atomic_path, atomic_write_bytes, made_folder
from ..progress import count_bar
from .encoder import encode_file
from .reading import CHUNK_BYTES, codec_name, corpus_files, file_size, hash_stream, open_corpus, spool
from .token_files import WIDTHS, copy_ids, ids_fit, map_tokens, rewrite, storage_name, writing_tokens
from .vocab import Vocabulary, escape_chars

CACHE_FOLDER = "cache"  # inside the checkpoint dir, unless --cache-dir says otherwise
CACHE_FORMAT = "charrnn-tokens"
# 2: a leading UTF-8 byte-order mark is dropped. Entries are keyed by the corpus bytes, so a
# version 1 entry of a file that starts with one holds U+FEFF as a character: rebuilt.
CACHE_VERSION = 2


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
    codec = codec_name(encoding)
    with open_corpus(path) as f, writing_tokens(Path(cache_dir)), made_folder(Path(cache_dir)) as cache_dir:
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
    codec = codec_name(encoding)
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
    with writing_tokens(Path(cache_dir)):
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
            copy_ids(part.path, out, len(part), storage_name(len(part.vocab)), width, mapping)
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
        with writing_tokens(token_path.parent):
            with atomic_path(token_path, sync=True) as tmp:
                rewrite(corpus.path, tmp, len(corpus), storage_name(len(corpus.vocab)), storage_name(len(vocab)),
                         mapping)
            meta = {"sha256": corpus.sha256, "length": len(corpus), "vocab": vocab.chars}
            if corpus.doc_starts is not None:
                meta["doc_starts"] = corpus.doc_starts.tolist()
            _write_meta(meta_path, **meta)
    return replace(_entry(meta, token_path, reused=corpus.reused), documents=corpus.documents)

