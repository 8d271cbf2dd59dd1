"""Checkpoints written by older versions keep working: load, sample, evaluate, resume.

tests/fixtures/tiny_run/ holds a tiny checkpoint (lstm 1x8, 60 steps) written by charrnn at
commit 879af44 on 2026-12-01; tests/fixtures/README.md has the exact command. Every later version
must load it, sample the same seeded text from it, give it the same loss on its corpus and
resume training from it. A format change must migrate old files, not break them: never
regenerate the fixture to make this test pass.

The expected strings were recorded with that commit's CLI, with the C sampling step and with
`CHARRNN_NATIVE=0` (the eager step), which gave the same text byte for byte. Sampling is fp32
and evaluation runs at `--precision fp32`, so neither depends on the CPU's bf16 support.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from .helpers import run_charrnn
from .helpers import succeeds as invoke

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUN = FIXTURES / "tiny_run"
LATEST = RUN / "latest.pt"
CORPUS = FIXTURES / "tiny_corpus.txt"

CHECKPOINT_SHA256 = "49d52399a3e8ff5d3c17fc6e916b8532e7ff51a05ea0cee9ef11146e6fb5bd21"  # latest.pt == best.pt
CORPUS_SHA256 = "8f23992452b3fee7c255064aa48bf0db7a8666e859bbe3f741820fb97cdd355c"

# (sample arguments, the text charrnn printed at 879af44)
SAMPLES = {
    "seed1-temp0.8": (
        ["--seed", "1", "--length", "200", "--temp", "0.8"],
        "n. \nc hs tir he the ce isn tlte te tod lon, ihton and aoon\nhn itran aAn\n\nAs the tho l haotn "
        "sdtane heon gd\n hool iThe ih he bthe at,d iog tree thee tse ttrorog an t e,ne sttoreAa twr ios "
        "tos n tthe og\n",
    ),
    "batch-of-2": (
        ["--seed", "2", "--length", "80", "-n", "2"],
        "ge hon taTtoog igd whx oa Thsto ho, thts ag oigdee ,,on ic ap. wot thwn e bow  i\n\n"
        "in l, etat thrhe hoon at te, msa. le a\ngwn la an tia, te s hte tre ee tco mn, ee\n",
    ),
    "prime-top-k-top-p": (
        ["--seed", "3", "--length", "80", "--prime", "The ", "--top-k", "5", "--top-p", "0.9"],
        "The a h ole otao o onn, tee han a he a he he iole an ton toon, hon ha o tond oon the\n",
    ),
    "greedy": (
        ["--seed", "4", "--length", "60", "--temp", "0"],
        "the the the the the the the the the the the the the the the \n",
    ),
}

EVAL_LOSS = 2.068512932585439  # --streams 16 (the default), fp32
EVAL_LOSS_ONE_STREAM = 2.068512944478384  # --streams 1



def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_fixture_files_are_the_ones_recorded():
    """The fixture is history: a test that fails here was 'fixed' by regenerating it."""
    assert sha256(RUN / "latest.pt") == CHECKPOINT_SHA256
    assert sha256(RUN / "best.pt") == CHECKPOINT_SHA256
    assert sha256(CORPUS) == CORPUS_SHA256


def test_info_reads_the_old_checkpoint():
    info = json.loads(invoke("info", str(LATEST), "--json").stdout)
    assert {k: info[k] for k in ("cell", "layers", "hidden", "vocab_size", "parameters", "step", "precision",
                                 "corpus_sha256", "corpus_length")} == {
        "cell": "lstm", "layers": 1, "hidden": 8, "vocab_size": 30, "parameters": 1086, "step": 60,
        "precision": "fp32", "corpus_sha256": CORPUS_SHA256, "corpus_length": 427}
    assert info["dropout"] == pytest.approx(0.1) and info["weight_drop"] == 0
    assert info["best_val_loss"] == pytest.approx(2.3437460540306, abs=1e-9)
    assert info["vocab"] == "\\n ' ' , . : ; A O R T a b c d e f g h i l m n o p r s t u w x"


@pytest.mark.parametrize("name", list(SAMPLES))
def test_sampling_the_old_checkpoint_gives_the_pinned_text(name):
    args, expected = SAMPLES[name]
    assert invoke("sample", "--checkpoint", str(LATEST), *args).stdout == expected


@pytest.mark.parametrize("name", ["seed1-temp0.8", "prime-top-k-top-p"])
def test_the_eager_step_samples_the_same_pinned_text(name, monkeypatch):
    """A real process with the C step turned off: the eager step must agree with it."""
    monkeypatch.setenv("CHARRNN_NATIVE", "0")
    args, expected = SAMPLES[name]
    proc = run_charrnn("sample", "--checkpoint", str(LATEST), "--threads", "1", *args)
    assert proc.stdout.decode("utf-8") == expected


@pytest.mark.parametrize("streams, expected", [(None, EVAL_LOSS), ("1", EVAL_LOSS_ONE_STREAM)])
def test_evaluating_the_old_checkpoint_gives_the_pinned_loss(streams, expected):
    extra = ["--streams", streams] if streams else []
    result = json.loads(invoke("eval", str(CORPUS), "--checkpoint", str(RUN), "--precision", "fp32", "--json",
                               *extra).stdout)
    assert result["checkpoint"] == str(RUN / "best.pt")
    assert result["chars"] == 426 and result["skipped"] == 0 and result["precision"] == "fp32"
    assert result["loss"] == pytest.approx(expected, abs=1e-6)


def test_training_resumes_from_the_old_checkpoint(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    shutil.copyfile(LATEST, ck / "latest.pt")
    result = invoke("train", str(CORPUS), "--checkpoint-dir", str(ck), "--resume", "--max-steps", "70",
                    "--eval-every", "5", "--precision", "fp32", "--threads", "1")
    assert "resuming at step 60" in result.output
    assert "step 61 " in result.output and "step 70 " in result.output and "step 60 " not in result.output
    info = json.loads(invoke("info", str(ck / "latest.pt"), "--json").stdout)
    assert info["step"] == 70
    assert (info["cell"], info["layers"], info["hidden"], info["vocab_size"]) == ("lstm", 1, 8, 30)
    assert info["corpus_sha256"] == CORPUS_SHA256
    assert sha256(ck / "latest.pt") != CHECKPOINT_SHA256  # it trained and wrote
    assert sha256(LATEST) == CHECKPOINT_SHA256  # and the fixture was only read
