"""Writes generated samples to a text stream as they are produced."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TextIO

FLUSH_EVERY_S = 0.05  # a reader sees text appear smoothly without a flush per character


def write_samples(generated: Iterable[list[int]], chars: Sequence[str], prime: str, *, echo_prime: bool,
                  num_samples: int, stop: str | None, separator: str, out: TextIO) -> None:
    """Writes `generated` (each item: the next id of every sample, as Sampler.generate yields
    them) as text. One sample streams character by character; several are printed in order,
    separated by `separator`. `stop` ends a sample once generated. Memory stays constant for
    a single streamed sample, however long."""
    streaming = num_samples == 1
    kept: list[list[str]] = [[] for _ in range(num_samples)]  # only when not streaming
    tails = [""] * num_samples  # the last len(stop) characters, to spot the stop string
    finished = [False] * num_samples
    last_char = prime[-1] if echo_prime else "\n"
    if streaming and echo_prime:
        out.write(prime)
    last_flush = time.monotonic()
    for ids in generated:
        for i, token in enumerate(ids):
            if finished[i]:
                continue
            char = chars[token]
            if streaming:
                out.write(char)
                last_char = char
            else:
                kept[i].append(char)
            if stop is not None:
                tails[i] = (tails[i] + char)[-len(stop):]
                finished[i] = tails[i] == stop
        if streaming and (now := time.monotonic()) - last_flush >= FLUSH_EVERY_S:
            out.flush()
            last_flush = now
        if all(finished):
            break
    if not streaming:
        for i, text in enumerate(kept):
            if i:
                out.write(separator)
            out.write((prime if echo_prime else "") + "".join(text))
        last_char = (kept[-1] or [prime[-1] if echo_prime else "\n"])[-1]
    if last_char != "\n":
        out.write("\n")  # so the shell prompt starts on its own line
    out.flush()
