"""The Python API (charrnn/api.py): the CLI's defaults and seeded output, charrnn's own errors,
nothing on stdout, progress only when asked for, a lazy import, and the README's example."""

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from itertools import islice
from pathlib import Path

import click
import pytest
import torch

import charrnn
from charrnn import checkpoint, config
from charrnn.cli import cli
from charrnn.cli_options import parse_duration
from charrnn.errors import CharrnnError, CheckpointError
from charrnn.generation.jobs import SampleJob
from charrnn.scoring import EvalJob

from .helpers import TINY, charrnn_env, invoke, make_corpus, run_charrnn

README = Path(__file__).resolve().parents[1] / "README.md"
NAMES = ["anna", "bob", "carl"]
RECORD_RUN = dict(records=True, max_steps=150, layers=1, hidden=32, eval_every=50, seed=3)
TINY_RUN = dict(layers=1, hidden=32, batch_size=8, seq_len=32, eval_every=20, device="cpu")



def as_printed(text: str) -> str:
    """A sample as `charrnn sample` prints it: with a newline at the end for the shell's prompt."""
    return text if text.endswith("\n") else text + "\n"


@pytest.fixture(scope="module")
def names_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("names") / "names.txt"
    path.write_text("\n".join(NAMES * 40) + "\n")
    return path


@pytest.fixture(scope="module")
def names_model(tmp_path_factory, names_file):
    """A record model trained through the API (as test_records.py trains one through the CLI)."""
    result = charrnn.train(names_file, tmp_path_factory.mktemp("api") / "ck", device="cpu", **RECORD_RUN)
    assert result.exit_code == 0 and result.steps == 150
    return charrnn.load(result.checkpoint_dir)


@pytest.fixture(scope="module")
def stream_model(trained_dir):
    return charrnn.load(trained_dir)


# ---- the same defaults and the same output as the CLI ---------------------------------------
def test_defaults_are_the_clis():
    def cli_defaults(command):  # an option without a default has None (or click's UNSET) for it
        ctx = click.Context(cli.commands[command])
        defaults = {p.name: p.get_default(ctx) for p in ctx.command.params}
        return {k: v if isinstance(v, (str, int, float, type(None))) else None for k, v in defaults.items()}

    sample, evaluate, train = cli_defaults("sample"), cli_defaults("eval"), cli_defaults("train")
    for method in (charrnn.Model.generate, charrnn.Model.stream):
        given = inspect.signature(method).parameters
        for name in ("prime", "length", "temperature", "top_k", "top_p", "seed", "stop", "novel", "unique"):
            assert given[name].default == sample[name], name
        assert given["echo_prime"].default is not sample["no_echo_prime"]
        assert given["n"].default is None and SampleJob.num_samples == sample["num_samples"]
    assert inspect.signature(charrnn.Model.generate).parameters["beam"].default == sample["beam"]
    assert config.SAMPLE_SEPARATOR == sample["separator"]
    given = inspect.signature(charrnn.Model.score).parameters
    for name in ("encoding", "skip_unknown", "streams", "precision"):
        assert given[name].default == evaluate[name] == getattr(EvalJob, name), name
    given = inspect.signature(charrnn.train).parameters
    for name in ("checkpoint_dir", "device", "precision", "resume", "overwrite", "encoding", "cache_dir"):
        assert given[name].default == train[name], name
    # Every other train option is a config field, which the CLI's options are made from.
    assert {f.name for f in config.option_fields()} <= set(train)


def test_a_seeded_sample_is_the_clis_stdout(trained_dir, stream_model):
    proc = run_charrnn("sample", "--checkpoint", str(trained_dir), "--seed", "1", "--length", "200", "--temp", "0.8")
    text = stream_model.generate(seed=1, length=200, temperature=0.8)
    assert isinstance(text, str) and len(text) == 200
    assert proc.stdout.decode() == as_printed(text)


