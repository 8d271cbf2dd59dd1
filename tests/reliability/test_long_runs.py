"""Long runs: streaming a million sampled characters holds memory and speed constant.

Sampling runs one cell step per character, about 10-25k chars/s for a 1x32 model on one CPU
core, so 1,000,000 chars take roughly 40-100 s: longer than the rest of the battery. The test
is marked `slow` (deselect with -m "not slow") and kept as cheap as it can be while still
streaming the full million: a 1x32 tanh RNN (the cheapest cell step) at --temp 0 (argmax,
no distribution to build). The streaming path under test, Sampler.generate and
write_samples, is the same for every cell and temperature.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from ..helpers import TINY, charrnn_argv, charrnn_env, invoke, write_corpus

LENGTH = 1_000_000


def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_sampling_a_million_chars_holds_constant_memory_and_speed(tmp_path):
    folder = tmp_path / "ck"
    trained = invoke("train", write_corpus(tmp_path / "corpus.txt"), "--checkpoint-dir", folder, *TINY,
                     "--cell", "rnn", "--max-steps", 10, "-q")
    assert trained.exit_code == 0, trained.output

    out = tmp_path / "sample.txt"
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(charrnn_argv("sample", "--checkpoint", folder, "--length", LENGTH, "--temp", 0),
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, env=charrnn_env())
    samples: list[tuple[float, int, int]] = []  # (time, chars written so far, RSS KiB)
    try:
        while proc.poll() is None:
            size, rss = out.stat().st_size, _rss_kib(proc.pid)
            if rss is not None and proc.poll() is None:
                samples.append((time.monotonic(), size, rss))
            time.sleep(0.05)
        end = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0, stderr
    assert "Traceback" not in stderr
    assert out.stat().st_size >= LENGTH  # ASCII vocabulary: one byte per char

    after_100k = [s for s in samples if s[1] >= 100_000]
    assert after_100k and after_100k[-1][1] >= 900_000, "too few RSS readings between 100k and 1M chars"
    base = after_100k[0][2]
    growth_kib = max(rss for _, _, rss in after_100k) - base
    assert growth_kib <= 4 * 1024, f"RSS grew {growth_kib} KiB from 100k to 1M chars (at 100k: {base} KiB)"

    # Throughput from 100k to 550k chars vs from 550k to the end.
    first = after_100k[0]
    middle = next(s for s in after_100k if s[1] >= 550_000)
    first_rate = (middle[1] - first[1]) / (middle[0] - first[0])
    second_rate = (LENGTH - middle[1]) / (end - middle[0])
    print(f"1M chars: RSS {base} KiB at 100k chars, max growth {growth_kib} KiB after; "
          f"{first_rate:.0f} chars/s (100k-550k), {second_rate:.0f} chars/s (550k-1M)")
    assert second_rate >= 0.6 * first_rate, f"{first_rate:.0f} chars/s, then {second_rate:.0f} chars/s"
