"""Corpus inputs: empty, odd, binary, mis-encoded, not files at all, unreadable, closed stdin.

Each bad input is a clear one-line message with exit code 1 and no checkpoint dir left behind.
A corpus of whitespace only, or of one repeated character, is a valid if dull text: it trains.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from charrnn import checkpoint

from ..helpers import (
    TINY,
    charrnn_argv,
    charrnn_env,
    invoke,
    load_finite,
    make_text,
    one_line_error,
    write_corpus,
)

LATIN1_TEXT = make_text(600) + " café, naïve, façade " + make_text(600, seed=1)


def train(corpus: object, folder: Path, *extra: object):
    return invoke("train", corpus, "--checkpoint-dir", folder, *TINY, "--max-steps", 4, "--eval-every", 2, "-q",
                  *extra)


def assert_refused(result, folder: Path, *words: str) -> str:
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    for word in words:
        assert word in line, line
    # A corpus that cannot be read leaves nothing; a readable one stays cached for the retry.
    leftovers = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert leftovers in ([], ["cache"]), f"a failed start left {leftovers} behind"
    assert not list(folder.glob("cache/.*")), "a failed start left temporary files behind"
    return line


def _binary_file(tmp_path: Path) -> Path:
    """/bin/ls (the issue's example) when it is not valid UTF-8, else a generated ELF-like file."""
    for candidate in ("/bin/ls", "/usr/bin/ls"):
        if os.path.isfile(candidate) and not _is_utf8(Path(candidate).read_bytes()):
            return Path(candidate)
    path = tmp_path / "binary"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    return path


def test_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    assert_refused(train(tmp_path / "empty.txt", tmp_path / "ck"), tmp_path / "ck", "empty")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_binary_file(tmp_path):
    binary = _binary_file(tmp_path)
    with pytest.raises(UnicodeDecodeError) as bad:
        binary.read_bytes().decode("utf-8")
    offset = bad.value.start
    assert_refused(train(binary, tmp_path / "ck"), tmp_path / "ck", "utf-8", f"offset {offset}", "--encoding")


def test_latin1_read_as_utf8_names_the_byte_offset_and_latin1_works(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(LATIN1_TEXT.encode("latin-1"))
    offset = LATIN1_TEXT.index("é")  # ASCII before it: char index == byte offset
    assert_refused(train(path, tmp_path / "ck"), tmp_path / "ck", f"byte 0xe9 at offset {offset}", "--encoding")

    ok = train(path, tmp_path / "ck", "--encoding", "latin-1")
    assert ok.exit_code == 0, ok.output
    assert {"é", "ï", "ç"} <= set(load_finite(tmp_path / "ck" / checkpoint.LATEST).vocab.chars)


def test_unknown_encoding(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    assert_refused(train(corpus, tmp_path / "ck", "--encoding", "no-such-codec"), tmp_path / "ck", "no-such-codec")


def test_directory_and_missing_path(tmp_path):
    (tmp_path / "folder").mkdir()
    assert_refused(train(tmp_path / "folder", tmp_path / "ck"), tmp_path / "ck", "directory")
    assert_refused(train(tmp_path / "missing.txt", tmp_path / "ck"), tmp_path / "ck", "missing.txt", "no such file")


def test_too_short_corpus(tmp_path):
    (tmp_path / "short.txt").write_text("just a few words\n")
    assert_refused(train(tmp_path / "short.txt", tmp_path / "ck"), tmp_path / "ck", "too short")


def test_unreadable_file(tmp_path):
    """A 0-permission file. Root reads anything, so as root the command runs with the effective
    uid/gid of `nobody` (seteuid, restored after), in a world-writable temp dir outside pytest's
    root-only tmp tree, so that only the file's own mode can deny the read."""
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="charrnn-perm-"))
    try:
        base.chmod(0o777)
        corpus = write_corpus(base / "corpus.txt")
        corpus.chmod(0)
        folder = base / "ck"
        if as_root:
            try:
                os.setegid(65534)
                os.seteuid(65534)
            except OSError as e:
                pytest.skip(f"running as root and cannot drop to nobody ({e}), so the file stays readable")
        try:
            result = train(corpus, folder)
        finally:
            if as_root:
                os.seteuid(0)
                os.setegid(0)
        assert_refused(result, folder, "corpus.txt", os.strerror(errno.EACCES))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_fifo_with_a_writer_trains(tmp_path):
    """A named pipe works like a file once its writer closes it. The writer opens with
    O_NONBLOCK and retries, so if charrnn never opened the FIFO the thread would give up
    instead of blocking forever."""
    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)
    data = make_text(3000).encode()
    wrote: list[int] = []

    def writer() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:  # ENXIO: no reader yet
                if e.errno != errno.ENXIO:
                    raise
                time.sleep(0.01)
                continue
            os.set_blocking(fd, True)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            wrote.append(len(data))
            return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    result = train(fifo, tmp_path / "ck")
    thread.join(timeout=30)
    assert wrote == [len(data)], "the writer never got a reader"
    assert result.exit_code == 0, result.output
    ckpt = load_finite(tmp_path / "ck" / checkpoint.LATEST)
    assert ckpt.data["corpus"]["length"] == len(data) and ckpt.data["step"] == 4


