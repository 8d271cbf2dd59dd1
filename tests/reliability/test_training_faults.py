"""Faults during training: kill -9, a full disk, SIGTERM/SIGINT, resume mismatches, divergence."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from charrnn import checkpoint

from ..helpers import (
    TINY,
    invoke,
    is_temp_of,
    leftovers,
    load_finite,
    one_line_error,
    run_charrnn,
    spawn,
    train_tiny,
    wait_for,
    write_corpus,
)

LATEST, BEST = checkpoint.LATEST, checkpoint.BEST


# ---- kill -9 ----------------------------------------------------------------------------
def _temps(folder: Path, target: str) -> set[str]:
    try:
        return {n for n in os.listdir(folder) if is_temp_of(n, target)}
    except FileNotFoundError:
        return set()


def _kill_during_write(proc: subprocess.Popen, folder: Path, target: str, old: set[str],
                       timeout: float = 30.0) -> str:
    """SIGKILLs `proc` while it is inside a write of `target`; returns the temp file it cut short.

    Polling alone would race the writer, so the moment a new temp file for `target` appears
    (`old` are leftovers of earlier kills) the process is frozen with SIGSTOP; if the temp file
    is still there, the process is provably between mkstemp and os.replace and the SIGKILL
    lands mid-write. Otherwise it is resumed and the watch goes on.
    """
    def frozen_mid_write() -> set[str]:
        if not _temps(folder, target) - old:
            return set()
        os.kill(proc.pid, signal.SIGSTOP)
        if fresh := _temps(folder, target) - old:
            return fresh
        os.kill(proc.pid, signal.SIGCONT)
        return set()

    (cut_short,) = wait_for(frozen_mid_write, f"a write of {target} in progress", timeout, proc, poll=0.001)
    proc.kill()  # SIGKILL ends a stopped process too
    proc.wait()
    return cut_short


def _check_after_kill(folder: Path) -> int:
    """What a kill -9 may leave: a whole latest.pt (and best.pt), plus only temp files."""
    latest = load_finite(folder / LATEST)
    if (folder / BEST).exists():
        load_finite(folder / BEST)
    others = leftovers(folder)
    assert all(is_temp_of(n, LATEST) or is_temp_of(n, BEST) for n in others), others
    return latest.data["step"]


def test_kill_9_at_several_moments_leaves_loadable_checkpoints_and_resume_finishes(tmp_path, reap):
    """kill -9 mid-write of best.pt, at a random moment, and mid-write of latest.pt, each
    followed by --resume; a final --resume finishes. (best.pt first: a fresh run's validation
    loss improves at nearly every evaluation, so best.pt is rewritten often.)

    A kill -9 leaves the temp file of the write it cut short (`.latest.pt.XXXX.tmp`): nothing
    can clean up after SIGKILL, and that is accepted. What must never happen is a partial file
    under latest.pt or best.pt.
    """
    corpus = write_corpus(tmp_path / "corpus.txt")
    folder = tmp_path / "ck"
    rng = random.Random(20240611)
    # --save-every 1 keeps a checkpoint write in flight much of the time; --eval-every 2 keeps
    # best.pt being rewritten while validation improves.
    args = ["train", corpus, "--checkpoint-dir", folder, *TINY, "--max-steps", 100_000, "--save-every", 1,
            "--eval-every", 2]
    steps: list[int] = []
    for round_, moment in enumerate(["mid-write best.pt", "random", "mid-write latest.pt"]):
        before = (folder / LATEST).stat().st_mtime_ns if round_ else None
        old_temps = _temps(folder, LATEST) | _temps(folder, BEST)
        err = tmp_path / f"err{round_}.txt"
        proc = spawn(*args, *(["--resume"] if round_ else []), stderr_path=err)
        reap.append(proc)
        # Kill only once this process has written a checkpoint of its own.
        wait_for(lambda: (folder / LATEST).exists() and (folder / LATEST).stat().st_mtime_ns != before,
                 "a first checkpoint", proc=proc)
        if moment == "random":
            time.sleep(rng.uniform(0.05, 0.5))
            assert proc.poll() is None
            proc.kill()
            proc.wait()
        else:
            target = LATEST if "latest" in moment else BEST
            cut_short = _kill_during_write(proc, folder, target, old_temps)
            assert cut_short in leftovers(folder)  # the kill really landed mid-write
        assert proc.returncode == -signal.SIGKILL
        stderr = err.read_text()
        assert "Traceback" not in stderr
        if round_:
            assert f"resuming at step {steps[-1]}" in stderr  # it continued from what the last kill left
        steps.append(_check_after_kill(folder))
        if round_:
            assert steps[-1] > steps[-2], "the resumed run made no progress"

    target = steps[-1] + 10
    done = run_charrnn(*args, "--resume", "--max-steps", target, check=False, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"resuming at step {steps[-1]}" in done.stderr
    assert load_finite(folder / LATEST).data["step"] == target


# ---- SIGTERM / SIGINT -------------------------------------------------------------------
def test_sigterm_and_sigint_save_exit_128_plus_signal_and_resume_finishes(tmp_path, reap):
    """SIGTERM behaves like Ctrl-C: the step finishes, latest.pt is saved, exit 143 (SIGINT: 130).
    A second signal while stopping aborts at once (exit 130), the last checkpoint still whole."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    folder = tmp_path / "ck"
    # Saves happen only at evaluations (every 5 steps) and on the signal.
    args = ["train", corpus, "--checkpoint-dir", folder, *TINY, "--max-steps", 100_000, "--eval-every", 5,
            "--save-every", 100_000]
    step = 0
    for round_, (sig, code) in enumerate([(signal.SIGTERM, 143), (signal.SIGINT, 130)]):
        err = tmp_path / f"err{round_}.txt"
        proc = spawn(*args, *(["--resume"] if round_ else []), stderr_path=err)
        reap.append(proc)
        # A progress line from an evaluation after `step` means the loop (and its handler) is running.
        wait_for(lambda: any(int(s) > step for s in re.findall(r"^step (\d+) \|", err.read_text(), re.M)),
                 "training to start", proc=proc)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
        stderr = err.read_text()
        assert "Traceback" not in stderr
        match = re.search(r"interrupted at step (\d+); saved (\S+); continue with --resume", stderr)
        assert match, stderr
        assert Path(match[2]) == folder / LATEST
        saved = load_finite(folder / LATEST).data["step"]
        assert saved == int(match[1]) > step
        assert leftovers(folder) == []  # a clean stop leaves no temp files
        step = saved

    # SIGTERM then SIGINT straight after: the second signal aborts without the final save.
    err = tmp_path / "err-abort.txt"
    proc = spawn(*args, "--resume", stderr_path=err)
    reap.append(proc)
    wait_for(lambda: any(int(s) > step for s in re.findall(r"^step (\d+) \|", err.read_text(), re.M)),
             "training to start", proc=proc)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    stderr = err.read_text()
    assert "Traceback" not in stderr
    assert f"aborted; the last checkpoint in {folder} is intact" in stderr, stderr
    step = load_finite(folder / LATEST).data["step"]
    assert leftovers(folder) == []

    done = run_charrnn(*args, "--resume", "--max-steps", step + 5, check=False, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming at step {step}" in done.stderr and "Traceback" not in done.stderr
    assert load_finite(folder / LATEST).data["step"] == step + 5


# ---- disk full --------------------------------------------------------------------------
def _assert_disk_full_outcome(result, folder: Path, before: dict[str, bytes]) -> None:
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert "cannot write checkpoint" in line and "disk is full" in line, line
    for name, data in before.items():  # the previous checkpoints are untouched and loadable
        assert (folder / name).read_bytes() == data, name
        load_finite(folder / name)
    assert leftovers(folder) == []  # the failed write's temp file was removed


@pytest.fixture
def tiny_tmpfs(tmp_path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; test_disk_full_injected_enospc covers this case")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); test_disk_full_injected_enospc "
                    "covers this case")
    yield mnt
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder: Path, leave: int) -> None:
    """Takes all but about `leave` bytes of the file system's free space."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\1" * max(0, free - leave))
        f.flush()
        os.fsync(f.fileno())
    if leave == 0:  # take the last pages too, up to the real ENOSPC
        with pytest.raises(OSError) as full, open(folder / "filler", "ab") as f:
            while True:
                f.write(b"\1" * 4096)
                f.flush()
        assert full.value.errno == errno.ENOSPC


@pytest.mark.parametrize("room", [0, 0.25, 0.75], ids=["no-room", "quarter-checkpoint", "3-quarters-checkpoint"])
def test_disk_full_on_a_real_tmpfs(tmp_path, tiny_tmpfs, room):
    """Real ENOSPC from a 4 MiB tmpfs (root only; skipped where mount fails): after a first run's
    checkpoints, a filler file takes the free space, all of it or all but `room` of a checkpoint,
    so that the resumed run's next save fails at its start or part way through. --hidden 64
    makes tensors larger than the file buffer, so they are written straight through, as with
    any real model: a write failing there used to surface as torch's RuntimeError
    ("unexpected pos") with a traceback."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    folder = tiny_tmpfs / "ck"
    args = ["train", corpus, "--checkpoint-dir", folder, *TINY, "--hidden", 64, "-q"]
    assert invoke(*args, "--max-steps", 3, "--eval-every", 3).exit_code == 0
    before = {n: (folder / n).read_bytes() for n in (LATEST, BEST)}
    _fill(tiny_tmpfs, int(len(before[LATEST]) * room))

    result = invoke(*args, "--resume", "--max-steps", 6, "--save-every", 1)
    _assert_disk_full_outcome(result, folder, before)

    (tiny_tmpfs / "filler").unlink()  # with space again, the same command carries on
    assert invoke(*args, "--resume", "--max-steps", 6, "--save-every", 1).exit_code == 0
    assert load_finite(folder / LATEST).data["step"] == 6


