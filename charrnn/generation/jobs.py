"""A sample job: what `Model.generate`, `stream`, `draw_records` and `beam` (and so `charrnn
sample`) were asked for, checked against the model, and the draws that carry it out: a stream
model's ids, a record model's new records (`--novel`, `--unique`), the likeliest continuations.

It takes typed options (`SampleJob`) and raises CharrnnError for anything the user can fix;
printing is the CLI's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from .. import checkpoint
from ..config import SAMPLE_LENGTH
from ..errors import CharrnnError
from ..text.records import record_hash
from .beam import beam_search
from .sampler import Sampler, SamplingOptions


@dataclass(frozen=True)
class SampleJob:
    """What `charrnn sample` (or the Python API's `Model.generate`) was asked for. Its defaults
    are the CLI's and the API's."""

    options: SamplingOptions
    length: int = SAMPLE_LENGTH  # characters; for a record model, the most one record may have
    prime: str | None = None  # None: the model's default prime, not printed
    echo_prime: bool = True
    num_samples: int = 1
    seed: int | None = None
    stop: str | None = None
    novel: bool = False  # record models: only records that are not in the training corpus
    unique: bool = False  # record models: no record twice
    beam: int | None = None  # the K likeliest samples instead of random ones

    def __post_init__(self) -> None:
        # The CLI refuses all of these first, as usage errors; the Python API gets a ValueError.
        if self.length < 0:
            raise ValueError(f"length must be >= 0, not {self.length}")
        if self.num_samples < 1:
            raise ValueError(f"the number of samples must be >= 1, not {self.num_samples}")
        if self.beam is not None and self.beam < 1:
            raise ValueError(f"the beam width must be >= 1, not {self.beam}")
        if self.prime == "":
            raise ValueError("the prime must not be empty (None starts from the model's default)")
        if self.stop == "":
            raise ValueError("the stop string must not be empty")
        if not math.isfinite(self.options.temperature):
            raise ValueError("temperature must be a finite number")


def sampler_for(ckpt: checkpoint.Checkpoint) -> Sampler:
    """The checkpoint's model as a sampler (on the CPU, in eval mode)."""
    return Sampler(ckpt.model, ckpt.vocab)


def check_sample_job(ckpt: checkpoint.Checkpoint, job: SampleJob) -> None:
    """Refuses options that the checkpoint's kind of model (stream or records) has no use for."""
    is_record_model = ckpt.record_separator is not None
    if (job.novel or job.unique) and not is_record_model:
        raise CharrnnError("--novel and --unique are for record models (trained with --records)")


def stream_ids(sampler: Sampler, job: SampleJob) -> tuple[str, bool, Iterator[list[int]]]:
    """A stream model's samples: the prime they continue, whether it is shown, and the
    iterator of every sample's next id (Sampler.generate). The prime is checked here."""
    prime = job.prime if job.prime is not None else sampler.default_prime()
    ids = sampler.generate(prime, job.length, job.options, job.num_samples, job.seed)
    return prime, job.prime is not None and job.echo_prime, ids


DRAWS_PER_RECORD = 100  # --novel and --unique give up after this many draws for each record asked for
RECORD_STREAMS = 256  # records drawn together


def known_records(ckpt: checkpoint.Checkpoint, job: SampleJob) -> set[int] | None:
    """The training records' hashes when --novel asks for new records only, else None."""
    return set(ckpt.data["record_hashes"].tolist()) if job.novel else None


class RecordDraws:
    """A record model's `job.num_samples` records, drawn as they are asked for.

    Iterating yields each record kept, whole (the prime included), in the order drawn; it ends
    once it has them all, or after DRAWS_PER_RECORD draws for each record asked for. Records
    that --novel (`known`) or --unique drops, and empty ones, are counted in `dropped`.
    The prime is checked when this is made, before anything is drawn.
    """

    def __init__(self, sampler: Sampler, job: SampleJob, known: set[int] | None):
        self.job = job
        self.prime = job.prime or ""
        self.known = known
        self.drawn = 0
        self.kept = 0
        self.dropped = {"empty": 0, "already in the corpus": 0, "repeats": 0}
        streams = min(RECORD_STREAMS, job.num_samples if known is None and not job.unique else RECORD_STREAMS)
        self._records = sampler.draw_records(self.prime, job.options, streams, job.length, job.seed)

    def __iter__(self) -> Iterator[str]:
        job, seen = self.job, set()
        for record in self._records:
            self.drawn += 1
            digest = record_hash(record)
            reason = ("empty" if not record else "already in the corpus"
                      if self.known is not None and digest in self.known
                      else "repeats" if job.unique and digest in seen else None)
            if reason:
                self.dropped[reason] += 1
            else:
                seen.add(digest)
                self.kept += 1
                yield record
            if self.kept == job.num_samples or self.drawn >= DRAWS_PER_RECORD * job.num_samples:
                return

    def shown(self, record: str) -> str:
        """A record as it is printed: without the prime under --no-echo-prime."""
        return record if self.job.echo_prime else record[len(self.prime):]

    def dropped_summary(self) -> str | None:
        """How many records were dropped and why, once iteration is over; None if none were."""
        if not sum(self.dropped.values()):
            return None
        why = ", ".join(f"{n} {reason}" for reason, n in self.dropped.items() if n)
        return f"dropped {sum(self.dropped.values())} of {self.drawn} records drawn ({why})"

    def shortfall(self) -> str | None:
        """Says that fewer records than asked for were found, once iteration is over; else None."""
        n = self.job.num_samples
        if self.kept >= n:
            return None
        return (f"only {self.kept} of {n} records after {self.drawn:,} draws, the most for {n} "
                f"({DRAWS_PER_RECORD} each)")


def likeliest(sampler: Sampler, job: SampleJob) -> list[tuple[str, float]]:
    """The `job.beam` likeliest continuations (stream models) or complete records (record
    models), best first, as (text as shown, natural log-probability)."""
    vocab = sampler.vocab
    prime = job.prime if job.prime is not None else ("" if vocab.marker_id is not None else sampler.default_prime())
    sampler.check_prime(prime)
    prefix = ([] if vocab.marker_id is None else [vocab.marker_id]) + vocab.encode(prime).tolist()
    temperature = job.options.temperature or 1.0
    beams = beam_search(sampler.model, prefix, job.beam + 1, job.length, end_id=vocab.marker_id,
                        temperature=temperature)
    if vocab.marker_id is not None and not prime:
        beams = [b for b in beams if b.ids]  # an empty record is no record
    return [((prime if job.echo_prime else "") + vocab.decode(b.ids), b.log_prob) for b in beams[:job.beam]]
