"""Text generation: prime the state once, then one cell step per new character."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

import torch

from .errors import CharrnnError
from .model import CharRNN, StepCell
from .vocab import Vocabulary, escape_chars


@dataclass
class SamplingOptions:
    temperature: float = 1.0  # 0 means always the most likely character
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # also rejects NaN
            raise ValueError("temperature must be >= 0")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top-k must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError("top-p must be in (0, 1]")


def next_distribution(logits: torch.Tensor, options: SamplingOptions) -> torch.Tensor:
    """Probabilities [batch, vocab] after temperature, top-k and top-p (temperature > 0)."""
    # Shift the maximum to 0 first: a tiny temperature then sends the others to -inf
    # (probability 0) instead of overflowing everything to inf and NaN.
    logits = logits.float()
    if options.temperature != 1:
        logits = (logits - logits.amax(-1, keepdim=True)) / options.temperature
    if options.top_k is not None and options.top_k < logits.size(-1):
        kth = torch.topk(logits, options.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if options.top_p is not None and options.top_p < 1:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        drop_sorted = mass_before >= options.top_p  # the most likely token is never dropped
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def choose(logits: torch.Tensor, options: SamplingOptions, rng: random.Random) -> list[int]:
    """Next id of every row, drawn from the filtered distribution (argmax at temperature 0).

    An inverse-CDF draw with one uniform per row: cheaper per call than torch.multinomial,
    which matters when each character is one call. One row is searched in Python, which
    beats three more tensor operations at this size.
    """
    if options.temperature == 0:
        return logits.argmax(-1).tolist()
    probs = next_distribution(logits, options)
    last = probs.size(-1) - 1
    if probs.size(0) == 1:
        cdf = list(accumulate(probs[0].tolist()))
        return [min(bisect_right(cdf, rng.random() * cdf[-1]), last)]
    u = torch.tensor([[rng.random()] for _ in range(probs.size(0))], dtype=probs.dtype)
    cdf = probs.cumsum(-1)
    ids = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    return ids.clamp_(max=last).tolist()


class Sampler:
    def __init__(self, model: CharRNN, vocab: Vocabulary):
        self.model = model.cpu().eval()  # one character per call: the CPU beats a GPU launch
        self.vocab = vocab
        self.cell = StepCell(self.model)

    def check_prime(self, prime: str) -> None:
        unknown = self.vocab.unknown(prime)
        if unknown:
            raise CharrnnError(
                f"the prime has characters the model never saw: {escape_chars(unknown)} "
                f"(the vocabulary has {len(self.vocab)} characters; see `charrnn info`)"
            )

    def default_prime(self) -> str:
        """What seeds the state when the user gives no prime: a newline when known."""
        return "\n" if "\n" in self.vocab else self.vocab.chars[0]

    @torch.no_grad()
    def generate(self, prime: str, length: int, options: SamplingOptions, num_samples: int = 1,
                 seed: int | None = None) -> Iterator[list[int]]:
        """Yields the next id of every sample, `length` times.

        The prime runs through the fused model once; after that each character is one
        cell step on the carried state, never a re-run of the prefix.
        """
        self.check_prime(prime)
        rng = random.Random(seed)
        ids = self.vocab.encode(prime).long()
        state = self.model.initial_state(1)
        if len(ids) > 1:
            _, state = self.model(ids[None, :-1], state)
        states = self.cell.layer_states(tuple(s.expand(-1, num_samples, -1) for s in state))
        current = [int(ids[-1])] * num_samples
        for _ in range(length):
            logits, states = self.cell.step(current, states)
            current = choose(logits, options, rng)
            yield current
