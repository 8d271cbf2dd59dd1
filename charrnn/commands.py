"""What each command does, in terms of the modules: the CLI parses, then calls one function here
(or, for `charrnn sample`, in generate.py).

Every function takes typed options and raises CharrnnError (or a subclass) for anything the
user can fix; none of them knows about click.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from . import checkpoint
from .config import TrainConfig, TrainJob, new_run_configs, resumed_configs
from .errors import EXIT_SIGNAL_BASE, CharrnnError
from .evaluate import evaluate, evaluate_records
from .model import CharRNN
from .native.recurrence import Kernel
from .progress import TrainingProgress, count_bar, format_duration, log
from .runtime import pick_device, pick_precision, precision_label, seed_everything, threads_for_block
from .text import cache, encoder
from .text.builtin import build, write_output
from .text.records import records_of_corpus, split_records
from .text.vocab import Vocabulary, escape_chars
from .training import distributed
from .training.record_batches import RecordData
from .training.streams import StreamData, split_for_training
from .training.trainer import Trainer, stop_on_signals


# ---- corpus -------------------------------------------------------------------------------
def write_corpus(name: str, output: str, max_bytes: int | None = None, url: str | None = None) -> None:
    """Builds a ready-made corpus and writes it to `output` ('-': stdout)."""
    write_output(build(name, max_bytes=max_bytes, url=url), output)


# ---- train --------------------------------------------------------------------------------
def train(job: TrainJob) -> int:
    """Trains (or resumes), returning the process exit code.

    Under torchrun this runs once per rank: rank 0 alone reports progress and writes
    checkpoints, and the ranks on each machine share that machine's token cache.
    """
    world = distributed.from_environment()
    if world.distributed and "-" in job.corpus:
        raise CharrnnError("torchrun workers cannot share standard input; give the corpus as a file")
    world, device = distributed.start(world, pick_device(job.device))
    try:
        code = _train(job, world, device, pick_precision(job.precision, device))
        # Other ranks finish while rank 0 still writes the last checkpoint; no rank tears
        # gloo down under a live peer (docs/experiments.md, "Distributed runs").
        world.barrier()
        return code
    finally:
        world.close()


def _prepare_corpus(job: TrainJob, world: distributed.World, quiet: bool) -> cache.EncodedCorpus:
    # One rank per machine encodes; the others then find it in the cache.
    cache_dir = job.cache_dir or job.checkpoint_dir / cache.CACHE_FOLDER
    if world.local_rank == 0:
        corpus = cache.prepare_corpus(job.corpus, job.encoding, cache_dir, quiet)
    world.barrier()
    if world.local_rank != 0:
        corpus = cache.prepare_corpus(job.corpus, job.encoding, cache_dir, quiet=True)
    return corpus


def _held_checkpoints(job: TrainJob) -> list[Path]:
    """The checkpoints a new run would replace; an error unless --overwrite allows it.

    A new run replaces latest.pt at once and best.pt only at its first validation: in
    between, `sample` and `--resume` would take two different runs' weights.
    """
    if job.resume:
        return []
    held = [job.checkpoint_dir / n for n in (checkpoint.LATEST, checkpoint.BEST) if (job.checkpoint_dir / n).exists()]
    if held and not job.overwrite:
        raise CharrnnError(f"{job.checkpoint_dir} already holds a run ({', '.join(p.name for p in held)}): continue "
                           f"it with --resume, start over with --overwrite, or use another --checkpoint-dir")
    return held


def _load_resumed(job: TrainJob) -> checkpoint.Checkpoint:
    latest = job.checkpoint_dir / checkpoint.LATEST
    if not latest.exists():
        raise CharrnnError(f"--resume: no {checkpoint.LATEST} in {job.checkpoint_dir}")
    return checkpoint.load(latest)


def _warn_if_another_corpus(ckpt: checkpoint.Checkpoint, corpus: cache.EncodedCorpus) -> None:
    old_sha = checkpoint.typed(ckpt.path, "corpus sha256", (ckpt.field("corpus", dict) or {}).get("sha256"), str)
    if old_sha and old_sha != corpus.sha256:
        # Shown even with --quiet, which silences progress, not warnings.
        log(f"warning: resuming on a different corpus (sha256 {corpus.sha256}; "
            f"the checkpoint was trained on {old_sha})")


def _in_vocab(corpus: cache.EncodedCorpus, vocab: Vocabulary) -> cache.EncodedCorpus:
    """The corpus in a resumed model's ids; an error if it has characters the model lacks."""
    unknown = vocab.unknown(corpus.vocab.chars)
    if unknown:
        raise CharrnnError("--resume: the corpus has characters the checkpoint's vocabulary lacks: "
                           + escape_chars(unknown, limit=20))
    return cache.renumber(corpus, vocab)


