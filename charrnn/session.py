"""What each command does, in terms of the modules: corpus in, checkpoint out, figures back."""

from __future__ import annotations

from pathlib import Path

import torch

from . import checkpoint, distributed, tokens
from .errors import EXIT_SIGNAL_BASE, CharrnnError
from .evaluate import evaluate
from .model import CharRNN
from .progress import TrainingProgress, count_bar, format_duration, log
from .runtime import pick_device, pick_precision, precision_label, seed_everything
from .train import (
    DEFAULT_MAX_EPOCHS,
    Trainer,
    configs_from_options,
    merge_resume_options,
    stop_on_signals,
    train_options,
    with_device_defaults,
)
from .vocab import escape_chars


def run_training(corpus_path: str, checkpoint_dir: Path, resume: bool, encoding: str, device_name: str,
                 quiet: bool, options: dict, explicit: set[str], cache_dir: Path | None = None,
                 precision_name: str = "auto", overwrite: bool = False) -> int:
    """Trains (or resumes), returning the process exit code.

    Under torchrun this runs once per rank: rank 0 alone reports progress and writes
    checkpoints, and the ranks on each machine share that machine's token cache.
    """
    world = distributed.from_environment()
    if world.distributed and corpus_path == "-":
        raise CharrnnError("torchrun workers cannot share standard input; give the corpus as a file")
    world, device = distributed.start(world, pick_device(device_name))
    try:
        precision = pick_precision(precision_name, device)
        code = _train(world, device, precision, corpus_path, checkpoint_dir, resume, overwrite, encoding,
                      quiet or not world.is_main, options, explicit, cache_dir or checkpoint_dir / tokens.CACHE_FOLDER)
        # Other ranks finish while rank 0 still writes the last checkpoint. Twice in about
        # a dozen test-suite runs rank 1 aborted at exit ("terminate called without an active
        # exception") with rank 0 still running, so no rank tears gloo down under a live peer.
        world.barrier()
        return code
    finally:
        world.close()


def _prepare_corpus(world: distributed.World, corpus_path: str, encoding: str, cache_dir: Path,
                    quiet: bool) -> tokens.EncodedCorpus:
    # One rank per machine encodes; the others then find it in the cache.
    if world.local_rank == 0:
        corpus = tokens.prepare(corpus_path, encoding, cache_dir, quiet)
    world.barrier()
    if world.local_rank != 0:
        corpus = tokens.prepare(corpus_path, encoding, cache_dir, quiet=True)
    return corpus


