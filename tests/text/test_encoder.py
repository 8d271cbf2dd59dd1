"""The streaming encoder (charrnn/text/encoder.py): exact for any chunk size, widening, bad bytes
named by their offset, the byte-order mark, text in a model's vocabulary."""


import pytest
import torch

from charrnn.errors import CharrnnError
from charrnn.text import cache, encoder, token_files
from charrnn.text.vocab import Vocabulary

# One-, two-, three- and four-byte UTF-8 characters, so tiny chunks split them every way.
BOM = "\ufeff".encode()  # the byte-order mark in UTF-8: EF BB BF
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
