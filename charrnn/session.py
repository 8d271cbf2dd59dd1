"""What each command does, in terms of the modules: corpus in, checkpoint out, figures back."""

from __future__ import annotations

from pathlib import Path

from . import checkpoint
from .corpus import read_text, sha256_text
from .errors import EXIT_SIGNAL_BASE, CharrnnError
from .evaluate import evaluate
from .model import CharRNN
from .progress import TrainingProgress, format_duration, log
from .runtime import pick_device, seed_everything
from .train import (
    DEFAULT_MAX_EPOCHS,
    Trainer,
    configs_from_options,
    merge_resume_options,
    stop_on_signals,
    train_options,
)
from .vocab import Vocabulary, escape_chars


def run_training(corpus_path: str, checkpoint_dir: Path, resume: bool, encoding: str, device_name: str,
                 quiet: bool, options: dict, explicit: set[str]) -> int:
    """Trains (or resumes), returning the process exit code."""
    device = pick_device(device_name)
    text = read_text(corpus_path, encoding)
    corpus = {"sha256": sha256_text(text), "length": len(text), "source": corpus_path}

    ckpt = None
    if resume:
        latest = checkpoint_dir / checkpoint.LATEST
        if not latest.exists():
            raise CharrnnError(f"--resume: no {checkpoint.LATEST} in {checkpoint_dir}")
        ckpt = checkpoint.load(latest)
        vocab = ckpt.vocab
        unknown = vocab.unknown(text)
        if unknown:
            raise CharrnnError(
                f"--resume: the corpus has characters the checkpoint's vocabulary lacks: {escape_chars(unknown, limit=20)}"
            )
        stored = ckpt.data.get("train_args") or {}
        old_sha = (ckpt.data.get("corpus") or {}).get("sha256")
        if old_sha and old_sha != corpus["sha256"]:
            # Shown even with --quiet, which silences progress, not warnings.
            log(f"warning: resuming on a different corpus (sha256 {corpus['sha256']}; "
                f"the checkpoint was trained on {old_sha})")
        options = merge_resume_options(stored, options, explicit)
        model_config, config = configs_from_options(options, len(vocab))
        if model_config.to_dict() != ckpt.model_config.to_dict():
            raise CharrnnError("--resume: the checkpoint's model config differs from its stored options")
    else:
        vocab = Vocabulary.from_text(text)
        model_config, config = configs_from_options(options, len(vocab))
        if not config.stop_given():
            config.max_epochs = DEFAULT_MAX_EPOCHS

    seed_everything(config.seed)
    model = ckpt.build_model() if ckpt is not None else CharRNN(model_config)
    tokens = vocab.encode(text)
    del text
    trainer = Trainer(model, vocab, tokens, config, device, checkpoint_dir, train_options(model_config, config),
                      corpus, resume=ckpt)
    log(f"training {model_config.cell} {model_config.layers}x{model_config.hidden} "
        f"({model.num_parameters():,} parameters) on {len(tokens):,} chars, {len(vocab)} symbols, "
        f"device {device.type}" + (f", resuming at step {trainer.step}" if ckpt else ""), quiet)
    trainer.progress = TrainingProgress(trainer.total_steps(), trainer.step, quiet)
    try:
        with stop_on_signals(trainer):
            result = trainer.run()
    except KeyboardInterrupt:
        trainer.progress.close()
        log(f"aborted; the last checkpoint in {checkpoint_dir} is intact", quiet=False)
        return EXIT_SIGNAL_BASE + 2
    finally:
        trainer.progress.close()
    latest = checkpoint_dir / checkpoint.LATEST
    if result.stopped_by_signal is not None:
        log(f"interrupted at step {result.step}; saved {latest}; continue with --resume", quiet=False)
        return EXIT_SIGNAL_BASE + result.stopped_by_signal
    best = f"best val loss {result.best_val_loss:.4f}" if result.best_val_loss is not None else "no validation"
    log(f"done: {result.step} steps in {format_duration(trainer.elapsed)}, {best}; saved {latest}", quiet)
    return 0


def read_eval_text(path: str, encoding: str, vocab: Vocabulary, skip_unknown: bool) -> tuple[str, int]:
    text = read_text(path, encoding)
    unknown = vocab.unknown(text)
    if not unknown:
        return text, 0
    if not skip_unknown:
        raise CharrnnError(
            f"the text has {len(unknown)} characters outside the model's vocabulary: "
            f"{escape_chars(unknown, limit=20)} (--skip-unknown drops them)"
        )
    keep = vocab.index
    kept = "".join(c for c in text if c in keep)
    return kept, len(text) - len(kept)


def run_eval(path: str, checkpoint_path: str, encoding: str, skip_unknown: bool, streams: int,
             device_name: str) -> dict:
    ckpt = checkpoint.load(checkpoint_path)
    device = pick_device(device_name)
    text, skipped = read_eval_text(path, encoding, ckpt.vocab, skip_unknown)
    if len(text) < 2:
        raise CharrnnError("need at least two known characters to evaluate")
    result = evaluate(ckpt.build_model(device), ckpt.vocab.encode(text), device, streams=streams)
    return {
        "loss": result.loss,
        "bpc": result.bpc,
        "perplexity": result.perplexity,
        "chars": result.chars,
        "skipped": skipped,
        "checkpoint": str(ckpt.path),
    }


def describe(checkpoint_path: str) -> dict:
    ckpt = checkpoint.load(checkpoint_path)
    d = ckpt.data
    config = ckpt.model_config
    corpus = d.get("corpus") or {}
    return {
        "checkpoint": str(ckpt.path),
        "cell": config.cell,
        "layers": config.layers,
        "hidden": config.hidden,
        "dropout": config.dropout,
        "parameters": ckpt.model.num_parameters(),
        "vocab_size": config.vocab_size,
        "vocab": escape_chars(ckpt.vocab.chars),
        "step": d.get("step"),
        "best_val_loss": d.get("best_val_loss"),
        "training_time": format_duration(d.get("elapsed") or 0.0),
        "corpus_sha256": corpus.get("sha256"),
        "corpus_length": corpus.get("length"),
    }
