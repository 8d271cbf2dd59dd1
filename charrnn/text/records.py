"""Lists of things: a corpus of records (names, titles, recipes), each learned on its own.

A record is the text between two separators (a newline by default); empty ones are skipped.
The model reads MARKER + the record's characters and learns to predict them and then MARKER
again: the one marker id (the last of the vocabulary) stands for START as an input and for
END as a target, as makemore's '.' does, so a generator knows where a record begins and when
it is done. This module holds records as ids, the splitting of a corpus into them, the seeded
validation split, the records' hashes (for `sample --novel`), and their batches as the model
reads them (shared by training, training/record_batches.py, and evaluation).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..errors import CharrnnError
from ..native import abi
from .cache import EncodedCorpus
from .token_files import as_ids
from .vocab import Vocabulary, escape_chars

MAX_RECORD_CHARS = 10_000  # longer is more likely a wrong --record-sep than a record


@dataclass
class Records:
    """Records as ids (the marker not included): record i is ids[offsets[i]:offsets[i + 1]]."""

    ids: torch.Tensor  # int64, every record's characters one after another
    offsets: torch.Tensor  # int64 [records + 1]
    vocab: Vocabulary  # has_marker: the marker's id is vocab.marker_id

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def record(self, i: int) -> torch.Tensor:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]

    def texts(self, indices: Iterable[int] | None = None) -> list[str]:
        picked = range(len(self)) if indices is None else indices
        return [self.vocab.decode(self.record(i)) for i in picked]

    def in_vocab(self, vocab: Vocabulary) -> Records:
        """The same records in `vocab`'s ids (a vocabulary holding all of theirs, and a marker)."""
        return Records(vocab.encode(self.vocab.chars)[self.ids], self.offsets, vocab)

    def subset(self, indices: torch.Tensor) -> Records:
        offsets = offsets_of(self.lengths[indices])
        parts = [self.record(int(i)) for i in indices]
        ids = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
        return Records(ids, offsets, self.vocab)


def offsets_of(lengths: torch.Tensor) -> torch.Tensor:
    """Records' offsets [count + 1] from their lengths: record i spans offsets[i]:offsets[i + 1]."""
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = lengths.cumsum(0)
    return offsets


def separator_starts(tokens: torch.Tensor, separator: list[int]) -> list[int]:
    """Where `separator` (ids) occurs in `tokens`, left to right without overlaps (str.split's rule)."""
    first = (as_ids(tokens) == separator[0]).nonzero().flatten().tolist()
    if len(separator) == 1:
        return first
    width, found, end = len(separator), [], 0
    for start in first:
        if start >= end and as_ids(tokens[start:start + width]).tolist() == separator:
            found.append(start)
            end = start + width
    return found


def split_records(tokens: torch.Tensor, vocab: Vocabulary, separator: str, name: str,
                  keep_chars: Vocabulary | None = None) -> Records:
    """The records of an encoded corpus, in a vocabulary of the characters they hold (plus the
    marker), or in `keep_chars` when given (a model's, for eval and resume).

    A record longer than MAX_RECORD_CHARS is an error naming the line it starts on.
    """
    sep_ids = [vocab.index[c] for c in separator] if all(c in vocab for c in separator) else None
    spans, begin = [], 0
    for start in separator_starts(tokens, sep_ids) if sep_ids else []:
        spans.append((begin, start))
        begin = start + len(separator)
    spans.append((begin, len(tokens)))
    if separator == "\n" and "\r" in vocab:  # lines that end in CRLF
        cr = vocab.index["\r"]
        spans = [(a, b - 1) if b > a and int(as_ids(tokens[b - 1:b])) == cr else (a, b) for a, b in spans]
    spans = [(a, b) for a, b in spans if b > a]
    too_long = next(((a, b) for a, b in spans if b - a > MAX_RECORD_CHARS), None)
    if too_long is not None:
        line = _line_of(tokens, vocab, too_long[0])
        raise CharrnnError(f"{name}: the record starting on line {line} has {too_long[1] - too_long[0]:,} characters, "
                           f"more than {MAX_RECORD_CHARS:,}; is --record-sep {separator!r} the separator?")
    if not spans:
        raise CharrnnError(f"{name}: no records (every record between separators {separator!r} is empty)")
    ids = torch.cat([as_ids(tokens[a:b]) for a, b in spans])
    offsets = offsets_of(torch.tensor([b - a for a, b in spans]))
    used = torch.bincount(ids, minlength=len(vocab.chars)) > 0
    target = keep_chars or Vocabulary([c for c, u in zip(vocab.chars, used.tolist()) if u], marker=True)
    unknown = [c for c, u in zip(vocab.chars, used.tolist()) if u and c not in target]
    if unknown:
        raise CharrnnError(f"{name}: the records have characters outside the model's vocabulary: "
                           f"{escape_chars(unknown, limit=20)}")
    mapping = torch.tensor([target.index.get(c, -1) for c in vocab.chars], dtype=torch.int64)
    return Records(mapping[ids], offsets, target)


