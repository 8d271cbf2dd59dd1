"""`charrnn train --tensorboard`: the run's scalars as TensorBoard event files."""

from __future__ import annotations

from pathlib import Path

from ..errors import CharrnnError


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