def test_disk_full_while_encoding_the_corpus(tmp_path, tiny_tmpfs):
    """A token cache on a full file system: one line naming the place and --cache-dir, exit 1,
    and no partial token file left to be mistaken for an encoded corpus."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    (tiny_tmpfs / "cache").mkdir()
    _fill(tiny_tmpfs, 0)
    result = invoke("train", corpus, "--checkpoint-dir", tmp_path / "ck", "--cache-dir", tiny_tmpfs / "cache",
                    *TINY, "-q")
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert "cannot write encoded tokens" in line and "disk is full" in line and "--cache-dir" in line, line
    assert list((tiny_tmpfs / "cache").iterdir()) == []
    assert not (tmp_path / "ck").exists()


def test_disk_full_injected_enospc(tmp_path, monkeypatch):
    """Injected ENOSPC (works without root): the checkpoint temp file accepts 8 KiB, then every
    write raises OSError(ENOSPC), as a full disk does; the fault is injected by wrapping the
    file that charrnn.fileio.atomic_writer opens (os.fdopen in that module)."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    folder = tmp_path / "ck"
    train_tiny(folder, corpus, "--save-every", 1)
    before = {n: (folder / n).read_bytes() for n in (LATEST, BEST)}

    import charrnn.fileio as fileio

    class FillingFile:
        def __init__(self, f):
            self._f, self._room = f, 8192

        def write(self, data) -> int:
            n = len(memoryview(data).cast("B"))
            if n > self._room:
                self._room = 0  # full: from now on every write fails, however small
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._room -= n
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    real_fdopen = os.fdopen
    writes = []
    monkeypatch.setattr(fileio.os, "fdopen", lambda *a, **k: writes.append(1) or FillingFile(real_fdopen(*a, **k)))
    result = invoke("train", corpus, "--checkpoint-dir", folder, "--resume", "--max-steps", 12, "-q")
    monkeypatch.undo()
    assert writes, "the fault was never injected"
    _assert_disk_full_outcome(result, folder, before)


