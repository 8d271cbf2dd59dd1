"""The token cache (charrnn/text/cache.py, text/token_files.py): keyed by content and encoding,
older, damaged or out-of-range entries rebuilt, stdin spooled, renumbering, mapped files
evaluated, an unwritable cache."""

import io
import json
import sys

import pytest
import torch

from charrnn.errors import CharrnnError
from charrnn.evaluate import evaluate
from charrnn.model import CharRNN, ModelConfig
from charrnn.text import cache, token_files
from charrnn.text.vocab import Vocabulary

# One-, two-, three- and four-byte UTF-8 characters, so tiny chunks split them every way.
BOM = "\ufeff".encode()  # the byte-order mark in UTF-8: EF BB BF
MIXED = "plain ascii, café, naïve — 中文字符, emoji 😀🎉, tabs\tand\nnewlines\r\n" * 40


def decode(corpus: cache.EncodedCorpus) -> str:
    return corpus.vocab.decode(token_files.as_ids(corpus.tokens))


def test_cache_entries_of_an_older_version_are_rebuilt(tmp_path):
    """Version 1 kept a leading byte-order mark as a character; its entries are not reused."""
    path = tmp_path / "c.txt"
    path.write_bytes(BOM + MIXED.encode())
    first = cache.prepare(str(path), "utf-8", tmp_path / "cache")
    meta_path = first.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": 1, "vocab": sorted(set(MIXED) | {"\ufeff"})}))
    again = cache.prepare(str(path), "utf-8", tmp_path / "cache")
    assert not again.reused and "\ufeff" not in again.vocab and decode(again) == MIXED


def test_cache_is_keyed_by_content_and_encoding(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("café au lait\n".encode("latin-1") * 50)
    cache_dir = tmp_path / "cache"
    first = cache.prepare(str(path), "latin-1", cache_dir)
    again = cache.prepare(str(path), "latin-1", cache_dir)
    assert not first.reused and again.reused and again.path == first.path
    assert decode(again) == "café au lait\n" * 50
    with pytest.raises(CharrnnError, match="not valid utf-8"):
        cache.prepare(str(path), "utf-8", cache_dir)  # another encoding is another entry
    path.write_bytes(b"new text\n" * 50)
    changed = cache.prepare(str(path), "latin-1", cache_dir)
    assert not changed.reused and changed.path != first.path


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(MIXED, encoding="utf-8")
    first = cache.prepare(str(path), "utf-8", tmp_path / "cache")
    with open(first.path, "r+b") as f:
        f.truncate(10)
    rebuilt = cache.prepare(str(path), "utf-8", tmp_path / "cache")
    assert not rebuilt.reused and decode(rebuilt) == MIXED


@pytest.mark.parametrize("text", [
    MIXED,  # uint8 ids
    MIXED + "".join(chr(0x4E00 + i) for i in range(300)),  # uint16, all below 32,768
    MIXED + "".join(chr(0x10000 + i) for i in range(40_000)),  # uint16 whose upper half reads as negative
])
def test_cache_entry_with_ids_past_its_vocabulary_is_rebuilt(tmp_path, text):
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    first = cache.prepare(str(path), "utf-8", tmp_path / "cache")
    good = first.path.read_bytes()
    vocab_size = len(first.vocab)
    dtype, width = token_files.WIDTHS[token_files.storage_name(vocab_size)]
    damaged = bytearray(good)
    # The right length and the first id past the vocabulary: only the range check can tell.
    damaged[-width:] = token_files.tensor_bytes(torch.tensor([vocab_size]).to(dtype))
    first.path.write_bytes(damaged)
    del first  # its memory map
    rebuilt = cache.prepare(str(path), "utf-8", tmp_path / "cache")
    assert not rebuilt.reused and rebuilt.path.read_bytes() == good and decode(rebuilt) == text
    assert cache.prepare(str(path), "utf-8", tmp_path / "cache").reused


def test_stdin_is_spooled_then_cached(tmp_path, monkeypatch):
    data = MIXED.encode()
    cache_dir = tmp_path / "cache"
    for expect_reused in (False, True):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        corpus = cache.prepare("-", "utf-8", cache_dir, chunk_bytes=5)
        assert corpus.reused is expect_reused and decode(corpus) == MIXED
    assert sorted(p.suffix for p in cache_dir.iterdir()) == [".json", ".tokens"]  # the spool is gone


def test_renumber_into_a_larger_vocabulary(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("bad cab\n" * 20)
    corpus = cache.prepare(str(path), "utf-8", tmp_path / "cache")
    wider = Vocabulary("abcdefg \n!")
    moved = cache.renumber(corpus, wider)
    assert moved.vocab == wider and wider.decode(token_files.as_ids(moved.tokens)) == "bad cab\n" * 20
    with pytest.raises(CharrnnError, match="outside the vocabulary"):
        cache.renumber(corpus, Vocabulary("ab"))


def test_evaluation_streams_from_a_mapped_file_and_shards_add_up(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(MIXED, encoding="utf-8")
    corpus = cache.prepare(str(path), "utf-8", tmp_path / "cache")
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(corpus.vocab), layers=2, hidden=16))
    in_memory = token_files.as_ids(corpus.tokens).clone()
    whole = evaluate(model, corpus.tokens, torch.device("cpu"), streams=5, burn_in=17, chunk=40)
    assert whole.chars == len(MIXED) - 1
    assert whole.loss == pytest.approx(evaluate(model, in_memory, torch.device("cpu"), streams=5, burn_in=17).loss,
                                       abs=1e-6)
    parts = [evaluate(model, corpus.tokens, torch.device("cpu"), streams=5, burn_in=17, chunk=40, shard=(r, 3),
                      reduce=lambda t: t) for r in range(3)]
    total = sum(p.loss * p.chars for p in parts) / sum(p.chars for p in parts)
    assert sum(p.chars for p in parts) == whole.chars
    # A shard runs fewer streams per batch, and the CPU matmul kernels may split a smaller batch differently,
    # so per-character float32 losses can differ in their last bits (1.4e-9 nats on average on
    # an AVX-512 Xeon); the sum itself is exact, kept in float64.
    assert total == pytest.approx(whole.loss, abs=1e-7)


def test_an_unwritable_cache_is_a_one_line_error(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(MIXED, encoding="utf-8")
    with pytest.raises(CharrnnError, match=r"cannot write encoded tokens in .*--cache-dir"):
        cache.prepare(str(path), "utf-8", path / "cache")  # a folder inside a file