@pytest.mark.parametrize("args, kwargs", [
    (["--prime", "the ", "--top-p", "0.9", "--seed", "1", "--length", "120", "--temp", "0.8"],
     dict(prime="the ", top_p=0.9, seed=1, length=120, temperature=0.8)),
    (["--prime", "a dog", "--no-echo-prime", "--top-k", "5", "--seed", "7", "--length", "60"],
     dict(prime="a dog", echo_prime=False, top_k=5, seed=7, length=60)),
    (["--seed", "2", "--length", "50", "--temp", "0", "--stop", "."], dict(seed=2, length=50, temperature=0, stop=".")),
    (["-n", "1", "--seed", "3", "--length", "40"], dict(n=1, seed=3, length=40)),
])
def test_stream_samples_equal_the_clis(trained_dir, stream_model, args, kwargs):
    text = stream_model.generate(**kwargs)
    assert isinstance(text, str)
    assert invoke("sample", "--checkpoint", trained_dir, *args).stdout == as_printed(text)
    assert "".join(stream_model.stream(**kwargs)) == text


@pytest.mark.parametrize("args, kwargs", [
    (["-n", "3", "--seed", "5", "--length", "80"], dict(n=3, seed=5, length=80)),
    (["-n", "3", "--seed", "5", "--length", "80", "--prime", "she ", "--stop", "."],
     dict(n=3, seed=5, length=80, prime="she ", stop=".")),
])
def test_batches_equal_the_clis(trained_dir, stream_model, args, kwargs):
    texts = stream_model.generate(**kwargs)
    assert isinstance(texts, list) and len(texts) == 3
    printed = invoke("sample", "--checkpoint", trained_dir, *args).stdout
    assert printed == as_printed(config.SAMPLE_SEPARATOR.join(texts))


def test_beams_equal_the_clis(trained_dir, stream_model, names_model):
    cli_beams = json.loads(invoke("sample", "--checkpoint", trained_dir, "--beam", 3, "--prime", "the", "--length",
                                  20, "--json").stdout)
    beams = stream_model.beam(3, prime="the", length=20)
    assert beams == [(b["text"], b["log_prob"]) for b in cli_beams] == stream_model.generate("the", 20, beam=3)
    assert all(text.startswith("the") and len(text) == 23 for text, _ in beams)
    cli_records = json.loads(invoke("sample", "--checkpoint", names_model.path, "--beam", 3, "--json").stdout)
    assert names_model.beam(3) == [(b["text"], b["log_prob"]) for b in cli_records]
    assert sorted(text for text, _ in names_model.beam(3)) == sorted(NAMES)


