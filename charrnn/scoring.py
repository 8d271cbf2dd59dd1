"""A text scored under a trained model, as `charrnn eval` and `Model.score` report it: the text
read in the model's vocabulary, its loss as a stream model reads text or, for a record model,
per token over its records, with bits per character and perplexity."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checkpoint import Checkpoint
from .config import EVAL_STREAMS
from .errors import CharrnnError
from .evaluate import EvalResult, evaluate, evaluate_records
from .model import CharRNN
from .progress import count_bar
from .runtime import pick_precision, precision_label
from .text.encoder import encode_for_model
from .text.records import split_records
from .text.vocab import Vocabulary


@dataclass(frozen=True)
class EvalJob:
    """What `charrnn eval` (or the Python API's `Model.score`) was asked for."""

    text: str  # a path, or "-" for stdin
    encoding: str = "utf-8"
    skip_unknown: bool = False
    streams: int = EVAL_STREAMS
    precision: str = "auto"
    quiet: bool = False
    name: str | None = None  # what messages call the text; default its path ("<stdin>" for "-")


def score(ckpt: Checkpoint, model: CharRNN, device: torch.device, job: EvalJob) -> dict:
    """The loss of `job.text` under the checkpoint's weights (`model`, on `device`): nats and bits
    per character, perplexity, and what was read."""
    precision = pick_precision(job.precision, device)
    if ckpt.record_separator is not None:
        return _evaluate_records(job, ckpt, model, device, precision)
    ids, skipped = encode_for_model(job.text, job.encoding, ckpt.vocab, job.skip_unknown, quiet=job.quiet)
    if len(ids) < 2:
        raise CharrnnError("need at least two known characters to evaluate")
    with count_bar(len(ids) - 1, "evaluating", "char", job.quiet) as bar:
        result = evaluate(model, ids, device, streams=job.streams, on_progress=bar.update, precision=precision)
    return _eval_summary(result, skipped, precision, ckpt)


def _evaluate_records(job: EvalJob, ckpt: Checkpoint, model: CharRNN, device: torch.device,
                      precision: torch.dtype | None) -> dict:
    """A record model scores the text's records as it was trained: per token, END included."""
    separator = ckpt.record_separator
    readable = Vocabulary(ckpt.vocab.chars + list(separator))  # the separator need not be in the model
    ids, skipped = encode_for_model(job.text, job.encoding, readable, job.skip_unknown, quiet=job.quiet)
    name = job.name or ("<stdin>" if job.text == "-" else job.text)
    records = split_records(ids, readable, separator, name, keep_chars=ckpt.vocab)
    with count_bar(len(records.ids) + len(records), "evaluating", "token", job.quiet) as bar:
        result = evaluate_records(model, records, device, precision=precision, on_progress=bar.update)
    return {**_eval_summary(result, skipped, precision, ckpt), "records": len(records)}


def _eval_summary(result: EvalResult, skipped: int, precision: torch.dtype | None, ckpt: Checkpoint) -> dict:
    return {
        "loss": result.loss,
        "bpc": result.bpc,
        "perplexity": result.perplexity,
        "chars": result.chars,
        "skipped": skipped,
        "precision": precision_label(precision),
        "checkpoint": str(ckpt.path),
    }
