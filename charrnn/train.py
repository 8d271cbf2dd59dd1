"""The training loop: truncated BPTT over carried state, AdamW, a budget-fitted schedule."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from . import checkpoint
from .average import WeightAverage
from .data import StreamBatcher, min_train_length, split
from .distributed import World
from .errors import CharrnnError, TrainingDiverged
from .evaluate import DEFAULT_STREAMS, evaluate
from .model import CharRNN, ModelConfig, State, detach_state, loss_fn
from .progress import TrainingProgress, format_duration
from .runtime import autocast, precision_label, rng_state, seed_everything, set_rng_state
from .vocab import Vocabulary

# Without any stop option, training runs this many epochs (char-rnn's default is 50,
# over far smaller per-epoch step counts).
DEFAULT_MAX_EPOCHS = 20.0


@dataclass
class TrainConfig:
    # Defaults measured on a 2-core CPU with tiny-shakespeare (bench/quality.py): smaller
    # batches and windows give more updates in a time budget, which beat larger ones there.
    batch_size: int = 16
    seq_len: int = 64
    # A high peak rate regularises a model that would otherwise overfit the corpus, and the
    # weight average (ema_decay) removes the noise it leaves: 1.2e-2 beat 3e-3 by 0.04-0.05 nats
    # in 10 minutes (bench/README.md).
    lr: float = 1.2e-2
    min_lr_frac: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # An exponential moving average of the weights is validated beside them, and checkpoints
    # hold whichever scored lower; 0 keeps no average. 0.999 (about the last 1,000 steps, an
    # epoch of tiny-shakespeare) beat 0.995 by 0.005 at the best validation and 0.010 at the
    # last in two pairs of 10-minute CPU runs (bench/README.md).
    ema_decay: float = 0.999
    # When a validation fails to beat the best so far, the learning rate is multiplied by
    # this for the rest of the run, and the run ends once it has fallen below min_lr_frac of
    # the peak: validation, not a guessed epoch count, then decides when to anneal and stop.
    # 1 turns it off (a CPU run's time budget ends before validation stops improving).
    plateau_decay: float = 1.0
    val_frac: float = 0.1
    max_epochs: float | None = None
    max_steps: int | None = None
    max_time: float | None = None  # seconds
    eval_every: int = 2000
    # Validation during training reads at most this many characters from the start of the
    # validation split, so a gigabyte corpus does not stall on a 100 MB pass: 250,000 take
    # about 5 s with the default model on a 2-core CPU. `charrnn eval` scores a whole file.
    # Tiny-shakespeare's split (111,540 characters) is read whole.
    eval_chars: int | None = 250_000
    save_every: int = 250
    seed: int = 1337

    def stop_given(self) -> bool:
        return any(v is not None for v in (self.max_epochs, self.max_steps, self.max_time))


# Options that define a run: on --resume they come from the checkpoint, and giving a
# different value is an error rather than a silent mismatch.
FIXED_ON_RESUME = (
    "cell", "layers", "hidden", "dropout", "weight_drop", "batch_size", "seq_len", "val_frac", "lr",
    "min_lr_frac", "warmup_steps", "weight_decay", "grad_clip", "ema_decay", "plateau_decay", "seed",
)


# Options newer than some checkpoints, with the value those checkpoints' runs had.
OPTIONS_ADDED_LATER = {"weight_drop": 0.0, "ema_decay": 0.0, "plateau_decay": 1.0}


# Defaults that differ by device, where a measurement on that device calls for it; the CPU's
# are the click options' own. None differ now. CUDA had its own (3x1024, dropout 0.5, batch
# 128 x 128, peak rate 2e-3, plateau rule) until the thirteenth session: they overfit
# tiny-shakespeare within a minute and reached 1.3921 in a 5-minute budget on an H200, and
# six variations did no better. The CPU's 2x256 defaults reach 1.3699 in 18,000 steps with the
# schedule fitted to them (1.3413 in 60,000), and on that H200 charrnn's 2x256 step ran 60
# steps/s at batch 64 x 128, more work per step than the default 16 x 64: so a 5-minute GPU
# run of the CPU's defaults takes about 18,000 steps at the least (less validation's time).
# Inferred from those measurements, not yet measured on a GPU (bench/README.md, "GPU
# defaults"); a GPU-only default goes here once one is.
DEVICE_DEFAULTS: dict[str, dict] = {}


def with_device_defaults(options: dict, explicit: set[str], device_type: str) -> dict:
    """`options` with the device's own defaults in place of the generic ones the user left."""
    own = DEVICE_DEFAULTS.get(device_type, {})
    return {**options, **{k: v for k, v in own.items() if k in options and k not in explicit}}


