"""The streaming encoder and the token cache."""

import io
import json
import sys

import pytest
import torch

from charrnn.errors import CharrnnError
from charrnn.evaluate import evaluate
from charrnn.model import CharRNN, ModelConfig
from charrnn.text import cache, encoder, token_files
from charrnn.text.vocab import Vocabulary

# One-, two-, three- and four-byte UTF-8 characters, so tiny chunks split them every way.
MIXED = "plain ascii, café, naïve — 中文字符, emoji 😀🎉, tabs\tand\nnewlines\r\n" * 40


def decode(corpus: cache.EncodedCorpus) -> str:
    return corpus.vocab.decode(token_files.as_ids(corpus.tokens))


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_streaming_encode_is_exact_for_any_chunk_size(tmp_path, chunk_bytes):
    path = tmp_path / "c.txt"
    path.write_text(MIXED, encoding="utf-8")
    corpus = cache.prepare(str(path), "utf-8", tmp_path / "cache", chunk_bytes=chunk_bytes)
    assert decode(corpus) == MIXED
    assert corpus.vocab.chars == Vocabulary.from_text(MIXED).chars  # sorted, as an in-memory build
    assert corpus.tokens.dtype == torch.uint8 and len(corpus) == len(MIXED)


def test_vocabulary_past_256_widens_the_file_mid_stream(tmp_path):
    # The first chunks hold few symbols; later ones push past 256, then past 32,768 (uint16 read unsigned).
    text = "ab" * 500 + "".join(chr(0x4E00 + i) for i in range(300)) + "".join(chr(0x10000 + i) for i in range(40_000))
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    corpus = cache.prepare(str(path), "utf-8", tmp_path / "cache", chunk_bytes=999)
    assert len(corpus.vocab) == 40_302
    assert corpus.tokens.dtype == torch.int16  # uint16 on disk
    assert int(token_files.as_ids(corpus.tokens).max()) == 40_301
    assert decode(corpus) == text


def test_bad_bytes_report_their_offset_across_chunks(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("héllo".encode() + b"\xff" + b"tail")  # 'é' is two bytes: 0xff sits at offset 6
    for chunk_bytes in (1, 2, 4, 1 << 20):
        with pytest.raises(CharrnnError, match=r"byte 0xff at offset 6 is not valid utf-8"):
            cache.prepare(str(path), "utf-8", tmp_path / "cache", chunk_bytes=chunk_bytes)
    cut = tmp_path / "cut.txt"
    cut.write_bytes(b"abc" + "中".encode()[:2])  # ends inside a character
    with pytest.raises(CharrnnError, match="offset 3"):
        cache.prepare(str(cut), "utf-8", tmp_path / "cache", chunk_bytes=2)
    assert not (tmp_path / "cache").exists()  # nothing half-written is left, not even the folder


BOM = "\ufeff".encode()  # the byte-order mark in UTF-8: EF BB BF


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 1 << 20])
def test_a_leading_byte_order_mark_is_dropped_and_a_later_one_kept(tmp_path, chunk_bytes):
    path = tmp_path / "c.txt"
    path.write_bytes(BOM + MIXED.encode())
    corpus = cache.prepare(str(path), "utf-8", tmp_path / "cache", chunk_bytes=chunk_bytes)
    assert decode(corpus) == MIXED and "\ufeff" not in corpus.vocab
    path.write_bytes(BOM + BOM + b"ab" + BOM + b"c")  # only the first is a mark; the others are text
    assert decode(cache.prepare(str(path), "utf-8", tmp_path / "cache", chunk_bytes=chunk_bytes)) == "\ufeffab\ufeffc"
    ids, _ = encoder.encode_for_model(str(path), "utf-8", Vocabulary("abc\ufeff"), False, tmp_path,
                                     chunk_bytes=chunk_bytes)
    assert Vocabulary("abc\ufeff").decode(token_files.as_ids(ids)) == "\ufeffab\ufeffc"
    path.write_bytes(b"\xef\xbb")  # what a BOM starts with, but the text ends first
    with pytest.raises(CharrnnError, match=r"ends in the middle of a UTF-8 character \(offset 0\)"):
        cache.prepare(str(path), "utf-8", tmp_path / "cache", chunk_bytes=chunk_bytes)


def test_bad_bytes_after_a_byte_order_mark_report_file_offsets(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(BOM + "héllo".encode() + b"\xff" + b"tail")  # 0xff at offset 3 + 6
    for chunk_bytes in (1, 2, 3, 4, 5, 1 << 20):
        with pytest.raises(CharrnnError, match=r"byte 0xff at offset 9 is not valid utf-8"):
            cache.prepare(str(path), "utf-8", tmp_path / "cache", chunk_bytes=chunk_bytes)
    path.write_bytes(BOM + b"\xa9 is no character start")  # right after the mark: not a cut by bytes
    with pytest.raises(CharrnnError, match=r"byte 0xa9 at offset 3 is not valid utf-8"):
        cache.prepare(str(path), "utf-8", tmp_path / "cache", chunk_bytes=2)
    path.write_bytes(BOM + b"abc" + "中".encode()[:2])
    with pytest.raises(CharrnnError, match=r"ends in the middle of a UTF-8 character \(offset 6\)"):
        cache.prepare(str(path), "utf-8", tmp_path / "cache", chunk_bytes=2)


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


def test_encoding_for_a_model_lists_unknown_characters_or_skips_them(tmp_path):
    vocab = Vocabulary("abc \n")
    path = tmp_path / "t.txt"
    path.write_text("abc xyz ab€\n", encoding="utf-8")
    with pytest.raises(CharrnnError, match="4 characters outside the model's vocabulary: x y z €"):
        encoder.encode_for_model(str(path), "utf-8", vocab, skip_unknown=False, folder=tmp_path, chunk_bytes=2)
    ids, skipped = encoder.encode_for_model(str(path), "utf-8", vocab, skip_unknown=True, folder=tmp_path,
                                           chunk_bytes=2)
    assert skipped == 4 and vocab.decode(token_files.as_ids(ids)) == "abc  ab\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]  # the token file is unlinked once mapped


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