def _training_data(job: TrainJob, config: TrainConfig, corpus: cache.EncodedCorpus, world: distributed.World,
                   resumed: Vocabulary | None) -> tuple[StreamData | RecordData, Vocabulary]:
    """What the run reads, and the vocabulary its model has: the corpus's own, or a resumed
    model's (`resumed`)."""
    if config.records:
        if world.distributed:
            raise CharrnnError("--records trains in one process; start it without torchrun")
        name = "<stdin>" if job.corpus == ("-",) else ", ".join(job.corpus)
        records = records_of_corpus(corpus, config.record_sep, name, keep_chars=resumed)
        data = RecordData(records, config.val_frac, config.batch_size * config.seq_len, config.seed,
                          config.record_sep)
        return data, records.vocab
    if resumed is not None:
        corpus = _in_vocab(corpus, resumed)
    train_tokens, val_tokens = split_for_training(corpus.tokens, config.val_frac, config.eval_chars,
                                                  config.batch_size, config.seq_len)
    data = StreamData(train_tokens, val_tokens, config.batch_size, config.seq_len, config.seed,
                      world.rows(config.batch_size), doc_starts=corpus.doc_starts)
    return data, corpus.vocab


def _train(job: TrainJob, world: distributed.World, device: torch.device, precision: torch.dtype | None) -> int:
    quiet = job.quiet or not world.is_main
    held = _held_checkpoints(job)
    ckpt = _load_resumed(job) if job.resume else None
    corpus = _prepare_corpus(job, world, quiet)
    if ckpt is not None:
        model_config, config = resumed_configs(job, ckpt.field("train_args", dict) or {}, len(ckpt.vocab))
        if model_config.to_dict() != ckpt.model_config.to_dict():
            raise CharrnnError("--resume: the checkpoint's model config differs from its stored options")
        data, vocab = _training_data(job, config, corpus, world, resumed=ckpt.vocab)
        if world.is_main:
            _warn_if_another_corpus(ckpt, corpus)
    else:
        data, vocab = _training_data(job, job.train, corpus, world, resumed=None)
        model_config, config = new_run_configs(job, len(vocab))
    seed_everything(config.seed)
    model = ckpt.move_model_to("cpu") if ckpt is not None else CharRNN(model_config)
    source = {"sha256": corpus.sha256, "length": len(corpus), "source": ", ".join(job.corpus)}
    trainer = Trainer(model, vocab, data, config, device, job.checkpoint_dir, source, resume=ckpt, world=world,
                      precision=precision)
    if world.is_main:
        for path in held:  # --overwrite, once the new run has passed its checks
            path.unlink(missing_ok=True)
    ranks = f" x {world.size} processes" if world.distributed else ""
    what = f"{len(data.train_records):,} records" if isinstance(data, RecordData) else f"{len(corpus):,} chars"
    if len(corpus.documents) > 1:
        what += f" of {len(corpus.documents):,} files"
    recurrence = _recurrence_label(trainer.recurrence, isinstance(data, RecordData))
    log(f"training {model_config.cell} {model_config.layers}x{model_config.hidden} "
        f"({model.num_parameters():,} parameters) on {what}, {len(vocab.chars)} symbols, "
        f"device {device.type}{ranks}, {precision_label(precision)}{recurrence}"
        + (f", resuming at step {trainer.step}" if ckpt else ""), quiet)
    log(f"tokens {'from the cache' if corpus.reused else 'cached'}: {corpus.path}", quiet)
    return _run(trainer, job.checkpoint_dir, quiet, world.is_main, job.tensorboard)