@pytest.mark.parametrize("args, kwargs", [
    (["-n", "5", "--seed", "2"], dict(n=5, seed=2)),
    (["-n", "5", "--novel", "--seed", "2", "--length", "8"], dict(n=5, novel=True, seed=2, length=8)),
    (["-n", "3", "--unique", "--seed", "2"], dict(n=3, unique=True, seed=2)),
    (["--prime", "ca", "-n", "4", "--seed", "4", "--no-echo-prime"], dict(prime="ca", n=4, seed=4, echo_prime=False)),
    (["--temp", "0"], dict(temperature=0)),
])
def test_records_equal_the_clis(names_model, args, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a --novel run that falls short says so
        records = names_model.generate(**kwargs)
        streamed = list(names_model.stream(**kwargs))
    assert isinstance(records, list) and records == streamed and records
    assert invoke("sample", "--checkpoint", names_model.path, *args).stdout == "".join(r + "\n" for r in records)
    if kwargs.get("novel"):
        assert not set(records) & set(NAMES)


def test_a_record_model_trained_by_the_api_is_the_one_the_cli_trains(names_model, names_file, tmp_path):
    args = [a for k, v in RECORD_RUN.items() for a in (["--" + k.replace("_", "-")] if v is True
                                                        else ["--" + k.replace("_", "-"), v])]
    assert invoke("train", names_file, "--checkpoint-dir", tmp_path, "-q", *args).exit_code == 0
    by_cli, by_api = checkpoint.load(tmp_path / "latest.pt"), checkpoint.load(names_model.path.parent / "latest.pt")
    assert by_cli.data["train_args"] == by_api.data["train_args"]
    for name, tensor in by_cli.data["model"].items():
        assert torch.equal(tensor, by_api.data["model"][name]), name


def test_too_few_records_warn(names_model):
    with pytest.warns(RuntimeWarning, match="only 1 of 2 records"):
        assert len(names_model.generate(n=2, unique=True, temperature=0)) == 1


def test_stream_yields_as_it_goes(stream_model):
    pieces = stream_model.stream(length=10**9, seed=1)  # a list of it would never end
    first = list(islice(pieces, 5000))
    assert all(isinstance(p, str) and len(p) == 1 for p in first)
    assert "".join(first) == stream_model.generate(length=5000, seed=1)
    shown = list(islice(stream_model.stream(prime="the cat", length=3), 10))
    assert shown[0] == "the cat" and len(shown) == 4


# ---- score ----------------------------------------------------------------------------------
def test_score_is_charrnn_evals(trained_dir, stream_model, corpus_file, tmp_path):
    held_out = tmp_path / "held.txt"
    held_out.write_text(make_corpus(3000, seed=9))
    expected = json.loads(invoke("eval", held_out, "--checkpoint", trained_dir, "--json").stdout)
    assert stream_model.score(held_out.read_text()) == expected == stream_model.score(path=held_out)
    assert {"loss", "bpc", "perplexity", "chars"} <= set(expected) and expected["chars"] == 2999
    assert stream_model.score("the cat sat.\nZ", skip_unknown=True)["skipped"] == 1


def test_score_of_a_record_model(names_model, tmp_path):
    held_out = tmp_path / "held.txt"
    held_out.write_text("anna\nbob\n")
    expected = json.loads(invoke("eval", held_out, "--checkpoint", names_model.path, "--json").stdout)
    assert names_model.score("anna\nbob\n") == expected and expected["records"] == 2


# ---- errors, stdout, progress -----------------------------------------------------------------
def test_errors_are_charrnns_own(tmp_path, stream_model, names_model, corpus_file, trained_dir):
    cases = [
        (CheckpointError, "no such checkpoint", lambda: charrnn.load(tmp_path / "none.pt")),
        (CheckpointError, "no checkpoint in", lambda: charrnn.load(tmp_path)),
        (CharrnnError, "unknown device", lambda: charrnn.load(trained_dir, device="tpu")),
        (ValueError, "temperature", lambda: stream_model.generate(temperature=-1)),
        (ValueError, "top-p", lambda: stream_model.generate(top_p=0)),
        (ValueError, "samples", lambda: stream_model.generate(n=0)),
        (ValueError, "prime", lambda: stream_model.generate(prime="")),
        (ValueError, "one stream sample", lambda: stream_model.stream(n=2)),
        (CharrnnError, "never saw", lambda: stream_model.generate(prime="Z")),
        (CharrnnError, "never saw", lambda: stream_model.stream(prime="Z")),  # at once, not at the first piece
        (CharrnnError, "record models", lambda: stream_model.generate(novel=True)),
        (CharrnnError, "never saw", lambda: names_model.generate(prime="z")),
        (CharrnnError, "outside the model's vocabulary", lambda: stream_model.score("Zebra")),
        (ValueError, "not both", lambda: stream_model.score("the", path=corpus_file)),
        (ValueError, "unknown train option bogus", lambda: charrnn.train(corpus_file, tmp_path, bogus=1)),
        (ValueError, "duration like 90s", lambda: charrnn.train(corpus_file, tmp_path, max_time="ten minutes")),
        (ValueError, "layers must be an integer >= 1", lambda: charrnn.train(corpus_file, tmp_path, layers=0)),
        (ValueError, "cell must be one of", lambda: charrnn.train(corpus_file, tmp_path, cell="transformer")),
        (ValueError, r"val_frac must be a finite number in \(0, 1\)", lambda: charrnn.train(corpus_file, tmp_path,
                                                                                            val_frac=1)),
        (ValueError, "resume or overwrite", lambda: charrnn.train(corpus_file, tmp_path, resume=True, overwrite=True)),
        (CharrnnError, "no latest.pt", lambda: charrnn.train(corpus_file, tmp_path, resume=True, device="cpu")),
        (CharrnnError, "already holds a run", lambda: charrnn.train(corpus_file, trained_dir, device="cpu")),
        (CharrnnError, "missing.txt", lambda: charrnn.train(tmp_path / "missing.txt", tmp_path / "ck", device="cpu")),
    ]
    for kind, message, call in cases:
        with pytest.raises(kind, match=message) as caught:
            call()
        assert not isinstance(caught.value, click.ClickException), message


def test_train_then_load_and_generate_nothing_on_stdout(tmp_path, corpus_file, capsys):
    result = charrnn.train(corpus_file, tmp_path / "ck", max_steps=40, save_every=20, **TINY_RUN)
    assert result == charrnn.TrainResult(tmp_path / "ck", tmp_path / "ck" / "latest.pt", 0, 40,
                                         result.best_val_loss)
    assert isinstance(result.best_val_loss, float) and not result.interrupted
    model = charrnn.load(str(tmp_path / "ck" / "best.pt"))
    assert len(model.generate(prime="the", length=30, seed=1)) == 33 and model.vocab == sorted(set(make_corpus()))
    model.beam(2, length=5)
    model.score("the cat sat on the mat.\n")
    resumed = charrnn.train(corpus_file, tmp_path / "ck", resume=True, max_steps=50, device="cpu")
    assert resumed.steps == 50 and resumed.exit_code == 0
    assert capsys.readouterr() == ("", "")  # quiet unless asked, and nothing ever on stdout


@pytest.mark.parametrize("asked", [dict(progress=True), dict(quiet=False)])
def test_progress_only_when_asked(tmp_path, corpus_file, capsys, asked):
    charrnn.train(corpus_file, tmp_path / "ck", max_steps=20, **TINY_RUN, **asked)
    out, err = capsys.readouterr()
    assert out == "" and "training lstm 1x32" in err and "done: 20 steps" in err


def test_a_signal_stops_training_after_saving(tmp_path, corpus_file):
    latest = tmp_path / "ck" / "latest.pt"

    def interrupt_once_saved():  # once latest.pt exists the loop runs, and catches the signal
        deadline = time.monotonic() + 60
        while not latest.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt_once_saved)
    thread.start()
    result = charrnn.train(corpus_file, tmp_path / "ck", max_time="2m", save_every=5, **TINY_RUN)
    thread.join()
    assert result.interrupted and result.exit_code == 130 and 5 <= result.steps
    assert checkpoint.load(latest).data["step"] == result.steps


