"""A training run from start to end: the device and torchrun's world, the corpus read and
cached, a new run's configs or a resumed run's, the Trainer set up and run with progress and
signals, and how it ended (`TrainResult`). The Python API's `train` and so `charrnn train`
come here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .. import checkpoint
from ..config import TrainConfig, TrainJob, new_run_configs, resumed_configs
from ..errors import EXIT_SIGNAL_BASE, CharrnnError
from ..model import CharRNN
from ..native.recurrence import Kernel
from ..progress import TrainingProgress, format_duration, log
from ..runtime import pick_device, pick_precision, precision_label, seed_everything
from ..text import cache
from ..text.records import records_of_corpus
from ..text.vocab import Vocabulary, escape_chars
from . import distributed, finetune
from .batching import TrainingData
from .record_batches import RecordData
from .signals import stop_on_signals
from .streams import StreamData, split_for_training
from .trainer import Trainer


@dataclass(frozen=True)
class TrainResult:
    """How a training run ended."""

    checkpoint_dir: Path
    checkpoint: Path | None  # latest.pt, None if the run ended before writing one
    exit_code: int  # what `charrnn train` exits with: 0, or 128 + N when signal N stopped it
    steps: int | None  # steps taken in all, resumed runs included
    best_val_loss: float | None  # None before the first validation

    @property
    def interrupted(self) -> bool:
        """Whether a signal (Ctrl-C, SIGTERM) stopped the run before its budget was spent."""
        return self.exit_code != 0


def train(job: TrainJob) -> TrainResult:
    """Trains (or resumes) as `job` says, and says how the run ended.

    Under torchrun this runs once per rank: rank 0 alone reports progress and writes
    checkpoints, and the ranks on each machine share that machine's token cache.
    """
    world = distributed.from_environment()
    if world.distributed and "-" in job.corpus:
        raise CharrnnError("torchrun workers cannot share standard input; give the corpus as a file")
    world, device = distributed.start(world, pick_device(job.device))
    try:
        result = _train(job, world, device, pick_precision(job.precision, device))
        # Other ranks finish while rank 0 still writes the last checkpoint; no rank tears
        # gloo down under a live peer (docs/experiments.md, "Distributed runs").
        world.barrier()
        return result
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
                   resumed: Vocabulary | None, grown_from: Vocabulary | None = None) -> tuple[TrainingData, Vocabulary]:
    """What the run reads, and the vocabulary its model has: the corpus's own, a resumed model's
    (`resumed`), or a base's grown by the corpus's characters (`grown_from`, fine-tuning)."""
    if config.records:
        if world.distributed:
            raise CharrnnError("--records trains in one process; start it without torchrun")
        name = "<stdin>" if job.corpus == ("-",) else ", ".join(job.corpus)
        records = records_of_corpus(corpus, config.record_sep, name, keep_chars=resumed)
        if grown_from is not None:
            records = records.in_vocab(finetune.grown_vocabulary(grown_from, records.vocab.chars, records=True))
        data = RecordData(records, config.val_frac, config.batch_size * config.seq_len, config.seed,
                          config.record_sep)
        return data, records.vocab
    if grown_from is not None:
        resumed = finetune.grown_vocabulary(grown_from, corpus.vocab.chars, records=False)
    if resumed is not None:
        corpus = _in_vocab(corpus, resumed)
    train_tokens, val_tokens = split_for_training(corpus.tokens, config.val_frac, config.eval_chars,
                                                  config.batch_size, config.seq_len)
    data = StreamData(train_tokens, val_tokens, config.batch_size, config.seq_len, config.seed,
                      world.rows(config.batch_size), doc_starts=corpus.doc_starts)
    return data, corpus.vocab


def _train(job: TrainJob, world: distributed.World, device: torch.device,
           precision: torch.dtype | None) -> TrainResult:
    quiet = job.quiet or not world.is_main
    held = _held_checkpoints(job)
    base = finetune.load_base(job) if job.init_from is not None else None
    ckpt = _load_resumed(job) if job.resume else None
    corpus = _prepare_corpus(job, world, quiet)
    if ckpt is not None:
        model_config, config = resumed_configs(job, ckpt.field("train_args", dict) or {}, len(ckpt.vocab))
        if model_config.to_dict() != ckpt.model_config.to_dict():
            raise CharrnnError("--resume: the checkpoint's model config differs from its stored options")
        data, vocab = _training_data(job, config, corpus, world, resumed=ckpt.vocab)
        if world.is_main:
            _warn_if_another_corpus(ckpt, corpus)
    elif base is not None:
        # The run's own options (the fine-tuning defaults among them) decide how the data is read.
        model_config, config = finetune.run_configs(job, base, vocab_size=0)
        data, vocab = _training_data(job, config, corpus, world, resumed=None, grown_from=base.vocab)
        model_config = replace(model_config, vocab_size=len(vocab))
        config = finetune.with_eval_interval(config, job, data.validation_chars)
    else:
        data, vocab = _training_data(job, job.train, corpus, world, resumed=None)
        model_config, config = new_run_configs(job, len(vocab))
    seed_everything(config.seed)
    if ckpt is not None:
        model = ckpt.move_model_to("cpu")
    elif base is not None:
        model = finetune.grown_model(base, vocab, model_config)
    else:
        model = CharRNN(model_config)
    source = {"sha256": corpus.sha256, "length": len(corpus), "source": ", ".join(job.corpus)}
    trainer = Trainer(model, vocab, data, config, device, job.checkpoint_dir, source, resume=ckpt, world=world,
                      precision=precision, lineage=finetune.lineage(base) if base is not None else None)
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
        + (f", resuming at step {trainer.step}" if ckpt else "")
        + (f", from {base.path} ({len(base.vocab.chars)} symbols, step {trainer.lineage['steps']})" if base else ""),
        quiet)
    log(f"tokens {'from the cache' if corpus.reused else 'cached'}: {corpus.path}", quiet)
    code = _run(trainer, job.checkpoint_dir, quiet, world.is_main, job.tensorboard)
    if trainer.saved is None:  # stopped before its first save
        return TrainResult(job.checkpoint_dir, None, code, None, None)
    step, best_val_loss = trainer.saved
    return TrainResult(job.checkpoint_dir, job.checkpoint_dir / checkpoint.LATEST, code, step, best_val_loss)


def _recurrence_label(chosen: Kernel | None, records: bool) -> str:
    """", recurrence lstm_amx.c" (or another library) when the run's steps take a C recurrence
    rather than nn.LSTM; record batches vary in rows, so only those whose rows it fits do."""
    if chosen is None:
        return ""
    return f", recurrence {chosen.source}" + (" (batches of a multiple of 16 rows)" if records else "")


def _run(trainer: Trainer, checkpoint_dir: Path, quiet: bool, is_main: bool, tensorboard: Path | None = None) -> int:
    """Runs the loop with progress and signal handling, logging TensorBoard scalars to
    `tensorboard` (rank 0) when given; the exit code."""
    scalars = None
    if tensorboard is not None and is_main:
        from .tensorboard import TensorBoardScalars

        scalars = TensorBoardScalars(tensorboard)
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
