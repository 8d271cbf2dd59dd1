import hashlib

import pytest

from charrnn.errors import CharrnnError
from charrnn.text import builtin as corpus
from charrnn.text import cache, token_files

from ..helpers import SHAKESPEARE


def test_python_stdlib_is_deterministic_utf8_and_capped():
    a = corpus.python_stdlib(max_bytes=200_000)
    b = corpus.python_stdlib(max_bytes=200_000)
    assert a == b
    assert 199_990 <= len(a) <= 200_000
    text = a.decode("utf-8")
    assert "def " in text and "import " in text


def test_checksum_verified_on_a_local_copy(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes(b"hello world\n")
    digest = hashlib.sha256(b"hello world\n").hexdigest()
    assert corpus.download(good.as_uri(), digest) == b"hello world\n"
    with pytest.raises(CharrnnError, match="does not match"):
        corpus.download(good.as_uri(), "0" * 64)
    with pytest.raises(CharrnnError, match="cannot download"):
        corpus.download((tmp_path / "missing.txt").as_uri(), digest)


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="needs ../shared/data/tinyshakespeare.txt")
def test_tinyshakespeare_from_a_mirror(tmp_path):
    out = tmp_path / "ts.txt"
    corpus.write_output(corpus.build("tinyshakespeare", url=SHAKESPEARE.as_uri()), str(out))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == corpus.TINYSHAKESPEARE_SHA256
    assert len(out.read_text(encoding="utf-8")) == 1_115_394


def test_undecodable_byte_names_its_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(CharrnnError, match="0xe9 at offset 3"):
        cache.prepare(str(path), "utf-8", tmp_path / "cache")
    latin = cache.prepare(str(path), "latin-1", tmp_path / "cache")
    assert latin.vocab.decode(token_files.as_ids(latin.tokens)) == "café au lait"


def test_empty_directory_and_missing_are_errors(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    cases = [(tmp_path / "empty.txt", "utf-8", "empty"), (tmp_path, "utf-8", "is a directory"),
             (tmp_path / "nope.txt", "utf-8", "no such file"), (tmp_path / "empty.txt", "no-such-codec",
                                                                "unknown encoding")]
    for path, encoding, message in cases:
        with pytest.raises(CharrnnError, match=message):
            cache.prepare(str(path), encoding, tmp_path / "cache")
