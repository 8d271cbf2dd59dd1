import json
import math

import pytest
import torch

from charrnn import __version__, checkpoint
from charrnn.cli import cli
from charrnn.native import recurrence as lstm_train

from .helpers import TINY, invoke, torch_threads

COMMANDS = ["corpus", "train", "sample", "eval", "viz", "export", "info"]


def test_version_and_help_with_examples():
    assert __version__ in invoke("--version").output
    assert "Examples" in invoke("--help").output
    for command in COMMANDS:
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Examples" in result.output, command


def test_train_from_stdin_then_sample_eval_info(tmp_path, corpus_file):
    ckpt = tmp_path / "ck"
    text = corpus_file.read_text()
    result = invoke("train", "-", "--checkpoint-dir", str(ckpt), "--max-steps", "20", "--eval-every", "10", *TINY,
                    input=text)
    assert result.exit_code == 0, result.output
    assert (ckpt / "latest.pt").exists() and (ckpt / "best.pt").exists()
    assert "step 10" in result.stderr and "step 10" not in result.stdout  # progress on stderr only

    sample = invoke("sample", "--checkpoint", str(ckpt), "--prime", "the ", "--length", "50", "--seed", "1")
    assert sample.exit_code == 0
    assert sample.stdout.startswith("the ") and len(sample.stdout.rstrip("\n")) >= 50
    again = invoke("sample", "--checkpoint", str(ckpt), "--prime", "the ", "--length", "50", "--seed", "1")
    assert again.stdout == sample.stdout
    hidden_prime = invoke("sample", "--checkpoint", str(ckpt), "--prime", "the ", "--length", "50", "--seed", "1",
                          "--no-echo-prime")
    assert sample.stdout == "the " + hidden_prime.stdout

    evaluated = invoke("eval", str(corpus_file), "--checkpoint", str(ckpt), "--json")
    figures = json.loads(evaluated.stdout)
    assert figures["chars"] == len(text) - 1
    assert figures["bpc"] == pytest.approx(figures["loss"] / math.log(2))
    assert figures["perplexity"] == pytest.approx(math.exp(figures["loss"]))

    info = json.loads(invoke("info", str(ckpt / "latest.pt"), "--json").stdout)
    assert info["step"] == 20 and info["vocab_size"] == len(set(text)) and info["parameters"] > 0
    assert info["corpus_length"] == len(text) and len(info["corpus_sha256"]) == 64
    assert "parameters" in invoke("info", str(ckpt)).stdout


