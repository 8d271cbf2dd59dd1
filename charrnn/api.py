"""charrnn's verbs: load a checkpoint, generate, stream, score, beam-search, trace, draw its
page; train a model; write a built-in corpus. `charrnn`'s commands are clients of these, as
Python users are (`import charrnn`), so both get the same objects, defaults and text for a seed.

Nothing is written to stdout; progress goes to stderr, and only when asked for. Errors are
charrnn's own types (charrnn.errors: CharrnnError, CheckpointError, TrainingDiverged) or, for an
argument that is out of range or of the wrong kind, ValueError; never SystemExit.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from . import checkpoint
from .config import (
    DEFAULT_CHECKPOINT_DIR,
    ModelConfig,
    TrainJob,
    configs_from_options,
    option_fields,
    parse_duration,
)
from .generation import jobs
from .generation.jobs import RecordDraws, SampleJob
from .generation.sampler import SamplingOptions
from .generation.writer import sample_pieces, sample_texts
from .inspect.viz import VizJob, write_page
from .model import CharRNN
from .progress import format_duration
from .runtime import pick_device
from .scoring import EvalJob, score
from .text.builtin import write_corpus
from .text.vocab import escape_chars
from .training import session
from .training.session import TrainResult

__all__ = ["Model", "TrainResult", "load", "train", "write_corpus"]

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
        self._scored: dict[str, CharRNN] = {}  # the weights on each other device `score` ran on

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
        ckpt, config = self._ckpt, self._ckpt.model_config
        corpus = ckpt.field("corpus", dict) or {}
        number = (int, float)
        return {
            "checkpoint": str(ckpt.path),
            "cell": config.cell,
            "layers": config.layers,
            "hidden": config.hidden,
            "dropout": config.dropout,
            "weight_drop": config.weight_drop,
            "parameters": ckpt.model.num_parameters(),
            "vocab_size": config.vocab_size,
            "vocab": escape_chars(ckpt.vocab.chars),
            "step": ckpt.field("step", int),
            "best_val_loss": ckpt.field("best_val_loss", number),
            "training_time": format_duration(ckpt.field("elapsed", number) or 0.0),
            "precision": ckpt.field("precision", str) or "unrecorded",
            "corpus_sha256": checkpoint.typed(ckpt.path, "corpus sha256", corpus.get("sha256"), str),
            "corpus_length": checkpoint.typed(ckpt.path, "corpus length", corpus.get("length"), int),
            "records": None if ckpt.record_separator is None else {
                "separator": ckpt.record_separator, "count": (ckpt.field("records", dict) or {}).get("count")},
            "lineage": ckpt.field("lineage", dict),  # a fine-tuned model's base; None for one trained from nothing
        }

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
        job = self._job(prime=prime, length=length, n=n, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, stop=stop, echo_prime=echo_prime, novel=novel, unique=unique, beam=beam)
        if beam is not None:
            return jobs.likeliest(jobs.sampler_for(self._ckpt), job)
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
        job = self._job(prime=prime, length=length, n=n, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, stop=stop, echo_prime=echo_prime, novel=novel, unique=unique)
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
        job = self._job(prime=prime, length=length, temperature=temperature, echo_prime=echo_prime, beam=k)
        return jobs.likeliest(jobs.sampler_for(self._ckpt), job)

    def draw_records(self, n: int = SampleJob.num_samples, prime: str | None = None, length: int = SampleJob.length,
                     *, temperature: float = SamplingOptions.temperature, top_k: int | None = SamplingOptions.top_k,
                     top_p: float | None = SamplingOptions.top_p, seed: int | None = SampleJob.seed,
                     echo_prime: bool = SampleJob.echo_prime, novel: bool = SampleJob.novel,
                     unique: bool = SampleJob.unique) -> RecordDraws:
        """A record model's n records as they are drawn (what `generate` returns for a record
        model), with the tally of the draws: iterate it for each record, `shown(record)` as it is
        printed; then `dropped_summary()` and `shortfall()` say what --novel and --unique cost."""
        if self.record_separator is None:
            raise ValueError("draw_records() is for record models; a stream model generates text")
        job = self._job(prime=prime, length=length, n=n, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, echo_prime=echo_prime, novel=novel, unique=unique)
        return RecordDraws(jobs.sampler_for(self._ckpt), job, jobs.known_records(self._ckpt, job))

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
        where = pick_device(device or self.device)
        model = self._on(where)
        if path is not None:
            job = EvalJob(text=os.fspath(path), encoding=encoding, skip_unknown=skip_unknown, streams=streams,
                          precision=precision, quiet=not progress)
            return score(self._ckpt, model, where, job)
        # The same encoding and scoring as a file gets: the text goes through a temporary one.
        fd, tmp = tempfile.mkstemp(prefix="charrnn-score-", suffix=".txt")
        try:
            with open(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            job = EvalJob(text=tmp, encoding="utf-8", skip_unknown=skip_unknown, streams=streams, precision=precision,
                          quiet=not progress, name="<text>")
            return score(self._ckpt, model, where, job)
        finally:
            os.unlink(tmp)

    def viz(self, output: PathLike | TextIO = VizJob.output, text: PathLike | None = None, *,
            max_chars: int = VizJob.max_chars, features: Sequence[str] = (), gates: bool = VizJob.gates,
            seed: int = VizJob.seed, temperature: float = VizJob.temperature, encoding: str = VizJob.encoding,
            skip_unknown: bool = VizJob.skip_unknown) -> dict:
        """Writes `charrnn viz`'s one-file page of what the model makes of the file at `text` ("-":
        stdin; None: a seeded sample the model writes itself) to `output`, a path or an open text
        stream; returns its size, what it shows ("chars", "units", "mean_loss") and the seconds it
        took. `features` are NAME=REGEX specs of further units to rank."""
        stream = None if isinstance(output, (str, os.PathLike)) else output
        job = VizJob(output="-" if stream is not None else os.fspath(output),
                     text=None if text is None else os.fspath(text), max_chars=max_chars, features=tuple(features),
                     gates=gates, seed=seed, temperature=temperature, encoding=encoding, skip_unknown=skip_unknown)
        return write_page(self._ckpt, job, stream)

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

    def export(self, output: PathLike, *, title: str | None = None) -> dict:
        """Writes the model to `output` for use outside charrnn, the format by its extension:
        .html (or .htm), one offline page that writes, draws records and co-writes in a browser;
        .onnx, the one-character step for onnxruntime and other runtimes (needs the onnx extra:
        pip install 'charrnn[onnx]'). Written atomically; returns the file's size and what it
        holds. `title` names the page."""
        from .export import export

        return export(self._ckpt, output, **({} if title is None else {"title": title}))

    def _job(self, *, n: int | None = None, temperature: float = SamplingOptions.temperature,
             top_k: int | None = SamplingOptions.top_k, top_p: float | None = SamplingOptions.top_p,
             **fields) -> SampleJob:
        """The SampleJob of these options (SampleJob's fields, with `n` for num_samples and the
        sampling options by name), checked against this model."""
        job = SampleJob(options=SamplingOptions(temperature, top_k, top_p),
                        num_samples=SampleJob.num_samples if n is None else n, **fields)
        jobs.check_sample_job(self._ckpt, job)
        return job

    def _on(self, device) -> CharRNN:
        """The weights on `device`: the checkpoint's own on the CPU (where generation runs), a
        copy kept per other device, so that scoring on a GPU never moves what sampling reads."""
        if device.type == "cpu":
            return self._ckpt.model
        key = str(device)
        if key not in self._scored:
            self._scored[key] = copy.deepcopy(self._ckpt.model).to(device)
        return self._scored[key]

    def _pieces(self, job: SampleJob) -> Iterable[str]:
        """Record models: an iterator of the records. Stream models: an iterator of one sample's
        pieces, or the list of several samples. The prime is checked before this returns."""
        sampler = jobs.sampler_for(self._ckpt)
        if self.record_separator is not None:
            return _records(RecordDraws(sampler, job, jobs.known_records(self._ckpt, job)))
        prime, echo_prime, ids = jobs.stream_ids(sampler, job)
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
TRAIN_ARGUMENTS = ("device", "precision", "resume", "overwrite", "encoding", "cache_dir", "tensorboard", "init_from",
                   "quiet", "progress")


def train(corpus: PathLike | Sequence[PathLike], checkpoint_dir: PathLike = DEFAULT_CHECKPOINT_DIR, *,
          device: str = TrainJob.device, precision: str = TrainJob.precision, resume: bool = TrainJob.resume,
          overwrite: bool = TrainJob.overwrite, encoding: str = TrainJob.encoding, cache_dir: PathLike | None = None,
          tensorboard: PathLike | None = None, init_from: PathLike | None = None, quiet: bool = True,
          progress: bool | None = None, **options) -> TrainResult:
    """Trains a model on `corpus` (a text file, a directory of them, several, or "-" for stdin)
    as `charrnn train` does, writing latest.pt and best.pt to `checkpoint_dir`;
    `charrnn.load(checkpoint_dir)` then reads it.

    `options` are `charrnn train`'s options with underscores, the fields of config.ModelConfig
    and config.TrainConfig, with their defaults: e.g. cell, layers, hidden, batch_size, seq_len,
    lr, max_steps, eval_every, seed, records (a list of records, one a line), record_sep (the
    separator itself, e.g. "\\n\\n"). `max_time` takes seconds or a string such as "90s", "5m",
    "1h30m". Without max_epochs, max_steps or max_time, trains 20 epochs. `resume` continues
    the run in checkpoint_dir, keeping its stored options where these do not name them;
    `overwrite` replaces it (a new run refuses a directory that holds one). `device` "auto" takes
    CUDA, then MPS, then the CPU. `tensorboard` is a folder for TensorBoard scalars.

    `init_from` (a checkpoint file or folder) fine-tunes: a new run whose weights start as that
    model's, its shape (cell, layers, hidden) taken from it, its vocabulary grown by the
    corpus's characters, with config.FINETUNE_DEFAULTS where `options` name no other value.

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
    known = {f.name for f in option_fields()}
    unknown = sorted(set(options) - known)
    if unknown:
        hint = f" (and train's own arguments: {', '.join(TRAIN_ARGUMENTS)})"
        raise ValueError(f"unknown train option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the "
                         f"options are {', '.join(sorted(known))}{hint}")
    if options.get("max_time") is not None:
        try:
            options["max_time"] = parse_duration(options["max_time"])
        except ValueError as e:
            raise ValueError(f"max_time: {e}") from None
    paths = (corpus,) if isinstance(corpus, (str, os.PathLike)) else tuple(corpus)
    if not paths:
        raise ValueError("give a corpus")
    shown_progress = (not quiet) if progress is None else progress
    model_config, train_config = configs_from_options(options, vocab_size=0)  # the corpus gives vocab_size
    job = TrainJob(
        corpus=tuple(os.fspath(p) for p in paths), checkpoint_dir=Path(checkpoint_dir), model=model_config,
        train=train_config, explicit=frozenset(options), cache_dir=None if cache_dir is None else Path(cache_dir),
        resume=resume, overwrite=overwrite, encoding=encoding, device=device, precision=precision,
        quiet=not shown_progress, tensorboard=None if tensorboard is None else Path(tensorboard),
        init_from=None if init_from is None else os.fspath(init_from),
    )
    return session.train(job)
