"""charrnn from Python: load a checkpoint, generate, stream, score, beam-search; train a model.

Every call goes through the functions the command line calls (charrnn/commands.py and
charrnn/generate.py), with the same defaults (`generate.SampleJob` and `commands.EvalJob` for
sampling and scoring, the fields
of `config.ModelConfig` and `config.TrainConfig` for training), so the same seed gives the same
text as `charrnn sample`. Nothing is written to stdout; progress goes to stderr, and only when
asked for. Errors are charrnn's own types (charrnn.errors: CharrnnError, CheckpointError,
TrainingDiverged) or, for an argument that is out of range or of the wrong kind, ValueError;
never SystemExit.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import Field, dataclass, replace
from pathlib import Path

from . import checkpoint, commands
from .commands import EvalJob
from .config import (
    DEFAULT_CHECKPOINT_DIR,
    Bounds,
    ModelConfig,
    TrainJob,
    configs_from_options,
    option_fields,
    parse_duration,
)
from .generation import jobs as generate
from .generation.jobs import RecordDraws, SampleJob
from .generation.sampler import SamplingOptions
from .generation.writer import sample_pieces, sample_texts
from .runtime import pick_device

__all__ = ["Model", "TrainResult", "load", "train"]

PathLike = str | os.PathLike


def load(path: PathLike = DEFAULT_CHECKPOINT_DIR, device: str = "cpu") -> Model:
    """The model in a checkpoint: a .pt file, or a directory (its best.pt, else latest.pt).

    `device` ("cpu", "cuda", "mps" or "auto") is where `Model.score` runs; generation always
    runs on the CPU, as `charrnn sample` does. Raises CheckpointError for a file that is
    missing, damaged, foreign or unsafe, CharrnnError for a device that is not there.
    """
    pick_device(device)  # an unknown or absent device fails here, not at the first score
    return Model(checkpoint.load(path), device)


class Model:
    """A trained charrnn model (made by `load`).

    A stream model (trained on one long text) continues a prime; a record model (trained with
    `records=True`) draws whole records, such as names. `record_separator` tells them apart.
    """

    def __init__(self, ckpt: checkpoint.Checkpoint, device: str = "cpu"):
        self._ckpt = ckpt
        self.device = device

    @property
    def path(self) -> Path:
        """The checkpoint file read."""
        return self._ckpt.path

    @property
    def record_separator(self) -> str | None:
        """What separated the training records (a record model); None for a stream model."""
        return self._ckpt.record_separator

    @property
    def vocab(self) -> list[str]:
        """The characters the model knows, in id order."""
        return list(self._ckpt.vocab.chars)

    @property
    def config(self) -> ModelConfig:
        """The network's shape: cell, layers, hidden, vocab_size, dropout."""
        return self._ckpt.model_config

    def __repr__(self) -> str:
        kind = "stream" if self.record_separator is None else "record"
        c = self.config
        return f"<charrnn.Model {kind} {c.cell} {c.layers}x{c.hidden} from {self.path}>"

    def info(self) -> dict:
        """What `charrnn info --json` prints: model, vocabulary, training progress, corpus."""
        return commands.describe(str(self.path))

    def generate(self, prime: str | None = None, length: int = SampleJob.length, *, n: int | None = None,
                 temperature: float = SamplingOptions.temperature, top_k: int | None = SamplingOptions.top_k,
                 top_p: float | None = SamplingOptions.top_p, seed: int | None = SampleJob.seed,
                 stop: str | None = SampleJob.stop, echo_prime: bool = SampleJob.echo_prime,
                 novel: bool = SampleJob.novel, unique: bool = SampleJob.unique,
                 beam: int | None = SampleJob.beam) -> str | list[str] | list[tuple[str, float]]:
        """Generated text, as `charrnn sample` with the same options prints it (the same seed
        gives the same text), without the newline the CLI adds for the shell's prompt.

        Stream models: `length` characters after `prime` (shown first unless `echo_prime` is
        False; None starts from a newline, not shown). Returns a str for n None or 1, a list of
        n str for n > 1 (drawn together as one batch, as `-n`). `stop` ends a sample once it
        has generated that string.

        Record models: a list of n (default 1) complete records that start with `prime`;
        `length` caps a record's new characters. `novel` keeps only records that are not in the
        training corpus, `unique` no record twice; both give up after
        `generate.DRAWS_PER_RECORD` draws per record asked for, and then the list is shorter
        (with a RuntimeWarning).

        `temperature` 0 always takes the likeliest character; `top_k`, `top_p` filter the
        distribution. `beam=K`: the same as `self.beam(K, ...)`. Raises ValueError for an
        option out of range, CharrnnError for a prime with characters the model never saw or
        an option the kind of model has no use for.
        """
        job = self._job(prime, length, n, temperature, top_k, top_p, seed, stop, echo_prime, novel, unique, beam)
        if beam is not None:
            return generate.likeliest(generate.sampler_for(self._ckpt), job)
        pieces = self._pieces(job)
        if self.record_separator is not None:
            return list(pieces)
        if job.num_samples == 1:
            return "".join(pieces)
        return pieces  # a list already: several samples are drawn as one batch

    def stream(self, prime: str | None = None, length: int = SampleJob.length, *, n: int | None = None,
               temperature: float = SamplingOptions.temperature, top_k: int | None = SamplingOptions.top_k,
               top_p: float | None = SamplingOptions.top_p, seed: int | None = SampleJob.seed,
               stop: str | None = SampleJob.stop, echo_prime: bool = SampleJob.echo_prime,
               novel: bool = SampleJob.novel, unique: bool = SampleJob.unique) -> Iterator[str]:
        """Yields text as it is generated: what `generate` returns, in pieces.

        Stream models: the prime (when shown), then each character as it is drawn, in
        constant memory however long `length` is; one sample (n None or 1). Record models:
        each of the n records as it is completed. Arguments are checked here, before the first
        piece, with the errors `generate` raises.
        """
        job = self._job(prime, length, n, temperature, top_k, top_p, seed, stop, echo_prime, novel, unique, None)
        if self.record_separator is None and job.num_samples != 1:
            raise ValueError("stream() yields one stream sample; generate(n=...) gives several")
        return iter(self._pieces(job))

    def beam(self, k: int, prime: str | None = None, length: int = SampleJob.length, *,
             temperature: float = SamplingOptions.temperature,
             echo_prime: bool = SampleJob.echo_prime) -> list[tuple[str, float]]:
        """The k likeliest samples by beam search, best first, as (text, natural log-probability
        given the prime), as `charrnn sample --beam K` finds them.

        Stream models: continuations of exactly `length` characters after `prime` (shown
        unless `echo_prime` is False). Record models: complete records that start with `prime`,
        at most `length` new characters each (fewer than k when fewer exist). `temperature`
        divides the logits (0 counts as 1, as in the CLI).
        """
        job = self._job(prime, length, None, temperature, None, None, None, None, echo_prime, False, False, k)
        return generate.likeliest(generate.sampler_for(self._ckpt), job)

    def score(self, text: str | None = None, *, path: PathLike | None = None, encoding: str = EvalJob.encoding,
              skip_unknown: bool = EvalJob.skip_unknown, streams: int = EvalJob.streams,
              precision: str = EvalJob.precision, device: str | None = None, progress: bool = False) -> dict:
        """The loss of `text` (a str), or of the file at `path`, under the model, computed as
        `charrnn eval --json` computes it, and the same dict: "loss" (nats per character; per
        token, END included, for a record model), "bpc", "perplexity", "chars", "skipped",
        "precision", "checkpoint", and "records" for a record model.

        `encoding` is the file's (a str is taken as it is); `skip_unknown` drops characters the
        model never saw instead of raising CharrnnError; `streams` parallel streams, each
        warmed on the text before it; `device` overrides the one given to `load`; `progress`
        shows a bar on stderr (on a terminal).
        """
        if (text is None) == (path is None):
            raise ValueError("give the text to score, or path=, not both")
        if streams < 1:
            raise ValueError(f"streams must be >= 1, not {streams}")
        job = EvalJob(text="-", checkpoint=str(self.path), encoding=encoding, skip_unknown=skip_unknown,
                      streams=streams, device=device or self.device, precision=precision, quiet=not progress)
        if path is not None:
            return commands.score(self._ckpt, replace(job, text=os.fspath(path)))
        # The same encoding and scoring as a file gets: the text goes through a temporary one.
        fd, tmp = tempfile.mkstemp(prefix="charrnn-score-", suffix=".txt")
        try:
            with open(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            return commands.score(self._ckpt, replace(job, text=tmp, encoding="utf-8", name="<text>"))
        finally:
            os.unlink(tmp)

    def trace(self, text: str):
        """What the model makes of `text`, character by character: a `charrnn.trace.Trace` of the
        probabilities that predicted each character (`probs`, `top(k)`), its loss in nats
        (`loss`, NaN for a stream's first character), and every layer's activations after it
        (`layers[i]["h"]`; an LSTM's "c" and gates "i" "f" "g" "o", a GRU's "r" "z" "n"), the
        numbers `charrnn viz` shows. A record model reads each record, split at its separator,
        from its start marker. Runs on the CPU in fp32; raises CharrnnError for characters the
        model never saw. `charrnn.trace.rank_units` finds the units that track a feature."""
        from .inspect.trace import trace

        return trace(self._ckpt.model, self._ckpt.vocab, text, separator=self.record_separator)

    def _job(self, prime, length, n, temperature, top_k, top_p, seed, stop, echo_prime, novel, unique,
             beam) -> SampleJob:
        """The SampleJob the CLI would build from these options, checked against this model."""
        job = SampleJob(checkpoint=str(self.path), options=SamplingOptions(temperature, top_k, top_p), length=length,
                        prime=prime, echo_prime=echo_prime, num_samples=SampleJob.num_samples if n is None else n,
                        seed=seed, stop=stop, novel=novel, unique=unique, beam=beam)
        generate.check_sample_job(self._ckpt, job)
        return job

    def _pieces(self, job: SampleJob) -> Iterable[str]:
        """Record models: an iterator of the records. Stream models: an iterator of one sample's
        pieces, or the list of several samples. The prime is checked before this returns."""
        sampler = generate.sampler_for(self._ckpt)
        if self.record_separator is not None:
            return _records(RecordDraws(sampler, job, generate.known_records(self._ckpt, job)))
        prime, echo_prime, ids = generate.stream_ids(sampler, job)
        chars = sampler.vocab.chars
        if job.num_samples == 1:
            return sample_pieces(ids, chars, prime if echo_prime else "", job.stop)
        return sample_texts(ids, chars, prime if echo_prime else "", job.stop, job.num_samples)


def _records(draws: RecordDraws) -> Iterator[str]:
    for record in draws:
        yield draws.shown(record)
    shortfall = draws.shortfall()
    if shortfall:
        warnings.warn(shortfall, RuntimeWarning, stacklevel=3)


# ---- train --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainResult:
    """How a `train` run ended."""

    checkpoint_dir: Path
    checkpoint: Path | None  # latest.pt, None if the run ended before writing one
    exit_code: int  # what `charrnn train` would exit with: 0, or 128 + N when signal N stopped it
    steps: int | None  # steps taken in all, resumed runs included
    best_val_loss: float | None  # None before the first validation

    @property
    def interrupted(self) -> bool:
        """Whether a signal (Ctrl-C, SIGTERM) stopped the run before its budget was spent."""
        return self.exit_code != 0


TRAIN_JOB_OPTIONS = ("device", "precision", "resume", "overwrite", "encoding", "cache_dir")


def train(corpus: PathLike | Sequence[PathLike], checkpoint_dir: PathLike = DEFAULT_CHECKPOINT_DIR, *,
          device: str = TrainJob.device, precision: str = TrainJob.precision, resume: bool = TrainJob.resume,
          overwrite: bool = TrainJob.overwrite, encoding: str = TrainJob.encoding, cache_dir: PathLike | None = None,
          quiet: bool = True, progress: bool | None = None, **options) -> TrainResult:
    """Trains a model on `corpus` (a text file, "-" for stdin) as `charrnn train` does, writing
    latest.pt and best.pt to `checkpoint_dir`; `charrnn.load(checkpoint_dir)` then reads it.

    `options` are `charrnn train`'s options with underscores, the fields of config.ModelConfig
    and config.TrainConfig, with their defaults: e.g. cell, layers, hidden, batch_size, seq_len,
    lr, max_steps, eval_every, seed, records (a list of records, one a line), record_sep (the
    separator itself, e.g. "\\n\\n"). `max_time` takes seconds or a string such as "90s", "5m",
    "1h30m". Without max_epochs, max_steps or max_time, trains 20 epochs. `resume` continues
    the run in checkpoint_dir; `overwrite` replaces it (a new run refuses a directory that
    holds one). `device` "auto" takes CUDA, then MPS, then the CPU.

    Quiet by default: `progress=True` (or `quiet=False`) shows progress on stderr. Returns a
    TrainResult. Raises ValueError for an unknown option or a value out of range,
    CharrnnError for what the CLI reports as an error (an unreadable corpus, options that
    contradict a resumed run, ...), TrainingDiverged (a CharrnnError) when the loss becomes
    NaN or infinite, the last good checkpoint kept.

    Signals: SIGINT (Ctrl-C, a notebook's interrupt) or SIGTERM finishes the current step,
    saves latest.pt and returns normally, with `interrupted` True and exit_code 130 (143);
    `resume=True` continues the run. A second signal aborts at once, leaving the last
    checkpoint whole (exit_code 130). Signals are caught only when train runs in the main
    thread; elsewhere they act as they would without it.
    """
    if resume and overwrite:
        raise ValueError("give resume or overwrite, not both")
    known = {f.name: f for f in option_fields()}
    unknown = sorted(set(options) - set(known))
    if unknown:
        hint = f" (and train's own arguments: {', '.join(TRAIN_JOB_OPTIONS)}, quiet, progress)"
        raise ValueError(f"unknown train option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the "
                         f"options are {', '.join(known)}{hint}")
    checked = {name: _checked_option(known[name], value) for name, value in options.items()}
    paths = (corpus,) if isinstance(corpus, (str, os.PathLike)) else tuple(corpus)
    if not paths:
        raise ValueError("give a corpus")
    shown_progress = (not quiet) if progress is None else progress
    model_config, train_config = configs_from_options(checked, vocab_size=0)  # the corpus gives vocab_size
    job = TrainJob(
        corpus=tuple(os.fspath(p) for p in paths), checkpoint_dir=Path(checkpoint_dir), model=model_config,
        train=train_config,
        explicit=frozenset(checked), cache_dir=None if cache_dir is None else Path(cache_dir), resume=resume,
        overwrite=overwrite, encoding=encoding, device=device, precision=precision, quiet=not shown_progress,
    )
    code = commands.train(job)
    latest = job.checkpoint_dir / checkpoint.LATEST
    if not latest.exists():
        return TrainResult(job.checkpoint_dir, None, code, None, None)
    ckpt = checkpoint.load(latest)
    return TrainResult(job.checkpoint_dir, latest, code, ckpt.field("step", int),
                       ckpt.field("best_val_loss", (int, float)))


def _checked_option(f: Field, value):
    """`value` for the train option `f`, checked as the CLI's click type checks it; ValueError."""
    meta, name = f.metadata, f.name
    if meta["duration"]:
        try:
            return parse_duration(value)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    if value is None and f.default is None:
        return None
    if isinstance(f.default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} is True or False, not {value!r}")
        return value
    if meta["choices"]:
        if value not in meta["choices"]:
            raise ValueError(f"{name} must be one of {', '.join(meta['choices'])}, not {value!r}")
        return value
    bounds: Bounds | None = meta["bounds"]
    if bounds is not None:
        number = int if bounds.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            raise ValueError(f"{name} must be {_kind(bounds)}, not {value!r}")
        if not bounds.admits(value):
            raise ValueError(f"{name} must be {_kind(bounds)} {_range(bounds)}, not {value!r}")
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a string that is not empty, not {value!r}")
    return value


def _kind(bounds: Bounds) -> str:
    return "an integer" if bounds.kind is int else "a finite number"


def _range(bounds: Bounds) -> str:
    if bounds.high is None:
        return f"{'>' if bounds.low_open else '>='} {bounds.low:g}"
    if bounds.low is None:
        return f"{'<' if bounds.high_open else '<='} {bounds.high:g}"
    return (f"in {'(' if bounds.low_open else '['}{bounds.low:g}, {bounds.high:g}"
            f"{')' if bounds.high_open else ']'}")
