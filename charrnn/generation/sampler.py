"""Text generation: prime the state once, then one cell step per new character."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..config import SAMPLE_TEMPERATURE
from ..errors import CharrnnError
from ..model import CharRNN
from ..text.vocab import Vocabulary, escape_chars
from .steppers import NativeLSTMStep, step_cell


@dataclass
class SamplingOptions:
    temperature: float = SAMPLE_TEMPERATURE  # 0 means always the most likely character
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


NOISE_BLOCK = 1 << 16  # Gumbel noise values drawn at a time: one call per ~1,000 chars of one stream


class Chooser:
    """Draws the next id of every stream from the step's logits, reproducibly from a seed.

    Plain temperature sampling uses the Gumbel-max trick: argmax(logits + T * G), with G
    standard Gumbel noise, is an exact draw from softmax(logits / T) and costs two tensor
    operations per character, the noise being drawn in blocks ahead. Scaling the noise
    rather than the logits keeps a tiny temperature finite. Top-k and top-p build the
    filtered distribution and draw by inverse CDF; temperature 0 takes the argmax.
    """

    def __init__(self, options: SamplingOptions, streams: int, vocab_size: int, seed: int | None):
        self.options = options
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed % 2**64)  # any int is a seed; the generator takes 64 bits
        filtered = (options.top_k is not None and options.top_k < vocab_size) or \
            (options.top_p is not None and options.top_p < 1)
        self.gumbel = options.temperature > 0 and not filtered
        self.block_steps = max(1, NOISE_BLOCK // (streams * vocab_size))
        self.noise_rows: list[torch.Tensor] = []
        self.next_row = 0
        self.scratch = torch.empty(streams, vocab_size)
        # Past 1e30 the logits vanish beside the noise anyway (a uniform draw, as the limit
        # should be); capping keeps T * G finite in float32, where several infinities would
        # tie and argmax would favour the lowest ids.
        self.noise_scale = min(options.temperature, 1e30)

    def noise_row(self) -> torch.Tensor:
        """The Gumbel noise of the next step, [streams, vocab], contiguous float32."""
        if self.next_row == len(self.noise_rows):
            uniform = torch.rand(self.block_steps, *self.scratch.shape, dtype=torch.float64, generator=self.generator)
            noise = uniform.log_().neg_().log_().neg_().float()  # u == 0 gives -inf: never chosen
            self.noise_rows = list(noise.unbind(0))  # indexed in Python: no tensor operation per row
            self.next_row = 0
        self.next_row += 1
        return self.noise_rows[self.next_row - 1]

    def __call__(self, logits: torch.Tensor) -> list[int]:
        if self.options.temperature == 0:
            return logits.argmax(-1).tolist()
        if self.gumbel:
            torch.add(logits, self.noise_row(), alpha=self.noise_scale, out=self.scratch)
            if self.scratch.size(0) == 1:
                return [int(self.scratch.argmax())]
            return self.scratch.argmax(-1).tolist()
        probs = next_distribution(logits, self.options)
        cdf = probs.cumsum(-1)
        uniform = torch.rand(probs.size(0), 1, dtype=cdf.dtype, generator=self.generator)
        ids = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).squeeze(1)
        return ids.clamp_(max=probs.size(-1) - 1).tolist()


class Sampler:
    def __init__(self, model: CharRNN, vocab: Vocabulary):
        self.model = model.cpu().eval()  # one character per call: the CPU beats a GPU launch
        self.vocab = vocab

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

    def generate(self, prime: str, length: int, options: SamplingOptions, num_samples: int = 1,
                 seed: int | None = None) -> Iterator[list[int]]:
        """An iterator of the next id of every sample, `length` times. The prime is checked
        here, before anything is generated or written.

        The prime runs through the fused model once; after that each character is one
        cell step on the carried state, never a re-run of the prefix.
        """
        self.check_prime(prime)
        return self._generate(prime, length, options, num_samples, seed)

    @torch.no_grad()
    def _generate(self, prime: str, length: int, options: SamplingOptions, num_samples: int,
                  seed: int | None) -> Iterator[list[int]]:
        ids = self.vocab.encode(prime)
        state = self.model.initial_state(1)
        if len(ids) > 1:
            _, state = self.model(ids[None, :-1], state)
        cell = step_cell(self.model, num_samples)
        cell.load(tuple(s.expand(-1, num_samples, -1) for s in state))
        choose = Chooser(options, num_samples, len(self.vocab), seed)
        current = [int(ids[-1])] * num_samples
        if choose.gumbel and isinstance(cell, NativeLSTMStep):
            # The C step draws as well: the same argmax over the same noise, two tensor
            # operations per character fewer.
            char_id = current[0]
            for _ in range(length):
                char_id = cell.step_and_draw(char_id, choose.noise_row(), choose.noise_scale)
                yield [char_id]
            return
        for _ in range(length):
            current = choose(cell.step(current))
            yield current

    def draw_records(self, prime: str, options: SamplingOptions, streams: int, max_length: int,
                     seed: int | None = None) -> Iterator[str]:
        """Record models: an endless supply of records that start with `prime` (printed whole),
        drawn `streams` at a time; each ends at END, or after `max_length` new characters."""
        if self.vocab.marker_id is None:
            raise CharrnnError("this is a stream model, not a record model (train with --records)")
        self.check_prime(prime)
        return self._draw_records(prime, options, streams, max_length, seed)

    @torch.no_grad()
    def _draw_records(self, prime: str, options: SamplingOptions, streams: int, max_length: int,
                      seed: int | None) -> Iterator[str]:
        marker = self.vocab.marker_id
        ids = torch.cat([torch.tensor([marker]), self.vocab.encode(prime)])
        state = self.model.initial_state(1)
        if len(ids) > 1:
            _, state = self.model(ids[None, :-1], state)
        cell = step_cell(self.model, streams)
        for batch in itertools.count():
            cell.load(tuple(s.expand(-1, streams, -1) for s in state))
            # One generator per batch, each seeded from the seed and the batch: same seed, same records.
            choose = Chooser(options, streams, len(self.vocab), None if seed is None else seed * 1_000_003 + batch)
            drawn = self._until_end(cell, choose, int(ids[-1]), streams, max_length)
            yield from (prime + self.vocab.decode(record) for record in drawn)

    def _until_end(self, cell, choose: Chooser, first: int, streams: int, max_length: int) -> list[list[int]]:
        """Steps every stream until it draws END (or `max_length` ids); their ids, END left out."""
        marker = self.vocab.marker_id
        records: list[list[int]] = [[] for _ in range(streams)]
        live = set(range(streams))
        current = [first] * streams
        for _ in range(max_length + 1):
            current = choose(cell.step(current))
            for i in list(live):
                if current[i] == marker:
                    live.discard(i)
                elif len(records[i]) < max_length:
                    records[i].append(current[i])
                else:
                    live.discard(i)
            if not live:
                break
        return records
