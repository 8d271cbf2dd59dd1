"""The real command line in real processes and shell pipelines."""

import json
import shlex
import signal
import subprocess
import sys
import time

from .helpers import TINY, charrnn_env, run_charrnn

CHARRNN = f"{shlex.quote(sys.executable)} -m charrnn"


def shell(command: str, cwd, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, cwd=cwd,
                          env=charrnn_env(), timeout=timeout)


def test_corpus_pipe_train_sample_eval_info(tmp_path):
    tiny = " ".join(TINY)
    trained = shell(f"{CHARRNN} corpus python-stdlib --max-bytes 60000 | {CHARRNN} train - --max-steps 30 "
                    f"--eval-every 15 {tiny}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr.decode()
    assert trained.stdout == b""  # stdout carries only the product; training has none
    assert (tmp_path / "checkpoints" / "best.pt").exists()

    sample = run_charrnn("sample", "--length", "300", "--seed", "4", "--temp", "0.8", cwd=tmp_path)
    assert len(sample.stdout.decode()) >= 300 and sample.stderr == b""

    figures = json.loads(shell(f"{CHARRNN} corpus python-stdlib --max-bytes 20000 | {CHARRNN} eval - --json "
                               "--skip-unknown", cwd=tmp_path).stdout)
    assert 0 < figures["loss"] < 10 and figures["chars"] > 19_000

    info = run_charrnn("info", cwd=tmp_path).stdout.decode()
    assert "parameters" in info and "corpus_sha256" in info


def test_a_reader_that_stops_early_ends_the_command_quietly_and_successfully(trained_dir, tmp_path):
    # Under pipefail, as shell() runs: an exit of 1 (click's own handling) would fail the pipeline.
    for command in (f"sample --checkpoint {trained_dir} --length 200000",
                    f"sample --checkpoint {trained_dir} --length 20000 -n 3",
                    "corpus python-stdlib --max-bytes 2000000",
                    f"info {trained_dir}"):
        result = shell(f"{CHARRNN} {command} | head -c 10", cwd=tmp_path)
        assert len(result.stdout) == 10, command
        assert result.returncode == 0 and result.stderr == b"", (command, result.returncode, result.stderr.decode())
    # `true` reads nothing: the first write already fails.
    result = shell(f"{CHARRNN} sample --checkpoint {trained_dir} --length 20000 | true", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()


def test_interrupt_saves_and_resume_finishes(tmp_path, corpus_file):
    ckpt = tmp_path / "ck"
    args = [sys.executable, "-m", "charrnn", "train", str(corpus_file), "--checkpoint-dir", str(ckpt),
            "--max-steps", "100000", "--eval-every", "1000", "--save-every", "5", *TINY]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=charrnn_env())
    deadline = time.monotonic() + 90
    while not (ckpt / "latest.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted at step" in err and str(ckpt / "latest.pt").encode() in err
    assert b"Traceback" not in err and out == b""

    step = json.loads(run_charrnn("info", str(ckpt / "latest.pt"), "--json").stdout)["step"]
    assert step >= 5
    resumed = run_charrnn("train", str(corpus_file), "--checkpoint-dir", str(ckpt), "--resume",
                          "--max-steps", str(step + 10))
    assert f"resuming at step {step}".encode() in resumed.stderr
    assert json.loads(run_charrnn("info", str(ckpt / "latest.pt"), "--json").stdout)["step"] == step + 10
