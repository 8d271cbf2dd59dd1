import hashlib

import pytest

from charrnn import corpus
from charrnn.errors import CharrnnError

from .conftest import SHAKESPEARE


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
        corpus.read_text(str(path))
    assert corpus.read_text(str(path), "latin-1") == "café au lait"


def test_empty_directory_and_missing_are_errors(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(CharrnnError, match="empty"):
        corpus.read_text(str(tmp_path / "empty.txt"))
    with pytest.raises(CharrnnError, match="is a directory"):
        corpus.read_text(str(tmp_path))
    with pytest.raises(CharrnnError, match="no such file"):
        corpus.read_text(str(tmp_path / "nope.txt"))
    with pytest.raises(CharrnnError, match="unknown encoding"):
        corpus.decode(b"abc", "no-such-codec", "x")