def records_of_corpus(corpus: EncodedCorpus, separator: str, name: str,
                      keep_chars: Vocabulary | None = None) -> Records:
    """The corpus's records; of several files, every file's in order (a file's end also ends
    a record), in one vocabulary: the union of theirs, or `keep_chars`."""
    if corpus.doc_starts is None:
        return split_records(corpus.tokens, corpus.vocab, separator, name, keep_chars=keep_chars)
    bounds = corpus.doc_starts.tolist() + [len(corpus)]
    parts = [split_records(corpus.tokens[a:b], corpus.vocab, separator, doc, keep_chars=keep_chars)
             for doc, a, b in zip(corpus.documents, bounds, bounds[1:])]
    vocab = keep_chars or Vocabulary({c for p in parts for c in p.vocab.chars}, marker=True)
    ids = [vocab.encode(p.vocab.chars)[p.ids] for p in parts]
    offsets = offsets_of(torch.cat([p.lengths for p in parts]))
    return Records(torch.cat(ids), offsets, vocab)


def _line_of(tokens: torch.Tensor, vocab: Vocabulary, position: int) -> int:
    if "\n" not in vocab:
        return 1
    return int((as_ids(tokens[:position]) == vocab.index["\n"]).sum()) + 1


def seeded_split(count: int, val_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and validation record indices: a seeded random `val_frac` of them is validation
    (a sorted list's tail would be all 'z...'), each part in the corpus's order."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed % 2**64))
    val_count = max(1, round(count * val_frac)) if count > 1 else 0
    return order[val_count:].sort().values, order[:val_count].sort().values


def record_hashes(texts: Iterable[str]) -> torch.Tensor:
    """Sorted 64-bit hashes of the records, for telling a new record from a known one (8 bytes a
    record: 8 MB for a million; a false match is 1 in 2^64 / records)."""
    return torch.tensor(sorted({record_hash(t) for t in texts}), dtype=torch.int64)


def record_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


PAD_TARGET = -100  # F.cross_entropy's ignore_index: padding is never scored


# Rows per batch are rounded to this when there are enough: the rows the C recurrence fits.
ROW_MULTIPLE = abi.BATCH_MULTIPLE


SORT_SPAN = 50  # batches sorted by length together: shuffled enough, padded little


def make_batch(records: Records, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs MARKER + record and targets record + MARKER, [rows, longest + 1], right-padded;
    padded targets are PAD_TARGET."""
    marker = records.vocab.marker_id
    width = max(int(records.lengths[i]) for i in indices) + 1
    x = torch.full((len(indices), width), marker, dtype=torch.int64)
    y = torch.full((len(indices), width), PAD_TARGET, dtype=torch.int64)
    for row, i in enumerate(indices):
        ids = records.record(i)
        x[row, 1:len(ids) + 1] = ids
        y[row, :len(ids)] = ids
        y[row, len(ids)] = marker
    return x, y


def plan_batches(lengths: list[int], tokens_per_batch: int, order: list[int]) -> list[list[int]]:
    """Cuts records (in `order`) into batches of about `tokens_per_batch` tokens, sorting each
    span of SORT_SPAN batches by length so that a batch's records are alike."""
    mean = sum(lengths[i] + 1 for i in order) / max(1, len(order))
    span = max(1, round(SORT_SPAN * tokens_per_batch / mean))
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        batch: list[int] = []
        for i in sorted(order[start:start + span], key=lambda i: lengths[i]):
            # Sorted, so the record joining is the batch's widest: it sets the padded width.
            if batch and (len(batch) + 1) * (lengths[i] + 1) > tokens_per_batch:
                keep = len(batch) - len(batch) % ROW_MULTIPLE if len(batch) >= ROW_MULTIPLE else len(batch)
                batches.append(batch[:keep])
                batch = batch[keep:]
            batch.append(i)
        if batch:
            batches.append(batch)
    return batches