def test_whitespace_only_corpus_trains_and_samples(tmp_path):
    """Spaces, tabs and newlines are characters like any other: a long enough text of only
    whitespace is a valid (dull) corpus, so it trains rather than being refused."""
    import random
    rng = random.Random(3)
    path = tmp_path / "blank.txt"
    path.write_text("".join(rng.choice(" \t\n") for _ in range(3000)))
    assert train(path, tmp_path / "ck").exit_code == 0
    assert load_finite(tmp_path / "ck" / checkpoint.LATEST).vocab.chars == ["\t", "\n", " "]
    sample = invoke("sample", "--checkpoint", tmp_path / "ck", "--length", 50, "--seed", 1)
    assert sample.exit_code == 0 and len(sample.stdout) >= 50 and not sample.stdout.strip()


def test_single_repeated_character_trains_and_samples(tmp_path):
    path = tmp_path / "aaaa.txt"
    path.write_text("a" * 3000)
    assert train(path, tmp_path / "ck").exit_code == 0
    assert load_finite(tmp_path / "ck" / checkpoint.LATEST).vocab.chars == ["a"]
    sample = invoke("sample", "--checkpoint", tmp_path / "ck", "--length", 20, "--seed", 1)
    assert sample.exit_code == 0 and sample.stdout == "a" * 20 + "\n"
    evaluated = invoke("eval", path, "--checkpoint", tmp_path / "ck", "--json")
    assert evaluated.exit_code == 0 and json.loads(evaluated.stdout)["loss"] == pytest.approx(0.0, abs=1e-6)


def test_closed_or_empty_stdin(tmp_path):
    """`train -` with stdin at EOF (DEVNULL) and with fd 0 closed (`0<&-`): real processes, run
    side by side to halve the start-up cost."""
    args = ["train", "-", *TINY, "--max-steps", 4]
    devnull = subprocess.Popen(charrnn_argv(*args, "--checkpoint-dir", tmp_path / "ck1"), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=charrnn_env(), text=True)
    command = " ".join(charrnn_argv(*args, "--checkpoint-dir", "ck2")) + " 0<&-"
    closed = subprocess.Popen(["bash", "-c", command], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=charrnn_env(), text=True)
    outcomes = {}
    for name, proc in [("devnull", devnull), ("closed", closed)]:
        out, err = proc.communicate(timeout=120)
        outcomes[name] = (proc.returncode, out, err)
    for name, (code, out, err) in outcomes.items():
        assert code == 1, (name, err)
        assert out == "" and "Traceback" not in err, (name, err)
        outcomes[name] = one_line_error(err)
    assert "<stdin>" in outcomes["devnull"] and "empty" in outcomes["devnull"]
    assert "standard input" in outcomes["closed"] and "closed" in outcomes["closed"]
    assert not (tmp_path / "ck1").exists() and not (tmp_path / "ck2").exists()


BOM = b"\xef\xbb\xbf"  # U+FEFF in UTF-8, which Windows editors often put at the start of a file


def test_a_leading_byte_order_mark_is_no_character_in_train_eval_or_a_prime(tmp_path):
    """A file that starts with a BOM trains, evaluates and primes as the same file without one;
    U+FEFF anywhere else is kept, a character like any other."""
    text = make_text(3000)
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_bytes(text.encode())
    marked.write_bytes(BOM + text.encode())
    assert train(marked, tmp_path / "ck").exit_code == 0
    info = json.loads(invoke("info", tmp_path / "ck", "--json").stdout)
    assert "\\ufeff" not in info["vocab"] and info["vocab_size"] == len(set(text)), info["vocab"]

    losses = []
    for path in (plain, marked):
        result = invoke("eval", path, "--checkpoint", tmp_path / "ck", "--json")
        assert result.exit_code == 0, result.output
        losses.append(json.loads(result.stdout)["loss"])
    assert losses[0] == losses[1]

    prime = tmp_path / "prime.txt"
    prime.write_bytes(BOM + b"the cat")
    sample = invoke("sample", "--checkpoint", tmp_path / "ck", "--prime-file", prime, "--length", 10, "--seed", 1)
    assert sample.exit_code == 0, sample.output  # was: U+FEFF outside the vocabulary
    assert sample.stdout.startswith("the cat") and "\ufeff" not in sample.stdout

    middle = tmp_path / "middle.txt"
    middle.write_bytes(BOM + text[:1500].encode() + BOM + text[1500:].encode())
    assert train(middle, tmp_path / "ck2").exit_code == 0
    assert "\ufeff" in load_finite(tmp_path / "ck2" / checkpoint.LATEST).vocab.chars


def test_a_bad_byte_after_a_byte_order_mark_names_its_file_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(BOM + LATIN1_TEXT.encode("latin-1"))
    offset = len(BOM) + LATIN1_TEXT.index("é")
    assert_refused(train(path, tmp_path / "ck"), tmp_path / "ck", f"byte 0xe9 at offset {offset}")