def _train(world: distributed.World, device, precision: torch.dtype | None, corpus_path: str, checkpoint_dir: Path,
           resume: bool, overwrite: bool, encoding: str, quiet: bool, options: dict, explicit: set[str],
           cache_dir: Path) -> int:
    ckpt = None
    # A new run replaces latest.pt at once and best.pt only at its first validation: in
    # between, `sample` and `--resume` would take two different runs' weights.
    held = [] if resume else [checkpoint_dir / n for n in (checkpoint.LATEST, checkpoint.BEST)
                              if (checkpoint_dir / n).exists()]
    if held and not overwrite:
        raise CharrnnError(f"{checkpoint_dir} already holds a run ({', '.join(p.name for p in held)}): continue "
                           f"it with --resume, start over with --overwrite, or use another --checkpoint-dir")
    if resume:
        latest = checkpoint_dir / checkpoint.LATEST
        if not latest.exists():
            raise CharrnnError(f"--resume: no {checkpoint.LATEST} in {checkpoint_dir}")
        ckpt = checkpoint.load(latest)
    corpus = _prepare_corpus(world, corpus_path, encoding, cache_dir, quiet)
    source = {"sha256": corpus.sha256, "length": len(corpus), "source": corpus_path}

    if ckpt is not None:
        vocab = ckpt.vocab
        unknown = vocab.unknown(corpus.vocab.chars)
        if unknown:
            raise CharrnnError(
                "--resume: the corpus has characters the checkpoint's vocabulary lacks: "
                + escape_chars(unknown, limit=20)
            )
        corpus = tokens.renumber(corpus, vocab)
        stored = ckpt.field("train_args", dict) or {}
        old_sha = checkpoint.typed(ckpt.path, "corpus sha256", (ckpt.field("corpus", dict) or {}).get("sha256"), str)
        if old_sha and old_sha != corpus.sha256 and world.is_main:
            # Shown even with --quiet, which silences progress, not warnings.
            log(f"warning: resuming on a different corpus (sha256 {corpus.sha256}; "
                f"the checkpoint was trained on {old_sha})")
        options = merge_resume_options(stored, options, explicit)
        model_config, config = configs_from_options(options, len(vocab))
        if model_config.to_dict() != ckpt.model_config.to_dict():
            raise CharrnnError("--resume: the checkpoint's model config differs from its stored options")
    else:
        vocab = corpus.vocab
        options = with_device_defaults(options, explicit, device.type)
        model_config, config = configs_from_options(options, len(vocab))
        if not config.stop_given():
            config.max_epochs = DEFAULT_MAX_EPOCHS

    seed_everything(config.seed)
    model = ckpt.build_model() if ckpt is not None else CharRNN(model_config)
    trainer = Trainer(model, vocab, corpus.tokens, config, device, checkpoint_dir, train_options(model_config, config),
                      source, resume=ckpt, world=world, precision=precision)
    if world.is_main:
        for path in held:  # --overwrite, once the new run has passed its checks
            path.unlink(missing_ok=True)
    ranks = f" x {world.size} processes" if world.distributed else ""
    log(f"training {model_config.cell} {model_config.layers}x{model_config.hidden} "
        f"({model.num_parameters():,} parameters) on {len(corpus):,} chars, {len(vocab)} symbols, "
        f"device {device.type}{ranks}, {precision_label(precision)}"
        + (f", resuming at step {trainer.step}" if ckpt else ""), quiet)
    log(f"tokens {'from the cache' if corpus.reused else 'cached'}: {corpus.path}", quiet)
    trainer.progress = TrainingProgress(trainer.total_steps(), trainer.step, quiet)
    try:
        with stop_on_signals(trainer):
            result = trainer.run()
    except KeyboardInterrupt:
        trainer.progress.close()
        log(f"aborted; the last checkpoint in {checkpoint_dir} is intact", quiet=not world.is_main)
        return EXIT_SIGNAL_BASE + 2
    finally:
        trainer.progress.close()
    latest = checkpoint_dir / checkpoint.LATEST
    if result.stopped_by_signal is not None:
        log(f"interrupted at step {result.step}; saved {latest}; continue with --resume", quiet=not world.is_main)
        return EXIT_SIGNAL_BASE + result.stopped_by_signal
    best = f"best val loss {result.best_val_loss:.4f}" if result.best_val_loss is not None else "no validation"
    if trainer.plateaued():
        best += " (validation stopped improving)"
    log(f"done: {result.step} steps in {format_duration(trainer.elapsed)}, {best}; saved {latest}", quiet)
    return 0


def run_eval(path: str, checkpoint_path: str, encoding: str, skip_unknown: bool, streams: int,
             device_name: str, quiet: bool = False, precision_name: str = "auto") -> dict:
    ckpt = checkpoint.load(checkpoint_path)
    device = pick_device(device_name)
    precision = pick_precision(precision_name, device)
    ids, skipped = tokens.encode_for_model(path, encoding, ckpt.vocab, skip_unknown, quiet=quiet)
    if len(ids) < 2:
        raise CharrnnError("need at least two known characters to evaluate")
    with count_bar(len(ids) - 1, "evaluating", "char", quiet) as bar:
        result = evaluate(ckpt.build_model(device), ids, device, streams=streams, on_progress=bar.update,
                          precision=precision)
    return {
        "loss": result.loss,
        "bpc": result.bpc,
        "perplexity": result.perplexity,
        "chars": result.chars,
        "skipped": skipped,
        "precision": precision_label(precision),
        "checkpoint": str(ckpt.path),
    }


def describe(checkpoint_path: str) -> dict:
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
    }