def _recurrence_label(chosen: Kernel | None, records: bool) -> str:
    """", recurrence lstm_amx.c" (or another library) when the run's steps take a C recurrence
    rather than nn.LSTM; record batches vary in rows, so only those whose rows it fits do."""
    if chosen is None:
        return ""
    return f", recurrence {chosen.source}" + (" (batches of a multiple of 16 rows)" if records else "")


def _run(trainer: Trainer, checkpoint_dir: Path, quiet: bool, is_main: bool, tensorboard: Path | None = None) -> int:
    """Runs the loop with progress and signal handling, logging TensorBoard scalars to
    `tensorboard` (rank 0) when given; the exit code."""
    scalars = TensorBoardScalars(tensorboard) if tensorboard is not None and is_main else None
    progress = TrainingProgress(trainer.total_steps(), trainer.step, quiet)
    result = None
    try:
        with stop_on_signals(trainer):
            result = trainer.run(progress, scalars)
    except KeyboardInterrupt:  # a second signal: the last checkpoint written stays whole
        pass
    finally:
        progress.close()
        if scalars is not None:
            scalars.close()
    if result is None:
        log(f"aborted; the last checkpoint in {checkpoint_dir} is intact", quiet=not is_main)
        return EXIT_SIGNAL_BASE + 2
    latest = checkpoint_dir / checkpoint.LATEST
    if result.stopped_by_signal is not None:
        log(f"interrupted at step {result.step}; saved {latest}; continue with --resume", quiet=not is_main)
        return EXIT_SIGNAL_BASE + result.stopped_by_signal
    best = f"best val loss {result.best_val_loss:.4f}" if result.best_val_loss is not None else "no validation"
    if trainer.plateaued():
        best += " (validation stopped improving)"
    log(f"done: {result.step} steps in {format_duration(trainer.elapsed)}, {best}; saved {latest}", quiet)
    return 0


# ---- eval ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalJob:
    """What `charrnn eval` (or the Python API's `Model.score`) was asked for."""

    text: str  # a path, or "-" for stdin
    checkpoint: str
    encoding: str = "utf-8"
    skip_unknown: bool = False
    streams: int = 16
    device: str = "auto"
    precision: str = "auto"
    quiet: bool = False
    name: str | None = None  # what messages call the text; default its path ("<stdin>" for "-")


def evaluate_text(job: EvalJob) -> dict:
    """The loss of a text under a checkpoint: nats and bits per character, perplexity."""
    return score(checkpoint.load(job.checkpoint), job)


def score(ckpt: checkpoint.Checkpoint, job: EvalJob) -> dict:
    """`evaluate_text` for a checkpoint already loaded (`job.checkpoint` is not read again)."""
    device = pick_device(job.device)
    precision = pick_precision(job.precision, device)
    if ckpt.record_separator is not None:
        return _evaluate_records(job, ckpt, device, precision)
    ids, skipped = encoder.encode_for_model(job.text, job.encoding, ckpt.vocab, job.skip_unknown, quiet=job.quiet)
    if len(ids) < 2:
        raise CharrnnError("need at least two known characters to evaluate")
    with count_bar(len(ids) - 1, "evaluating", "char", job.quiet) as bar:
        result = evaluate(ckpt.move_model_to(device), ids, device, streams=job.streams, on_progress=bar.update,
                          precision=precision)
    return _eval_summary(result, skipped, precision, ckpt)


def _evaluate_records(job: EvalJob, ckpt: checkpoint.Checkpoint, device: torch.device,
                      precision: torch.dtype | None) -> dict:
    """A record model scores the text's records as it was trained: per token, END included."""
    separator = ckpt.record_separator
    readable = Vocabulary(ckpt.vocab.chars + list(separator))  # the separator need not be in the model
    ids, skipped = encoder.encode_for_model(job.text, job.encoding, readable, job.skip_unknown, quiet=job.quiet)
    name = job.name or ("<stdin>" if job.text == "-" else job.text)
    records = split_records(ids, readable, separator, name, keep_chars=ckpt.vocab)
    with count_bar(len(records.ids) + len(records), "evaluating", "token", job.quiet) as bar:
        result = evaluate_records(ckpt.move_model_to(device), records, device, precision=precision,
                                  on_progress=bar.update)
    return {**_eval_summary(result, skipped, precision, ckpt), "records": len(records)}