# ---- resuming with other options or another corpus --------------------------------------
def test_resume_checks_architecture_flags_and_corpus(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    folder = tmp_path / "ck"
    train_tiny(folder, corpus)
    latest = (folder / LATEST).read_bytes()

    changed = invoke("train", corpus, "--checkpoint-dir", folder, "--resume", "--hidden", 64, "-q")
    assert changed.exit_code == 1
    line = one_line_error(changed.output)
    assert "--hidden" in line and "64" in line and "32" in line, line
    assert (folder / LATEST).read_bytes() == latest

    for flag, value in [("--layers", 2), ("--cell", "gru"), ("--seq-len", 8)]:
        other = invoke("train", corpus, "--checkpoint-dir", folder, "--resume", flag, value, "-q")
        assert other.exit_code == 1 and flag in one_line_error(other.output), other.output

    same = invoke("train", corpus, "--checkpoint-dir", folder, "--resume", "--hidden", 32, "--layers", 1,
                  "--max-steps", 9, "-q")
    assert same.exit_code == 0, same.output
    assert load_finite(folder / LATEST).data["step"] == 9

    # Same vocabulary, different text: a warning naming both hashes, and training goes on.
    text = corpus.read_text()
    other = tmp_path / "reversed.txt"
    other.write_text(text[::-1])
    sha, other_sha = (hashlib.sha256(t.encode()).hexdigest() for t in (text, text[::-1]))
    # Over to the reversed text, then back (with -q: a warning is not progress, so it still shows).
    for path, steps, quiet in [(other, 12, []), (corpus, 15, ["-q"])]:
        moved = invoke("train", path, "--checkpoint-dir", folder, "--resume", "--max-steps", steps, *quiet)
        assert moved.exit_code == 0, moved.output
        warning = [line for line in moved.stderr.splitlines() if "warning" in line]
        assert len(warning) == 1 and sha in warning[0] and other_sha in warning[0], (quiet, moved.stderr)
        assert load_finite(folder / LATEST).data["step"] == steps

    # A corpus with characters the vocabulary lacks cannot continue this model.
    alien = tmp_path / "alien.txt"
    alien.write_text(text + "€§")
    refused = invoke("train", alien, "--checkpoint-dir", folder, "--resume", "--max-steps", 20, "-q")
    assert refused.exit_code == 1
    line = one_line_error(refused.output)
    assert "vocabulary" in line and "€" in line and "§" in line, line
    assert load_finite(folder / LATEST).data["step"] == 15


# ---- divergence -------------------------------------------------------------------------
def test_divergence_exits_3_and_keeps_finite_checkpoints(tmp_path):
    """A real divergence, no patching: --lr 1e6 --grad-clip 0. AdamW's decoupled weight decay
    multiplies every weight by (1 - lr * 0.01) = -9999 per step, so float32 overflows to inf
    and NaN within about a dozen steps. Checkpoints are written every step up to then."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    folder = tmp_path / "ck"
    result = invoke("train", corpus, "--checkpoint-dir", folder, *TINY, "--lr", "1e6", "--grad-clip", 0,
                    "--max-steps", 200, "--save-every", 1, "--eval-every", 3, "-q")
    assert result.exit_code == 3, result.output
    line = one_line_error(result.output)
    assert "diverged" in line, line
    diverged_at = int(re.search(r"diverged at step (\d+)", line)[1])

    latest, best = load_finite(folder / LATEST), load_finite(folder / BEST)
    assert 0 < latest.data["step"] < diverged_at
    assert best.data["step"] <= latest.data["step"]
    assert best.data["best_val_loss"] == min(m["val_loss"] for m in latest.data["metrics"])
    assert leftovers(folder) == []
