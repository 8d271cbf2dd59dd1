"""The streaming encoder: text, read in bounded chunks through an incremental decoder (so a
multi-byte character split across two chunks decodes whole, and a UTF-8 byte-order mark at
the very start is dropped rather than made a character), becomes ids through a dense
code-point lookup table, vectorised in torch, written to a token file."""

from __future__ import annotations

import codecs
import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from ..errors import CharrnnError
from ..progress import byte_bar
from .reading import CHUNK_BYTES, codec_name, decoding_codec, file_size, open_corpus, read_chunks
from .token_files import WIDTHS, convert_file, map_tokens, storage_name, tensor_bytes, writing_tokens
from .vocab import Vocabulary, unknown_characters

UNICODE_SIZE = 0x110000


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
        self.codec = codec_name(encoding)
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
            self.out.write(tensor_bytes(ids.to(WIDTHS[self.storage][0])))
            self.length += len(ids)

    def _widen_if_needed(self) -> None:
        wider = storage_name(len(self.code_points))
        if wider == self.storage:
            return
        self.out.close()
        convert_file(self.out_path, self.length, self.storage, wider)
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
                convert_file(self.out_path, self.length, self.storage, self.storage, ranks)
        unknown = sorted(chr(p) for p in self.unknown)
        return EncodeResult(vocab, self.length, unknown, self.skipped)

    def close(self) -> None:
        self.out.close()


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


def encode_for_model(path: str, encoding: str, vocab: Vocabulary, skip_unknown: bool, folder: Path | None = None,
                     quiet: bool = True, chunk_bytes: int = CHUNK_BYTES) -> tuple[torch.Tensor, int]:
    """Text (a file, or stdin for '-') as memory-mapped tokens in `vocab`'s ids, and how
    many unknown characters were skipped.

    Unknown characters are an error listing them all, unless `skip_unknown` drops them.
    The token file is unlinked as soon as it is mapped, so nothing is left behind.
    """
    name = "<stdin>" if path == "-" else path
    with writing_tokens(folder):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".charrnn-eval-", suffix=".tokens")
    os.close(fd)
    try:
        with open_corpus(path) as f, writing_tokens(folder):
            result = encode_stream(f, Path(tmp), encoding, name, vocab, skip_unknown, chunk_bytes, quiet,
                                   file_size(f))
        if result.unknown and not skip_unknown:
            raise unknown_characters(result.unknown)
        return map_tokens(Path(tmp), result.length, len(vocab)), result.skipped
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
