"""Every option of a training run, with its default, its bounds and its help: the one source.

The CLI builds its `train` options from these fields (cli.config_options), and the layers
below take the dataclasses. Nothing here imports torch, so `charrnn --help` stays fast.
"""

from __future__ import annotations

import math
import re
from dataclasses import Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import CharrnnError

CELLS = ("lstm", "gru", "rnn")

DEFAULT_CHECKPOINT_DIR = "checkpoints"  # every command's --checkpoint-dir, and the API's

# Without any stop option, training runs this many epochs (char-rnn's default is 50,
# over far smaller per-epoch step counts).
DEFAULT_MAX_EPOCHS = 20.0
# The defaults of sample, eval and viz, shared by the CLI's options and the Python API's
# arguments (generation/jobs.SampleJob, scoring.EvalJob, inspect/viz.VizJob read them here).
SAMPLE_LENGTH = 1000
SAMPLE_TEMPERATURE = 1.0
SAMPLE_SEPARATOR = "\n\n"
# Parallel streams make a CPU pass much faster than one stream; the burn-in gives each stream
# the preceding text as context, so the figure matches a single continuous pass closely (see
# docs/experiments.md, "Evaluation streams and burn-in").
EVAL_STREAMS = 16
VIZ_OUTPUT = "viz.html"
VIZ_MAX_CHARS = 5000

