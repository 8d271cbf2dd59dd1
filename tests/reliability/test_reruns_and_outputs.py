"""A second run into a used checkpoint dir, encodings that are not text encodings, output
that cannot be written, closed standard streams, and environment variables named after
the flags users type."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import click
import pytest

from charrnn import checkpoint
from charrnn.cli import cli

from ..helpers import TINY, charrnn_argv, charrnn_env, invoke, one_line_error, train_tiny, write_corpus


def test_a_new_run_never_replaces_a_run_already_in_the_folder(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    ckpt = tmp_path / "ck"
    train_tiny(ckpt, corpus)
    before = {name: (ckpt / name).read_bytes() for name in (checkpoint.LATEST, checkpoint.BEST)}
    again = invoke("train", corpus, "--checkpoint-dir", ckpt, "--max-steps", 3, "-q")
    assert again.exit_code == 1
    assert "already holds a run" in one_line_error(again.stderr) and "--resume" in again.stderr
    assert {name: (ckpt / name).read_bytes() for name in before} == before
    both = invoke("train", corpus, "--checkpoint-dir", ckpt, "--resume", "--overwrite")
    assert both.exit_code == 2 and "not both" in both.stderr
    train_tiny(ckpt, corpus, "--resume", steps=9)  # the ways on are still open
    assert checkpoint.load(ckpt / checkpoint.LATEST).data["step"] == 9
    too_short = invoke("train", corpus, "--checkpoint-dir", ckpt, "--overwrite", "--seq-len", 4000, "-q")
    assert too_short.exit_code == 1 and checkpoint.load(ckpt / checkpoint.LATEST).data["step"] == 9
    train_tiny(ckpt, corpus, "--overwrite", steps=2)
    assert [checkpoint.load(ckpt / name).data["step"] for name in (checkpoint.LATEST, checkpoint.BEST)] == [2, 2]


@pytest.mark.parametrize("encoding, expected", [
    ("hex", "not a text encoding"), ("rot13", "not a text encoding"), ("zlib", "not a text encoding"),
    ("no-such-codec", "unknown encoding"), ("utf-16", "cannot be read as utf-16"),
])
def test_encodings_that_cannot_read_the_text_are_one_line_errors(tmp_path, trained, encoding, expected):
    corpus = write_corpus(tmp_path / "corpus.txt")  # ASCII: no UTF-16 byte-order mark
    for args in (("train", corpus, "--checkpoint-dir", tmp_path / "ck"), ("eval", corpus, "--checkpoint", trained)):
        result = invoke(*args, "--encoding", encoding, "-q")
        assert result.exit_code == 1 and expected in one_line_error(result.stderr), (args, result.output)


def test_text_cut_through_a_character_says_so(trained, tmp_path):
    ascii_text = write_corpus(tmp_path / "corpus.txt").read_bytes()
    for cut, where in ((b"\xa9" + ascii_text, "begins"), (ascii_text + "é".encode()[:1], "ends")):
        result = invoke("eval", "-", "--checkpoint", trained, "-q", input=cut)
        assert result.exit_code == 1
        message = one_line_error(result.stderr)
        assert f"{where} in the middle of a UTF-8 character" in message and "tail -n" in message


def test_a_prime_file_that_is_not_utf8_is_a_one_line_error(trained, tmp_path):
    prime = tmp_path / "prime.bin"
    prime.write_bytes(b"the \xff\xfe cat")
    result = invoke("sample", "--checkpoint", trained, "--prime-file", prime, "--length", 5)
    assert result.exit_code == 2 and "not UTF-8" in result.stderr and "Traceback" not in result.output


def test_corpus_output_that_cannot_be_written_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    result = invoke("corpus", "python-stdlib", "--max-bytes", 100, "-o", blocker / "inside.txt")
    assert result.exit_code == 1 and "cannot write" in one_line_error(result.stderr)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_on_a_full_disk_is_a_one_line_error(trained):
    with open("/dev/full", "w") as full:
        result = subprocess.run(charrnn_argv("info", trained), stdout=full, stderr=subprocess.PIPE, text=True,
                                env=charrnn_env(), timeout=120)
    assert result.returncode == 1 and "No space left" in one_line_error(result.stderr)


def test_closed_stdout_and_stderr_neither_crash_a_run_nor_reach_its_files(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    ckpt = tmp_path / "ck"
    # The shell's `>&- 2>&-`: the child starts with descriptors 1 and 2 closed.
    argv = charrnn_argv("train", corpus, "--checkpoint-dir", ckpt, *TINY, "--max-steps", 3)
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, env=charrnn_env(), timeout=120,
                            preexec_fn=lambda: (os.close(1), os.close(2)))
    assert result.returncode == 0
    assert checkpoint.load(ckpt / checkpoint.LATEST).data["step"] == 3


def test_every_option_reads_the_environment_variable_named_after_its_flag(trained, monkeypatch):
    shared = {"--checkpoint-dir", "--cache-dir"}  # CHARRNN_CHECKPOINT_DIR, CHARRNN_CACHE_DIR for every command
    for command_name, command in cli.commands.items():
        for param in command.params:
            flags = [o for o in param.opts if o.startswith("--")]
            if not isinstance(param, click.Option) or not flags or flags[0] in shared:
                continue
            expected = f"CHARRNN_{command_name.upper()}_{flags[0][2:].replace('-', '_').upper()}"
            named = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            automatic = f"CHARRNN_{command_name.upper()}_{param.name.upper()}"
            assert expected in named or expected == automatic, (command_name, flags[0])
    flagged = invoke("sample", "--checkpoint", trained, "--length", 30, "--temp", 0)
    monkeypatch.setenv("CHARRNN_SAMPLE_TEMP", "0")
    monkeypatch.setenv("CHARRNN_INFO_JSON", "1")
    assert invoke("sample", "--checkpoint", trained, "--length", 30, "--seed", 5).stdout == flagged.stdout
    assert json.loads(invoke("info", trained).stdout)["step"] == 20
    monkeypatch.setenv("CHARRNN_EVAL_CHECKPOINT", str(Path(trained)))
    assert invoke("eval", "-", "--json", "-q", input="the cat sat on a mat").exit_code == 0