# ---- the import, durations, the README ------------------------------------------------------
def test_import_is_lazy_and_train_is_the_function():
    script = (
        "import sys, charrnn, charrnn.cli\n"
        "assert 'torch' not in sys.modules, 'import charrnn imported torch'\n"
        "assert set(charrnn.__all__) <= set(dir(charrnn))\n"
        "assert charrnn.train.__module__ == 'charrnn.api' and 'torch' in sys.modules\n"
        "assert charrnn.load.__module__ == 'charrnn.api' and charrnn.Model.__name__ == 'Model'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=charrnn_env(), timeout=120)


def test_durations_parse_in_config_and_the_cli():
    assert config.parse_duration("1h30m") == 5400 and config.parse_duration(90) == 90.0
    assert config.parse_duration(None) is None and parse_duration("10m") == 600
    for bad, message in [("ten minutes", "like 90s"), ("30m1h", "out of order"), ("1h1h", "more than once"),
                         (0, "longer than zero"), (float("inf"), "finite"), (True, "not a duration")]:
        with pytest.raises(ValueError, match=message):
            config.parse_duration(bad)
    with pytest.raises(click.BadParameter, match="out of order"):
        parse_duration("30m1h")


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    quick = code.replace('max_time="5m"', 'max_steps=30, save_every=10, device="cpu", '
                                          + ", ".join(f"{TINY[i][2:].replace('-', '_')}={TINY[i + 1]}"
                                                      for i in range(0, len(TINY), 2)))
    assert quick != code
    names = ["kaden", "karla", "kai", "kate", "anna", "bob", "carl", "dora", "kamal", "eve"]
    (tmp_path / "names.txt").write_text("\n".join(names * 20) + "\n")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a tiny model may find fewer new names
        exec(compile(quick, "README.md", "exec"), {})
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and "'loss'" in out and err == ""
