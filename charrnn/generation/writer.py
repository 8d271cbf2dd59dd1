"""Generated samples as text: read from Sampler.generate's ids, and written as they are produced.

`sample_pieces` and `sample_texts` turn the ids into text for the CLI (`write_samples`) and the
Python API alike, so that both give the same text for a seed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO

FLUSH_EVERY_S = 0.05  # a reader sees text appear smoothly without a flush per character


def sample_pieces(generated: Iterable[list[int]], chars: Sequence[str], shown_prime: str,
                  stop: str | None) -> Iterator[str]:
    """One sample as it is made: `shown_prime` (when not empty), then each character, ending
    once it has generated `stop`. Constant memory however long the sample."""
    if shown_prime:
        yield shown_prime
    tail = ""  # the last len(stop) characters, to spot the stop string
    for (token,) in generated:
        char = chars[token]
        yield char
        if stop is not None:
            tail = (tail + char)[-len(stop):]
            if tail == stop:
                return


def sample_texts(generated: Iterable[list[int]], chars: Sequence[str], shown_prime: str, stop: str | None,
                 count: int) -> list[str]:
    """`count` samples drawn together, each `shown_prime` + its characters up to its `stop`."""
    texts: list[list[str]] = [[] for _ in range(count)]
    tails = [""] * count
    finished = [False] * count
    for step in generated:
        for i, token in enumerate(step):
            if finished[i]:
                continue
            texts[i].append(chars[token])
            if stop is not None:
                tails[i] = (tails[i] + chars[token])[-len(stop):]
                finished[i] = tails[i] == stop
        if all(finished):
            break
    return [shown_prime + "".join(t) for t in texts]


def write_samples(generated: Iterable[list[int]], chars: Sequence[str], prime: str, *, echo_prime: bool,
                  num_samples: int, stop: str | None, separator: str, out: TextIO) -> None:
    """Writes `generated` (each item: the next id of every sample, as Sampler.generate yields
    them) as text. One sample streams character by character; several are printed in order,
    separated by `separator`. `stop` ends a sample once generated."""
    shown_prime = prime if echo_prime else ""
    last_char = "\n"
    if num_samples == 1:
        last_flush = time.monotonic()
        for piece in sample_pieces(generated, chars, shown_prime, stop):
            out.write(piece)
            last_char = piece[-1]
            if (now := time.monotonic()) - last_flush >= FLUSH_EVERY_S:
                out.flush()
                last_flush = now
    else:
        texts = sample_texts(generated, chars, shown_prime, stop, num_samples)
        out.write(separator.join(texts))
        last_char = texts[-1][-1] if texts[-1] else "\n"
    if last_char != "\n":
        out.write("\n")  # so the shell prompt starts on its own line
    out.flush()
