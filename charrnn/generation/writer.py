"""Generated samples as text: Sampler.generate's ids turned into one sample's pieces as they are
made, or several samples' texts, ending each at its stop string. The Python API's generate and
stream (and so the CLI) read samples through these."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence


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
