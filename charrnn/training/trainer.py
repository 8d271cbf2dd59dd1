"""The training loop: truncated BPTT over carried state, AdamW, a budget-fitted schedule.

Each part with its own job lives elsewhere: the options in config.py, the schedule in
schedule.py, the batches in data.py, the checkpoint's contents in checkpoint.py. The loop
here calls them in order: a step, a report, a validation, a save.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import checkpoint
from ..config import TrainConfig, run_options
from ..errors import CharrnnError, TrainingDiverged
from ..model import CharRNN, State, detach_state, loss_fn
from ..native import recurrence
from ..progress import TrainingProgress, format_duration
from ..runtime import autocast, precision_label, rng_state, seed_everything, set_rng_state
from ..text.vocab import Vocabulary
from . import schedule
from .average import WeightAverage
from .batching import TrainingData
from .distributed import World

REPORT_EVERY = 20  # steps between reads of the training loss (each read waits for the device)


@dataclass
class LoopResult:
    """How Trainer.run's loop ended."""

    step: int
    best_val_loss: float | None
    stopped_by_signal: int | None


FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch's one-kernel AdamW is used: see adamw()


def adamw(parameters: Iterator[torch.nn.Parameter], config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with charrnn's settings, in torch's fused form where it has one: the same update in
    one pass over the weights instead of a dozen tensor operations per weight, 2.2 -> 0.5 ms a
    step for the default model on the CPU (docs/experiments.md, "Fused AdamW"). Older torch
    without a fused CPU AdamW takes the plain one."""
    settings = dict(lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99))
    parameters = list(parameters)
    if device.type in FUSED_ADAMW_DEVICES:
        try:
            return torch.optim.AdamW(parameters, fused=True, **settings)
        except (RuntimeError, TypeError, ValueError):  # torch < 2.4 fuses on CUDA only
            pass
    return torch.optim.AdamW(parameters, **settings)

# Called with (step, {name: value}) at each read of the training loss and each validation;
# names: train_loss, lr, chars_per_s, val_loss.
ScalarSink = Callable[[int, dict[str, float]], None]


class LossWindow:
    """The training loss and throughput since the last read, summed on the device so that
    a step does not wait for it."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.steps = 0
        self.chars = 0
        self.started = time.monotonic()

    def add(self, loss: torch.Tensor, chars: int) -> None:
        self.loss_sum += loss
        self.steps += 1
        self.chars += chars

    def read(self, world: World) -> tuple[float, float]:
        """The mean loss over every rank and the characters a second, then starts afresh."""
        loss = world.mean(self.loss_sum).item() / self.steps
        now = time.monotonic()
        chars_per_s = self.chars / max(now - self.started, 1e-9)
        self.loss_sum.zero_()
        self.steps = self.chars = 0
        self.started = now
        return loss, chars_per_s

    def restart_clock(self) -> None:
        self.started = time.monotonic()  # evaluation time is not training throughput


class Trainer:
    def __init__(
        self,
        model: CharRNN,
        vocab: Vocabulary,
        data: TrainingData,
        config: TrainConfig,
        device: torch.device,
        checkpoint_dir: Path,
        corpus: dict,
        resume: checkpoint.Checkpoint | None = None,
        world: World | None = None,
        precision: torch.dtype | None = None,
        lineage: dict | None = None,
    ):
        self.config = config
        self.device = device
        self.precision = precision  # the autocast dtype, None for full precision
        self.vocab = vocab
        self.world = world = world or World()
        self.model = model.to(device)
        # The C recurrence, if any, chosen once for the run: the model runs its steps through it,
        # and `charrnn train`'s first line names it.
        rows = None if data.fresh_state else config.batch_size // world.size  # record batches vary
        self.recurrence = recurrence.choose(model.config.cell, model.config.hidden, rows, device.type,
                                            precision or torch.float32)
        self.model.recurrence = self.recurrence
        self.train_model = self._distributed(self.model)
        # Validation scores the average beside the trained weights; checkpoints hand `sample`
        # and `eval` whichever scored lower last.
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.use_average = False
        self.checkpoint_dir = Path(checkpoint_dir)
        self.options = run_options(model.config, config)
        self.corpus = corpus
        # A fine-tuned run's base (finetune.lineage), kept in every checkpoint; a resumed run's
        # comes from its checkpoint.
        self.lineage = lineage if resume is None else resume.field("lineage", dict)
        self.progress: TrainingProgress | None = None  # set by run()
        self.data = data
        self.batcher = data.batcher
        self.optimizer = adamw(self.model.parameters(), config, device)
        self.step = 0
        self.lr_scale = 1.0  # cut by plateau_decay at each validation that fails to improve
        self.elapsed = 0.0  # training seconds, summed over resumed runs
        self.best_val_loss: float | None = None
        self.metrics: list[dict] = []
        self.state: State | None = None
        self.stop_signal: int | None = None
        self.stop_agreed = False
        self.train_loss = self.val_loss = self.chars_per_s = None
        self.scalars: ScalarSink | None = None  # set by run()
        # Each rank draws its own dropout masks; rank 0 of any run draws a one-process run's.
        seed_everything(config.seed + world.rank)
        # (step, best validation loss) of the latest.pt written, this run's or a resumed one's.
        self.saved: tuple[int, float | None] | None = None
        if resume is not None:
            self._restore(resume)
            self.saved = (self.step, self.best_val_loss)
        self.lr = self.learning_rate()  # of the next step

    def _distributed(self, model: CharRNN) -> torch.nn.Module:
        """What the step runs: under DDP a wrapper that averages gradients across ranks;
        `self.model` stays the plain module for evaluation and checkpoints."""
        world = self.world
        if not world.distributed:
            return model
        if self.config.batch_size % world.size:
            raise CharrnnError(
                f"--batch-size {self.config.batch_size} must be a multiple of the {world.size} processes, "
                f"each of which takes an equal share of the streams"
            )
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    # ---- the budget and the schedule ------------------------------------------------
    def total_steps(self) -> int | None:
        return schedule.total_steps(self.config, self.batcher.windows_per_epoch)

    def progress_fraction(self) -> float:
        return schedule.budget_fraction(self.config, self.step, self.elapsed, self.total_steps())

    def learning_rate(self) -> float:
        """The rate of the next step, where the run is now."""
        return schedule.learning_rate(self.config, self.step, self.progress_fraction(), self.lr_scale)

    def plateaued(self) -> bool:
        """Whether validation stopped improving for long enough to end the run."""
        return self.lr_scale < self.config.min_lr_frac

    def done(self) -> bool:
        return self.progress_fraction() >= 1.0 or self.plateaued()

    @property
    def output_model(self) -> CharRNN:
        """The weights that `sample` and `eval` get: the average once it validates better."""
        return self.average.model if self.average is not None and self.use_average else self.model

    # ---- checkpoints -------------------------------------------------------------------
    def _payload(self) -> dict:
        # "model" is for use; resuming also needs the other set of weights, stored once.
        other = {}
        if self.average is not None:
            other = ({"trained_model": self.model.state_dict()} if self.use_average
                     else {"averaged_model": self.average.model.state_dict()})
        pos = self.batcher.position
        state = checkpoint.TrainingState(
            step=self.step, elapsed=self.elapsed, lr=self.learning_rate(), lr_scale=self.lr_scale,
            best_val_loss=self.best_val_loss, metrics=self.metrics,
            position={"epoch": pos.epoch, "window": pos.window, "offset": pos.offset},
            hidden=self._carried_state(),
            rng=rng_state(), optimizer=self.optimizer.state_dict(),
        )
        return {**checkpoint.training_payload(self.output_model, self.vocab, other, state, self.options, self.corpus,
                                              precision_label(self.precision)), **self.data.checkpoint_fields(),
                **({"lineage": self.lineage} if self.lineage is not None else {})}

    def _carried_state(self) -> list[torch.Tensor] | None:
        """The state the next step starts from, every rank's rows; None when none carries."""
        if self.state is None or self.data.fresh_state:
            return None
        return [self.world.gather_rows(h) for h in self.state]

    def _restore(self, ckpt: checkpoint.Checkpoint) -> None:
        saved = checkpoint.training_state(ckpt)
        try:
            if self.average is not None:
                # Both were built from "model"; one of them takes the stored other set.
                self.use_average = "trained_model" in ckpt.data
                if self.use_average:
                    self.model.load_state_dict(ckpt.data["trained_model"])
                else:
                    self.average.model.load_state_dict(ckpt.data["averaged_model"])
            self.optimizer.load_state_dict(saved.optimizer)
            set_rng_state(saved.rng)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise checkpoint.resume_error(ckpt, e) from None
        self.step, self.elapsed, self.lr_scale = saved.step, saved.elapsed, saved.lr_scale
        self.best_val_loss, self.metrics = saved.best_val_loss, saved.metrics
        pos = self.batcher.position
        pos.epoch, pos.window, pos.offset = (saved.position[k] for k in ("epoch", "window", "offset"))
        self.state = self._restored_state(saved.hidden)
        if self.world.distributed:
            # The checkpoint holds rank 0's generator; the others derive theirs afresh.
            seed_everything(self.config.seed + self.world.rank + 7919 * self.step)

    def _restored_state(self, hidden: list[torch.Tensor] | None) -> State | None:
        """This rank's rows of the stored state; None (a fresh state) if the batch changed."""
        if hidden is None or tuple(hidden[0].shape[1:2]) != (self.config.batch_size,):
            return None
        rows = self.world.rows(self.config.batch_size)
        return tuple(h[:, rows].to(self.device, torch.float32) for h in hidden)

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
        self.saved = (self.step, self.best_val_loss)
        if best:
            checkpoint.save(self.checkpoint_dir / checkpoint.BEST, payload)

    # ---- validation --------------------------------------------------------------------
    def _validation_loss(self, model: CharRNN) -> float:
        return self.data.validation_loss(model, self.device, self.world, self.precision)

    def validate(self) -> dict[str, float]:
        """Validation losses, "val_loss" being that of the weights checkpoints now hold."""
        trained = self._validation_loss(self.model)
        if self.average is None:
            return {"val_loss": trained}
        averaged = self._validation_loss(self.average.model)
        self.use_average = averaged < trained
        return {"val_loss": min(trained, averaged), "val_loss_trained": trained, "val_loss_averaged": averaged}

    def _validate_and_record(self) -> bool:
        """Validates, applies the plateau rule, records the metrics; whether it improved."""
        losses = self.validate()
        self.val_loss = losses["val_loss"]
        # Weights just short of overflow pass the step's check yet give NaN outputs; saving
        # them would replace the last good latest.pt with a dead model.
        self._check_finite(self.val_loss)
        improved = self.best_val_loss is None or self.val_loss < self.best_val_loss
        if improved:
            self.best_val_loss = self.val_loss
        else:
            self.lr_scale *= self.config.plateau_decay
        self.metrics.append({
            "step": self.step,
            "epoch": round(self.batcher.epoch_fraction, 4),
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_bpc": self.val_loss / math.log(2),
            **{k: v for k, v in losses.items() if k != "val_loss"},
            "lr": self.learning_rate(),
            "elapsed": round(self.elapsed, 2),
            "chars_per_s": round(self.chars_per_s or 0.0, 1),
        })
        return improved

    # ---- the loop ------------------------------------------------------------------------
    def request_stop(self, signum: int) -> None:
        self.stop_signal = signum

    def train_step(self, x: torch.Tensor, y: torch.Tensor, resets: torch.Tensor | None = None) -> torch.Tensor:
        """One optimiser step on a batch at rate `self.lr`, carrying the state; returns the
        (detached) loss. `resets` [batch, seq_len] bool (kept on the CPU) marks the inputs that
        start a document, where the state is zeroed (`CharRNN.forward`)."""
        model, optimizer = self.model, self.optimizer
        if self.state is None:
            self.state = model.initial_state(x.size(0), self.device)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = self.lr
        with autocast(self.device, self.precision):
            if resets is None:
                logits, state = self.train_model(x, self.state)
            else:
                logits, state = self.train_model(x, self.state, resets=resets)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        optimizer.step()
        # Kept in fp32 whatever the autocast dtype, so checkpoints resume under any precision.
        self.state = tuple(s.float() for s in detach_state(state))
        self.step += 1
        if self.average is not None:
            self.average.update(model, self.step)
        return loss.detach()

    def run(self, progress: TrainingProgress | None = None, scalars: ScalarSink | None = None) -> LoopResult:
        """Trains until the budget is spent, the validation loss plateaus or a signal stops it.
        `progress` is shown on stderr; `scalars` (e.g. --tensorboard's writer) gets each read of
        the training loss and each validation."""
        self.progress, self.scalars = progress, scalars
        config = self.config
        self.model.train()
        run_start = time.monotonic() - self.elapsed
        window = LossWindow(self.device)
        last_saved = self.step
        while not self.done() and not self.stop_agreed:
            x, y, new_epoch = self.batcher.next()
            if new_epoch or self.data.fresh_state:
                self.state = None
            self.lr = self.learning_rate()
            scored = int((y >= 0).sum()) * self.world.size  # padding is not read
            window.add(self.train_step(x, y, self.batcher.resets), scored)
            self.elapsed, self.stop_agreed = self.world.agree(time.monotonic() - run_start,
                                                              self.stop_signal is not None)
            finishing = self.done() or self.stop_agreed
            evaluating = self.step % config.eval_every == 0 or self.done()
            saving = evaluating or finishing or self.step - last_saved >= config.save_every
            if saving or window.steps >= REPORT_EVERY:
                self.train_loss, self.chars_per_s = window.read(self.world)
                self._check_finite(self.train_loss)
                self._log_scalars(train_loss=self.train_loss, lr=self.lr, chars_per_s=self.chars_per_s)
            improved = False
            if evaluating:
                improved = self._validate_and_record()
                self._log_scalars(val_loss=self.val_loss)
                window.restart_clock()
            if saving:
                self.save(best=improved)
                last_saved = self.step
            self._report(force_line=evaluating)
        if self.step != last_saved:  # a signal arrived while evaluating or saving
            self.save(best=False)
        if self.stop_agreed and self.stop_signal is None:  # another rank was signalled
            self.stop_signal = signal.SIGTERM
        return LoopResult(self.step, self.best_val_loss, self.stop_signal)

    def _log_scalars(self, **values: float | None) -> None:
        if self.scalars is not None:
            self.scalars(self.step, {name: v for name, v in values.items() if v is not None})

    def _report(self, force_line: bool) -> None:
        if self.progress is None:
            return
        self.progress.update(self.step, {
            "epoch": self.batcher.epoch_fraction,
            "loss": self.train_loss,
            "val": self.val_loss,
            "chars/s": self.chars_per_s,
            "lr": f"{self.learning_rate():.2e}",
            "time": format_duration(self.elapsed),
        }, force_line=force_line, fraction=self.progress_fraction())