def merge_resume_options(stored: dict, given: dict, explicit: set[str]) -> dict:
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


def configs_from_options(options: dict, vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs named by a flat dict of options."""
    model_names = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
    train_names = {f.name for f in fields(TrainConfig)}
    model_config = ModelConfig(vocab_size=vocab_size, **{k: options[k] for k in model_names if k in options})
    return model_config, TrainConfig(**{k: v for k, v in options.items() if k in train_names})


@dataclass
class TrainResult:
    step: int
    best_val_loss: float | None
    stopped_by_signal: int | None
    checkpoint_dir: Path


class Trainer:
    def __init__(
        self,
        model: CharRNN,
        vocab: Vocabulary,
        tokens: torch.Tensor,
        config: TrainConfig,
        device: torch.device,
        checkpoint_dir: Path,
        options: dict,
        corpus: dict,
        progress: TrainingProgress | None = None,
        resume: checkpoint.Checkpoint | None = None,
        world: World | None = None,
        precision: torch.dtype | None = None,
    ):
        self.config = config
        self.device = device
        self.precision = precision  # the autocast dtype, None for full precision
        self.vocab = vocab
        self.world = world = world or World()
        self.model = model.to(device)
        # Gradients are averaged across ranks by DDP; `self.model` stays the plain module
        # for evaluation and checkpoints.
        self.train_model: torch.nn.Module = self.model
        if world.distributed:
            if config.batch_size % world.size:
                raise CharrnnError(
                    f"--batch-size {config.batch_size} must be a multiple of the {world.size} processes, "
                    f"each of which takes an equal share of the streams"
                )
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        # Follows the trained weights step by step. Validation scores both; checkpoints hand
        # `sample` and `eval` whichever scored lower last (the average lags while the loss
        # still falls fast, and wins once it is the steps' noise that dominates).
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.use_average = False
        self.checkpoint_dir = Path(checkpoint_dir)
        self.options = options
        self.corpus = corpus
        self.progress = progress

        train_tokens, self.val_tokens = split(tokens, config.val_frac)
        if config.eval_chars:
            self.val_tokens = self.val_tokens[: config.eval_chars + 1]
        need = min_train_length(config.batch_size, config.seq_len)
        if len(train_tokens) < need or len(self.val_tokens) < 2:
            raise CharrnnError(
                f"the corpus is too short: {len(tokens):,} characters, but --batch-size {config.batch_size} "
                f"× (--seq-len {config.seq_len} + 1) needs {need:,} for training plus a validation split "
                f"of at least 2 (--val-frac {config.val_frac}); use a longer corpus or smaller sizes"
            )
        self.batcher = StreamBatcher(train_tokens, config.batch_size, config.seq_len, world.rows(config.batch_size),
                                     seed=config.seed)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99)
        )
        self.step = 0
        self.lr_scale = 1.0  # cut by plateau_decay at each validation that fails to improve
        self.elapsed = 0.0  # training seconds, summed over resumed runs
        self.best_val_loss: float | None = None
        self.metrics: list[dict] = []
        self.state: State | None = None
        self.stop_signal: int | None = None
        self.stop_agreed = False
        # Each rank draws its own dropout masks; rank 0 of any run draws a one-process run's.
        seed_everything(config.seed + world.rank)
        if resume is not None:
            self._restore(resume)

    # ---- schedule -------------------------------------------------------------------
    def total_steps(self) -> int | None:
        """Steps the run will take when bounded by steps or epochs (None for time alone)."""
        c = self.config
        bounds = []
        if c.max_steps is not None:
            bounds.append(c.max_steps)
        if c.max_epochs is not None:
            bounds.append(math.ceil(c.max_epochs * self.batcher.windows_per_epoch))
        return min(bounds) if bounds else None

    def progress_fraction(self) -> float:
        """How far through the budget the run is, 0..1: the larger of steps and time."""
        fractions = [0.0]
        total = self.total_steps()
        if total:
            fractions.append(self.step / total)
        if self.config.max_time:
            fractions.append(self.elapsed / self.config.max_time)
        return min(1.0, max(fractions))

    def learning_rate(self) -> float:
        """Linear warm-up, then cosine decay to min_lr_frac of the peak at the budget's end."""
        c = self.config
        warm = min(1.0, (self.step + 1) / max(1, c.warmup_steps))
        decay = c.min_lr_frac + (1 - c.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * self.progress_fraction()))
        return c.lr * warm * decay * self.lr_scale

    def plateaued(self) -> bool:
        """Whether validation stopped improving for long enough to end the run."""
        return self.lr_scale < self.config.min_lr_frac

    def done(self) -> bool:
        return self.progress_fraction() >= 1.0 or self.plateaued()

    @property
    def output_model(self) -> CharRNN:
        """The weights that `sample` and `eval` get: the average once it validates better."""
        return self.average.model if self.average is not None and self.use_average else self.model

    # ---- checkpoints ---------------------------------------------------------------
    def _payload(self) -> dict:
        pos = self.batcher.position
        # "model" is for use; resuming also needs the other set of weights, stored once.
        other = {}
        if self.average is not None:
            other = ({"trained_model": self.model.state_dict()} if self.use_average
                     else {"averaged_model": self.average.model.state_dict()})
        return {
            "model_config": self.model.config.to_dict(),
            "vocab": self.vocab.chars,
            "model": self.output_model.state_dict(),
            **other,
            "optimizer": self.optimizer.state_dict(),
            "schedule": {"step": self.step, "elapsed": self.elapsed, "lr": self.learning_rate(),
                         "lr_scale": self.lr_scale},
            "step": self.step,
            "data_position": {"epoch": pos.epoch, "window": pos.window, "offset": pos.offset},
            "hidden": [self.world.gather_rows(h) for h in self.state] if self.state is not None else None,
            "rng": rng_state(),
            "metrics": self.metrics,
            "best_val_loss": self.best_val_loss,
            "train_args": self.options,
            "corpus": self.corpus,
            "elapsed": self.elapsed,
            "precision": precision_label(self.precision),  # of the run that wrote it
        }

    def _restore(self, ckpt: checkpoint.Checkpoint) -> None:
        d = ckpt.data
        try:
            if self.average is not None:
                # The session built both from "model"; one of them takes the stored other set.
                self.use_average = "trained_model" in d
                if self.use_average:
                    self.model.load_state_dict(d["trained_model"])
                else:
                    self.average.model.load_state_dict(d["averaged_model"])
            self.optimizer.load_state_dict(d["optimizer"])
            self.step = int(d["step"])
            self.elapsed = float(d["elapsed"])
            self.lr_scale = float(d["schedule"].get("lr_scale", 1.0))
            self.best_val_loss = d["best_val_loss"]
            self.metrics = list(d["metrics"])
            self.batcher.position.epoch = int(d["data_position"]["epoch"])
            self.batcher.position.window = int(d["data_position"]["window"])
            # Checkpoints from before epochs were rotated read the unrotated layout.
            self.batcher.position.offset = int(d["data_position"].get("offset", 0))
            hidden = d["hidden"]
            same_shape = hidden is not None and tuple(hidden[0].shape[1:2]) == (self.config.batch_size,)
            rows = self.world.rows(self.config.batch_size)
            self.state = tuple(h[:, rows].to(self.device, torch.float32) for h in hidden) if same_shape else None
            set_rng_state(d["rng"])
            if self.world.distributed:
                # The checkpoint holds rank 0's generator; the others derive theirs afresh.
                seed_everything(self.config.seed + self.world.rank + 7919 * self.step)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise checkpoint.CheckpointError(f"{ckpt.path}: cannot resume from this checkpoint ({e})") from None

    def _check_finite(self, loss: float) -> None:
        if math.isfinite(loss) and all(torch.isfinite(p).all() for p in self.model.parameters()):
            return
        kept = self.checkpoint_dir / checkpoint.LATEST
        where = f"the last good checkpoint is {kept}" if kept.exists() else "no checkpoint was written"
        raise TrainingDiverged(
            f"training diverged at step {self.step} (loss {loss}); stopped without saving; {where}. "
            f"Try a lower --lr or --grad-clip"
        )

    def save(self, best: bool) -> None:
        payload = self._payload()  # a collective under DDP: every rank builds it
        if not self.world.is_main:
            return
        checkpoint.save(self.checkpoint_dir / checkpoint.LATEST, payload)
        if best:
            checkpoint.save(self.checkpoint_dir / checkpoint.BEST, payload)

    def _validation_loss(self, model: CharRNN) -> float:
        world = self.world
        streams = max(DEFAULT_STREAMS, world.size)
        return evaluate(model, self.val_tokens, self.device, streams=streams,
                        shard=(world.rank, world.size), reduce=world.sum, precision=self.precision).loss

    def validate(self) -> dict[str, float]:
        """Validation losses, "val_loss" being that of the weights checkpoints now hold."""
        trained = self._validation_loss(self.model)
        if self.average is None:
            return {"val_loss": trained}
        averaged = self._validation_loss(self.average.model)
        self.use_average = averaged < trained
        return {"val_loss": min(trained, averaged), "val_loss_trained": trained, "val_loss_averaged": averaged}

    # ---- the loop ------------------------------------------------------------------
    def request_stop(self, signum: int) -> None:
        self.stop_signal = signum

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a batch, carrying the state; returns the (detached) loss."""
        c, model, optimizer = self.config, self.model, self.optimizer
        if self.state is None:
            self.state = model.initial_state(x.size(0), self.device)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate()
        with autocast(self.device, self.precision):
            logits, state = self.train_model(x, self.state)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()
        # Kept in fp32 whatever the autocast dtype, so checkpoints resume under any precision.
        self.state = tuple(s.float() for s in detach_state(state))
        self.step += 1
        if self.average is not None:
            self.average.update(model, self.step)
        return loss.detach()

    def run(self) -> TrainResult:
        c = self.config
        self.model.train()
        run_start = time.monotonic() - self.elapsed
        window_start, window_chars = time.monotonic(), 0
        loss_sum = torch.zeros((), device=self.device)
        loss_count = 0
        train_loss = val_loss = None
        chars_per_s = None
        last_saved = self.step

        while not self.done() and not self.stop_agreed:
            x, y, new_epoch = self.batcher.next()
            if new_epoch:
                self.state = None
            loss = self.train_step(x, y)
            self.elapsed, self.stop_agreed = self.world.agree(time.monotonic() - run_start,
                                                              self.stop_signal is not None)
            loss_sum += loss
            loss_count += 1
            window_chars += x.numel() * self.world.size

            finishing = self.done() or self.stop_agreed
            evaluating = self.step % c.eval_every == 0 or self.done()
            saving = evaluating or finishing or self.step - last_saved >= c.save_every
            if saving or loss_count >= 20:
                train_loss = self.world.mean(loss_sum).item() / loss_count
                self._check_finite(train_loss)
                loss_sum.zero_()
                loss_count = 0
                now = time.monotonic()
                chars_per_s = window_chars / max(now - window_start, 1e-9)
                window_start, window_chars = now, 0
            improved = False
            if evaluating:
                val_losses = self.validate()
                val_loss = val_losses["val_loss"]
                # Weights just short of overflow pass the check above yet give NaN outputs;
                # saving them would replace the last good latest.pt with a dead model.
                self._check_finite(val_loss)
                improved = self.best_val_loss is None or val_loss < self.best_val_loss
                if improved:
                    self.best_val_loss = val_loss
                else:
                    self.lr_scale *= c.plateau_decay
                self.metrics.append({
                    "step": self.step,
                    "epoch": round(self.batcher.epoch_fraction, 4),
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_bpc": val_loss / math.log(2),
                    **{k: v for k, v in val_losses.items() if k != "val_loss"},
                    "lr": self.learning_rate(),
                    "elapsed": round(self.elapsed, 2),
                    "chars_per_s": round(chars_per_s or 0.0, 1),
                })
                window_start = time.monotonic()  # evaluation time is not training throughput
            if saving:
                self.save(best=improved)
                last_saved = self.step
            if self.progress is not None:
                self.progress.update(self.step, {
                    "epoch": self.batcher.epoch_fraction,
                    "loss": train_loss,
                    "val": val_loss,
                    "chars/s": chars_per_s,
                    "lr": f"{self.learning_rate():.2e}",
                    "time": format_duration(self.elapsed),
                }, force_line=evaluating, fraction=self.progress_fraction())

        if self.step != last_saved:  # a signal arrived while evaluating or saving
            self.save(best=False)
        if self.stop_agreed and self.stop_signal is None:  # another rank was signalled
            self.stop_signal = signal.SIGTERM
        return TrainResult(self.step, self.best_val_loss, self.stop_signal, self.checkpoint_dir)


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT and SIGTERM finish the current step, save, and stop; a second one aborts.

    Checkpoint writes are atomic, so even the abort leaves the last checkpoint whole.
    """
    previous = {}

    def handler(signum, frame):
        if trainer.stop_signal is not None:
            raise KeyboardInterrupt
        trainer.request_stop(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train_options(model_config: ModelConfig, config: TrainConfig) -> dict:
    """Plain-data record of every option of a run, stored in its checkpoints."""
    options = {k: v for k, v in model_config.to_dict().items() if k != "vocab_size"}
    options.update(asdict(config))
    return options