def test_checkpoint_dir_from_environment(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setenv("CHARRNN_CHECKPOINT_DIR", str(tmp_path / "env-ck"))
    result = invoke("train", str(corpus_file), "--max-steps", "2", "-q", *TINY)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env-ck" / "latest.pt").exists()
    assert invoke("info", "--json").exit_code == 0
    monkeypatch.setenv("CHARRNN_SAMPLE_LENGTH", "7")  # click's automatic per-command variables
    assert len(invoke("sample", "--no-echo-prime", "--seed", "1").stdout.rstrip("\n")) <= 7


def test_sample_batch_stop_and_bad_prime(trained_dir):
    batch = invoke("sample", "--checkpoint", str(trained_dir), "-n", "3", "--length", "40", "--seed", "2",
                   "--separator", "\n====\n")
    assert batch.exit_code == 0 and batch.stdout.count("\n====\n") == 2
    stopped = invoke("sample", "--checkpoint", str(trained_dir), "--length", "2000", "--stop", ".", "--seed", "3",
                     "--prime", "the")
    assert stopped.exit_code == 0 and stopped.stdout.rstrip("\n").endswith(".") and len(stopped.stdout) < 2000
    bad = invoke("sample", "--checkpoint", str(trained_dir), "--prime", "ZQ€")
    assert bad.exit_code == 1 and "Q Z €" in bad.stderr and "Traceback" not in bad.output
    for args in (["--temp", "-1"], ["--top-k", "0"], ["--top-p", "0"], ["--top-p", "1.5"], ["--length", "-3"]):
        result = invoke("sample", "--checkpoint", str(trained_dir), *args)
        assert result.exit_code == 2, args


def test_temperature_zero_is_deterministic_without_seed(trained_dir):
    a = invoke("sample", "--checkpoint", str(trained_dir), "--temperature", "0", "--length", "60")
    b = invoke("sample", "--checkpoint", str(trained_dir), "--temp", "0", "--length", "60")
    assert a.exit_code == 0 and a.stdout == b.stdout


def test_eval_unknown_characters(trained_dir, tmp_path):
    text = tmp_path / "odd.txt"
    text.write_text("the cat sat on the mat. ZZZ €\n")
    fails = invoke("eval", str(text), "--checkpoint", str(trained_dir))
    assert fails.exit_code == 1 and "Z €" in fails.stderr
    skipped = invoke("eval", str(text), "--checkpoint", str(trained_dir), "--skip-unknown", "--json")
    assert skipped.exit_code == 0 and json.loads(skipped.stdout)["skipped"] == 4


def test_user_errors_are_one_line(tmp_path, corpus_file):
    cases = [
        (["train", str(tmp_path / "missing.txt")], "no such file"),
        (["train", str(tmp_path)], "directory"),
        (["sample", "--checkpoint", str(tmp_path / "none.pt")], "no such checkpoint"),
        (["info", str(tmp_path)], "no checkpoint"),
        (["train", str(corpus_file), "--checkpoint-dir", str(tmp_path / "c"), "--batch-size", "512",
          "--seq-len", "512"], "too short"),
    ]
    for args, expected in cases:
        result = invoke(*args)
        assert result.exit_code in (1, 2), args
        assert expected in result.stderr and "Traceback" not in result.output, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # A failed start writes no checkpoint; the encoded corpus stays cached for the retry.
    assert not list((tmp_path / "c").glob("*.pt"))
    assert len(list((tmp_path / "c" / "cache").glob("*.tokens"))) == 1


def test_the_run_records_the_options_it_was_given(tmp_path, corpus_file):
    ckpt = tmp_path / "ck"
    trained = invoke("train", str(corpus_file), "--checkpoint-dir", str(ckpt), "--max-steps", "4", "--hidden", "40",
                     "--batch-size", "8", "--seq-len", "24", "--layers", "1", "-q")
    assert trained.exit_code == 0, trained.output
    args = checkpoint.load(ckpt / "latest.pt").data["train_args"]
    assert (args["hidden"], args["layers"], args["seq_len"], args["batch_size"], args["max_steps"]) == (40, 1, 24, 8, 4)
    assert args["lr"] == 1.2e-2 and args["max_epochs"] is None
    # A resumed run keeps its own options; the ones that define it cannot change.
    resumed = invoke("train", str(corpus_file), "--checkpoint-dir", str(ckpt), "--max-steps", "6", "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.load(ckpt / "latest.pt").data["train_args"]["hidden"] == 40
    changed = invoke("train", str(corpus_file), "--checkpoint-dir", str(ckpt), "--resume", "--hidden", "48", "-q")
    assert changed.exit_code == 1 and "--hidden 48 differs" in changed.stderr


def test_precision_is_chosen_per_run_and_reported(tmp_path, corpus_file):
    from charrnn.runtime import DEVICES, PRECISIONS

    for command in ("train", "eval"):
        for name, expected in (("precision", PRECISIONS), ("device", DEVICES)):
            choices = next(p.type.choices for p in cli.commands[command].params if p.name == name)
            assert tuple(choices) == expected, (command, name)
    ckpt = tmp_path / "ck"
    trained = invoke("train", str(corpus_file), "--checkpoint-dir", str(ckpt), "--max-steps", "10", "--precision",
                     "bf16", *TINY)
    assert trained.exit_code == 0 and "device cpu, bf16" in trained.stderr, trained.output
    resumed = invoke("train", str(corpus_file), "--checkpoint-dir", str(ckpt), "--max-steps", "20", "--resume",
                     "--precision", "fp32")
    assert resumed.exit_code == 0 and "device cpu, fp32" in resumed.stderr, resumed.output
    assert json.loads(invoke("info", str(ckpt), "--json").stdout)["precision"] == "fp32"
    figures = {p: json.loads(invoke("eval", str(corpus_file), "--checkpoint", str(ckpt), "--json", "-q",
                                    "--precision", p).stdout) for p in ("fp32", "bf16")}
    assert figures["fp32"]["precision"] == "fp32" and figures["bf16"]["precision"] == "bf16"
    assert figures["bf16"]["loss"] == pytest.approx(figures["fp32"]["loss"], abs=0.02)
    bad = invoke("eval", str(corpus_file), "--checkpoint", str(ckpt), "--precision", "fp16")
    assert bad.exit_code == 2 and "fp16" in bad.stderr


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_says_which_recurrence_its_steps_take(tmp_path, corpus_file, monkeypatch, precision):
    """The first line names the C recurrence (native/recurrence.py's choice) when the batch and hidden size
    fit it, and nothing when nn.LSTM runs: another shape, or CHARRNN_LSTM_KERNEL=off."""
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    chosen = lstm_train.kernel(dtype)
    runs = {"fits": ("--batch-size", "16", "--hidden", "32"), "other shape": ("--batch-size", "8", "--hidden", "32"),
            "off": ("--batch-size", "16", "--hidden", "32")}
    for name, shape in runs.items():
        if name == "off":
            monkeypatch.setenv(lstm_train.KERNEL_ENV, "off")
        trained = invoke("train", str(corpus_file), "--checkpoint-dir", str(tmp_path / name), "--max-steps", "2",
                         "--precision", precision, "--layers", "1", *shape)
        first = trained.stderr.splitlines()[0]
        assert trained.exit_code == 0 and f"device cpu, {precision}" in first, trained.output
        if name == "fits" and chosen is not None:
            assert first.endswith(f", recurrence {chosen.source}")
        else:
            assert "recurrence" not in first


def test_threads_option_sets_torchs_threads_for_sample_and_eval(trained_dir, corpus_file, monkeypatch):
    with torch_threads(1):
        result = invoke("sample", "--checkpoint", str(trained_dir), "--length", "20", "--seed", "1", "--threads", "2")
        assert result.exit_code == 0 and torch.get_num_threads() == 2
        monkeypatch.setenv("CHARRNN_EVAL_THREADS", "3")  # click's automatic environment variable
        result = invoke("eval", str(corpus_file), "--checkpoint", str(trained_dir), "--json")
        assert result.exit_code == 0 and torch.get_num_threads() == 3
    for command in (["train", str(corpus_file)], ["sample"], ["eval", str(corpus_file)]):
        refused = invoke(*command, "--threads", "0")
        assert refused.exit_code == 2 and "--threads" in refused.stderr, command
