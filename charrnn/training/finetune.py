"""Starting from a trained model (`charrnn train NEW --init-from BASE`): a new run whose weights
begin as the base's, its vocabulary grown to hold the new corpus's characters.

The base's characters keep their learned rows in the input table and the output layer,
renumbered where the sorted order moves them; a character the base never saw gets a new row:
as an input, the mean of the base's rows (an average character); as an output, zero weights and
a bias far below the base's lowest, so the model starts out predicting the known characters as
before and the new ones as improbable (docs/design.md, "Fine-tuning"). A stream base may become
a record model: the marker, one more new id, starts as the base's newline in both roles, since
in a stream of lines a record starts after a newline and ends with one.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path

import torch

from .. import checkpoint
from ..config import (
    FINETUNE_DEFAULTS,
    FINETUNE_VALIDATION_CHARS_PER_STEP,
    ModelConfig,
    TrainConfig,
    TrainJob,
    new_run_configs,
)
from ..errors import CharrnnError
from ..model import CharRNN
from ..text.vocab import Vocabulary

SHAPE = ("cell", "layers", "hidden")  # what the base fixes; the other options are the new run's
NEW_OUTPUT_MARGIN = 8.0  # nats below the base's lowest output bias: a new character's start


def load_base(job: TrainJob) -> checkpoint.Checkpoint:
    """The base checkpoint, with sample's one-line errors for a missing, damaged or foreign one,
    refused where the new run would write into its folder or contradict its shape."""
    if job.resume:
        raise CharrnnError("--init-from starts a new run and --resume continues one: to continue a fine-tuning "
                           "run, give --resume alone")
    base = checkpoint.load(job.init_from)
    if Path(job.checkpoint_dir).resolve() == base.path.parent.resolve():
        raise CharrnnError(f"--checkpoint-dir {job.checkpoint_dir} is the base checkpoint's folder: fine-tuning "
                           f"writes a new run, so give it another --checkpoint-dir")
    shape = base.model_config
    for name in SHAPE:
        given, kept = getattr(job.model, name), getattr(shape, name)
        if name in job.explicit and given != kept:
            raise CharrnnError(f"--{name} {given} contradicts the base checkpoint's {kept} (--init-from takes the "
                               f"network's {', '.join(SHAPE)} from {base.path}): drop --{name}")
    if base.record_separator is not None and not job.train.records:
        raise CharrnnError(f"{base.path} is a record model: fine-tune it as one (add --records)")
    return base


def grown_vocabulary(base: Vocabulary, chars: list[str], records: bool) -> Vocabulary:
    """The base's characters and the new corpus's `chars`, with the marker for a record model."""
    return Vocabulary(set(base.chars) | set(chars), marker=records)


def run_configs(job: TrainJob, base: checkpoint.Checkpoint, vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    """The new run's configs: the base's shape, the new run's own training options, where the user
    gave none the fine-tuning defaults (config.FINETUNE_DEFAULTS), and the default epoch budget."""
    shape = {name: getattr(base.model_config, name) for name in SHAPE}
    defaults = {name: value for name, value in FINETUNE_DEFAULTS.items() if name not in job.explicit}
    model_fields = {f.name for f in fields(ModelConfig)}
    model = replace(job.model, **shape, **{k: v for k, v in defaults.items() if k in model_fields})
    train = replace(job.train, **{k: v for k, v in defaults.items() if k not in model_fields})
    job = replace(job, model=model, train=train)
    return new_run_configs(job, vocab_size)


def with_eval_interval(config: TrainConfig, job: TrainJob, validation_chars: int) -> TrainConfig:
    """`config` with fine-tuning's --eval-every where the user gave none: at least
    FINETUNE_DEFAULTS' value, in multiples of it, and one step per
    FINETUNE_VALIDATION_CHARS_PER_STEP characters of the validation split where that is more."""
    if "eval_every" in job.explicit:
        return config
    floor = FINETUNE_DEFAULTS["eval_every"]
    blocks = math.ceil(validation_chars / FINETUNE_VALIDATION_CHARS_PER_STEP / floor)
    return replace(config, eval_every=floor * max(1, blocks))


def grown_model(base: checkpoint.Checkpoint, vocab: Vocabulary, config: ModelConfig) -> CharRNN:
    """A model of `config` whose weights are the base's, its input and output rows moved to
    `vocab`'s ids and new rows for what the base lacks (see the module's docstring)."""
    old = base.model.state_dict()
    model = CharRNN(config)
    weights = {k: v.clone() for k, v in old.items() if k.startswith("core.")}
    rows = _base_rows(base.vocab, vocab)  # each new id's row in the base, -1 where it has none
    known = rows >= 0
    embed = old["embed.weight"][rows.clamp(min=0)].clone()
    embed[~known] = old["embed.weight"].mean(0)
    head_w = old["head.weight"][rows.clamp(min=0)].clone()
    head_w[~known] = 0.0
    head_b = old["head.bias"][rows.clamp(min=0)].clone()
    head_b[~known] = old["head.bias"].min() - NEW_OUTPUT_MARGIN
    weights.update({"embed.weight": embed, "head.weight": head_w, "head.bias": head_b})
    model.load_state_dict(weights)
    return model


def _base_rows(base: Vocabulary, vocab: Vocabulary) -> torch.Tensor:
    """For each id of `vocab`, the base's id of the same symbol (a stream base's newline for a
    new marker), or -1."""
    rows = [base.index.get(c, -1) for c in vocab.chars]
    if vocab.marker_id is not None:
        rows.append(base.marker_id if base.marker_id is not None else base.index.get("\n", -1))
    return torch.tensor(rows, dtype=torch.int64)


def lineage(base: checkpoint.Checkpoint) -> dict:
    """What a fine-tuned run's checkpoints record of their base, for `charrnn info`."""
    corpus = base.field("corpus", dict) or {}
    return {"base": base.path.name, "base_folder": str(base.path.parent), "corpus_sha256": corpus.get("sha256"),
            "corpus_source": corpus.get("source"), "steps": base.field("step", int),
            "best_val_loss": base.field("best_val_loss", (int, float))}