def _eval_summary(result, skipped: int, precision: torch.dtype | None, ckpt: checkpoint.Checkpoint) -> dict:
    return {
        "loss": result.loss,
        "bpc": result.bpc,
        "perplexity": result.perplexity,
        "chars": result.chars,
        "skipped": skipped,
        "precision": precision_label(precision),
        "checkpoint": str(ckpt.path),
    }


# ---- info ---------------------------------------------------------------------------------
def describe(checkpoint_path: str) -> dict:
    """A checkpoint's model, vocabulary, training progress and corpus, as plain data."""
    ckpt = checkpoint.load(checkpoint_path)
    config = ckpt.model_config
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
    }


# ---- viz ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VizJob:
    """What `charrnn viz` was asked for."""

    checkpoint: str
    output: str = "viz.html"  # "-" for stdout
    text: str | None = None  # a path, "-" for stdin; None: a sample the model writes itself
    max_chars: int = 5000
    features: tuple[str, ...] = ()  # NAME=REGEX
    gates: bool = False
    seed: int = 0
    temperature: float = 1.0
    encoding: str = "utf-8"
    skip_unknown: bool = False


def viz(job: VizJob, out: TextIO) -> dict:
    """Writes the page of what the model makes of a text (viz.py); its size, what it shows and
    how long it took. Runs on one thread: one stream's steps are too small to share, and on a
    busy CPU two threads took 2 to 93 s where one takes 1.4 (docs/benchmarks.md, "charrnn viz")."""
    with threads_for_block(1):
        return _viz(job, out)


def _viz(job: VizJob, out: TextIO) -> dict:
    import time

    from .fileio import atomic_write_bytes, why_write_failed
    from .inspect import viz as page
    from .inspect.trace import trace

    started = time.perf_counter()
    try:
        features = [page.Feature.parse(spec) for spec in job.features]
    except ValueError as e:
        raise CharrnnError(f"--feature {e}") from None
    ckpt = checkpoint.load(job.checkpoint)
    if job.text is None:
        text, source = page.sample_text(ckpt, job.max_chars, job.seed, job.temperature)
    else:
        allowed = set(ckpt.vocab.chars) | set(ckpt.record_separator or "")
        text, skipped = page.read_text(job.text, job.encoding, job.max_chars, allowed, job.skip_unknown)
        source = ("standard input" if job.text == "-" else job.text) + (f", {skipped:,} unknown dropped" if skipped
                                                                        else "")
    result = trace(ckpt.model, ckpt.vocab, text, separator=ckpt.record_separator)
    data = page.page_data(result, page.model_card(ckpt, source, result), ckpt.field("metrics", list) or [],
                          features, job.gates)
    html = page.render(data, title=f"charrnn viz: {ckpt.path.name}, {result.cell} "
                                   f"{len(result.layers)}x{data['hidden']}")
    encoded = html.encode("utf-8")
    if job.output == "-":
        out.write(html)
    else:
        try:
            atomic_write_bytes(Path(job.output), encoded)
        except OSError as e:
            raise CharrnnError(f"cannot write {job.output}: {why_write_failed(e)}") from None
    units = len(data["layers"]) * len(data["kinds"]) * data["hidden"]
    return {"output": job.output, "bytes": len(encoded), "chars": len(result.text), "units": units,
            "mean_loss": result.mean_loss, "seconds": time.perf_counter() - started}


# ---- train --tensorboard ------------------------------------------------------------------
class TensorBoardScalars:
    """`Trainer.scalars` for --tensorboard: each value as a TensorBoard scalar at its step."""

    TAGS = {"train_loss": "loss/train", "val_loss": "loss/validation", "lr": "learning_rate",
            "chars_per_s": "throughput/chars_per_s"}

    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CharrnnError("--tensorboard needs the tensorboard package: pip install tensorboard "
                               "(or pip install 'charrnn[tensorboard]')") from None
        try:
            self.writer = SummaryWriter(log_dir=str(folder), flush_secs=10)
        except OSError as e:
            raise CharrnnError(f"--tensorboard {folder}: {e.strerror or e}") from None

    def __call__(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(self.TAGS.get(name, name), value, step)

    def close(self) -> None:
        self.writer.close()