DURATION_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(value: str | float | None) -> float | None:
    """A duration in seconds: a number, or '90', '90s', '10m', '2h', '1h30m', '1.5h'; None stays None.

    Raises ValueError for anything else, and for a duration that is not finite and positive.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is not a duration like 90s, 10m, 2h or 1h30m")
    if isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"{value!r} is not a duration like 90s, 10m, 2h or 1h30m")
            # '1h1h' or '30m1h' is more likely a typo than a sum the user meant.
            units = [u for _, u in parts]
            repeated = next((u for u in DURATION_UNITS if units.count(u) > 1), None)
            if repeated:
                raise ValueError(f"{value!r} gives {repeated} more than once; give each unit once, "
                                 "largest first, like 1h30m")
            if units != sorted(units, key=DURATION_UNITS.get, reverse=True):
                raise ValueError(f"{value!r} gives its units out of order; give them largest first "
                                 "(h, m, s), like 1h30m")
            seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    else:
        seconds = float(value)
    if not (0 < seconds and math.isfinite(seconds)):
        raise ValueError("must be a finite duration longer than zero")
    return seconds


@dataclass(frozen=True)
class Bounds:
    """The values an option takes: a number type and a range (either end open or closed)."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def kind_text(self) -> str:
        return "an integer" if self.kind is int else "a finite number"

    def range_text(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


def option(default: Any, help: str = "", bounds: Bounds | None = None, choices: tuple[str, ...] | None = None,
           duration: bool = False, escapes: bool = False) -> Any:
    """A config field that is also a command-line option (`--name-with-dashes`; a bool is a
    flag). `duration` takes 90s, 10m, 2h; `escapes` reads backslash escapes such as \\n."""
    return field(default=default, metadata={"help": help, "bounds": bounds, "choices": choices,
                                            "duration": duration, "escapes": escapes})


def checked(f: Field, value: Any) -> Any:
    """`value` for the option `f`, checked against its declaration (type, bounds, choices): the one
    check every caller's options go through (the CLI's, the API's, a resumed run's). ValueError."""
    meta, name = f.metadata, f.name
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
    bounds: Bounds | None = Bounds(float, 0, low_open=True) if meta["duration"] else meta["bounds"]
    if bounds is not None:
        number = int if bounds.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            raise ValueError(f"{name} must be {bounds.kind_text()}, not {value!r}")
        if not bounds.admits(value):
            raise ValueError(f"{name} must be {bounds.kind_text()} {bounds.range_text()}, not {value!r}")
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a string that is not empty, not {value!r}")
    return value


def _check_options(config: object) -> None:
    for f in fields(config):
        if "help" in f.metadata:
            checked(f, getattr(config, f.name))


POSITIVE_INT = Bounds(int, low=1)
FRACTION = Bounds(float, 0, 1, high_open=True)  # [0, 1)
# torch.manual_seed takes seeds in [-2**63, 2**64 - 1] and raises on anything else.
SEED = Bounds(int, -(2**63), 2**64 - 1)


@dataclass
class ModelConfig:
    """The network's shape. `vocab_size` comes from the corpus, not from an option: 0 until
    the corpus is known, and a model needs it set."""

    vocab_size: int = 0
    cell: str = option("lstm", "Recurrent cell.", choices=CELLS)
    layers: int = option(2, "Stacked recurrent layers.", POSITIVE_INT)
    hidden: int = option(256, "Units per layer.", POSITIVE_INT)
    dropout: float = option(0.1, "Dropout between layers and before the output layer.", FRACTION)
    # AWD-LSTM's weight drop: one mask per training step, shared by every time step of the
    # window, so it regularises the recurrence itself, which dropout between layers does not.
    weight_drop: float = option(0.0, "DropConnect on the recurrent weights.", FRACTION)

    def __post_init__(self) -> None:
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 0:
            raise ValueError(f"vocab_size must be an integer >= 0, not {self.vocab_size!r}")
        _check_options(self)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    """How a run trains and when it stops. Defaults: docs/experiments.md, "Batch size and window
    length", "Peak learning rate", "Weight average"."""

    batch_size: int = option(16, "Parallel streams.", POSITIVE_INT)
    seq_len: int = option(64, "BPTT window, chars.", POSITIVE_INT)
    lr: float = option(1.2e-2, "Peak learning rate.", Bounds(float, 0, low_open=True))
    min_lr_frac: float = option(0.1, "Final learning rate as a fraction of the peak.", Bounds(float, 0, 1))
    warmup_steps: int = option(50, "Steps of linear warm-up.", Bounds(int, low=0))
    weight_decay: float = option(0.1, "AdamW weight decay.", Bounds(float, 0))
    grad_clip: float = option(1.0, "Gradient-norm clip; 0 turns clipping off.", Bounds(float, 0))
    # Validation scores the average beside the trained weights and checkpoints keep the better.
    ema_decay: float = option(0.999, "Also validate a moving average of the weights, and save it when it scores "
                                     "lower (0: off).", FRACTION)
    # Lets validation, rather than a guessed budget, decide when to anneal and stop.
    plateau_decay: float = option(1.0, "Multiply the learning rate by this whenever a validation fails to improve, "
                                       "and stop once it is below --min-lr-frac of the peak (1: off).",
                                  Bounds(float, 0, 1, low_open=True))
    val_frac: float = option(0.1, "The last fraction of the corpus is validation.",
                             Bounds(float, 0, 1, low_open=True, high_open=True))
    max_epochs: float | None = option(None, "Stop after this many epochs.", Bounds(float, 0, low_open=True))
    max_steps: int | None = option(None, "Stop after this many steps.", POSITIVE_INT)
    max_time: float | None = option(None, "Stop after this long, e.g. 90s, 10m, 2h.", duration=True)  # seconds
    eval_every: int = option(2000, "Steps between validations.", POSITIVE_INT)
    # Bounded so that a gigabyte corpus does not stall on a 100 MB pass (docs/experiments.md,
    # "Validation length during training"); `charrnn eval` scores a whole file.
    eval_chars: int | None = option(250_000, "Validate on at most this many characters of the split; 0 reads it "
                                             "all.", Bounds(int, low=0))
    save_every: int = option(250, "Steps between writes of latest.pt.", POSITIVE_INT)
    seed: int = option(1337, "Seeds the weights, dropout and each epoch's rotation of the text.", SEED)
    records: bool = option(False, "The corpus is a list of records (one a line, or per --record-sep): each is "
                                  "learned with start and end markers, and sample prints whole records.")
    record_sep: str = option("\n", "What separates records with --records, e.g. '\\n\\n' for paragraphs.",
                             escapes=True)

    def __post_init__(self) -> None:
        _check_options(self)

    def stop_given(self) -> bool:
        return any(v is not None for v in (self.max_epochs, self.max_steps, self.max_time))


def option_fields() -> list[Field]:
    """The fields of ModelConfig and TrainConfig that are command-line options, in order."""
    return [f for config in (ModelConfig, TrainConfig) for f in fields(config) if "help" in f.metadata]


@dataclass(frozen=True)
class TrainJob:
    """Everything `charrnn train` was asked to do."""

    corpus: tuple[str, ...]  # paths (files, or directories of files), or ("-",) for stdin
    checkpoint_dir: Path
    model: ModelConfig  # vocab_size 0: the corpus gives it
    train: TrainConfig
    explicit: frozenset[str] = frozenset()  # options the user gave, which a resumed run must honour
    cache_dir: Path | None = None  # default: CHECKPOINT_DIR/cache
    resume: bool = False
    overwrite: bool = False
    encoding: str = "utf-8"
    device: str = "auto"
    precision: str = "auto"
    quiet: bool = False
    tensorboard: Path | None = None  # --tensorboard: where the TensorBoard scalars go; None writes none
    init_from: str | None = None  # --init-from: a base checkpoint whose weights the new run starts from


# Where fine-tuning (--init-from) is better served by another default than training from
# nothing, measured in docs/experiments.md ("Fine-tuning defaults"); shown in --help.
FINETUNE_DEFAULTS: dict[str, Any] = {"lr": 2.5e-4, "eval_every": 50, "dropout": 0.3}
# A fine-tuning run validates at least every FINETUNE_DEFAULTS["eval_every"] steps, and one step
# per this many validation characters where that is more: 50 steps for the 10,000-character
# split of a 100,000-character corpus, where 50 was measured, so that validation keeps about the
# share of the time it had there on larger corpora (docs/experiments.md, "Fine-tuning defaults").
FINETUNE_VALIDATION_CHARS_PER_STEP = 200
# How --help shows the fine-tuning defaults that depend on the data.
FINETUNE_DEFAULTS_SHOWN = {
    "eval_every": f"{FINETUNE_DEFAULTS['eval_every']}, or one step per {FINETUNE_VALIDATION_CHARS_PER_STEP} "
                  f"validation chars where that is more"}

# Options that define a run: on --resume they come from the checkpoint, and giving a
# different value is an error rather than a silent mismatch.
FIXED_ON_RESUME = (
    "cell", "layers", "hidden", "dropout", "weight_drop", "batch_size", "seq_len", "val_frac", "lr",
    "min_lr_frac", "warmup_steps", "weight_decay", "grad_clip", "ema_decay", "plateau_decay", "seed", "records",
    "record_sep",
)

# Options newer than some checkpoints, with the value those checkpoints' runs had.
OPTIONS_ADDED_LATER = {"weight_drop": 0.0, "ema_decay": 0.0, "plateau_decay": 1.0, "records": False,
                       "record_sep": "\n"}


def run_options(model_config: ModelConfig, config: TrainConfig) -> dict:
    """Plain-data record of every option of a run, stored in its checkpoints as "train_args"."""
    options = {k: v for k, v in model_config.to_dict().items() if k != "vocab_size"}
    options.update(asdict(config))
    return options


def configs_from_options(options: dict, vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs named by a flat dict of options (as `run_options` writes)."""
    model_names = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
    train_names = {f.name for f in fields(TrainConfig)}
    model_config = ModelConfig(vocab_size=vocab_size, **{k: options[k] for k in model_names if k in options})
    return model_config, TrainConfig(**{k: v for k, v in options.items() if k in train_names})


def new_run_configs(job: TrainJob, vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    """A new run's configs: the job's, with the default epoch budget where no stop was given."""
    config = job.train if job.train.stop_given() else replace(job.train, max_epochs=DEFAULT_MAX_EPOCHS)
    return replace(job.model, vocab_size=vocab_size), config


def merge_resume_options(stored: dict, given: dict, explicit: set[str] | frozenset[str]) -> dict:
    """The options for a resumed run: stored values, overridden where the user gave one.

    Raises CharrnnError if an explicitly given option that defines the run differs.
    """
    merged = {**OPTIONS_ADDED_LATER, **stored}
    for name, value in given.items():
        if name not in explicit:
            merged.setdefault(name, value)
            continue
        if name in FIXED_ON_RESUME and name in merged and merged[name] != value:
            flag = "--" + name.replace("_", "-")
            raise CharrnnError(
                f"{flag} {value} differs from the checkpoint's {merged[name]}; drop {flag} to resume, "
                f"or train into another --checkpoint-dir"
            )
        merged[name] = value
    return merged


def resumed_configs(job: TrainJob, stored: dict, vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    """A resumed run's configs: the checkpoint's options, with the ones the user gave."""
    given = run_options(job.model, job.train)
    try:
        return configs_from_options(merge_resume_options(stored, given, job.explicit), vocab_size)
    except (ValueError, TypeError) as e:  # options a hand edit or another program left out of range
        raise CharrnnError(f"--resume: the checkpoint's stored options are damaged: {e}") from None
