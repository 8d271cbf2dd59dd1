"""The click parameter types and options that several commands share: config fields as options,
durations, escapes, finite floats, --device, --precision, --threads and the checkpoint pair.
Importing it imports no torch, so --help stays fast."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import Field

import click

from . import config
from .config import DEFAULT_CHECKPOINT_DIR, option_fields

CHECKPOINT_DIR_ENV = "CHARRNN_CHECKPOINT_DIR"  # shared by every command, unlike auto env vars


ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}


def parse_duration(value: str | float | None) -> float | None:
    """'90', '90s', '10m', '2h', '1h30m', '1.5h' -> seconds (config.parse_duration, as a click error)."""
    try:
        return config.parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _duration_callback(ctx, param, value):
    return parse_duration(value)


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf: nan compares false with every bound, so
    FloatRange lets it through, and a non-finite rate, fraction or temperature means nothing."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


# Shared by train and eval. The choices are spelled out, as runtime.DEVICES and PRECISIONS
# would import torch for every --help; a test holds them equal.
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
                             show_default=True)


precision_option = click.option(
    "--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
    help="Matrix products in bf16 (autocast) or fp32; auto takes bf16 on GPUs and CPUs that multiply it "
         "natively (AMX, AVX512-BF16).")


def _threads_callback(ctx, param, value):
    if value is not None:
        from .runtime import use_threads

        use_threads(value)


# Shared by train, sample and eval; applied while the options are parsed.
threads_option = click.option(
    "--threads", type=click.IntRange(min=1), callback=_threads_callback, expose_value=False,
    help="CPU threads for the matrix products and kernels. [default: one per core] On cores other programs "
         "keep busy, fewer can be several times faster (README, 'Sharing the CPU').")


def model_checkpoint(command: str) -> Callable[[Callable], Callable]:
    """--checkpoint FILE|DIR and --checkpoint-dir, the pair of every command that reads a trained
    model; the command gets one `checkpoint`: the one given, else the checkpoint dir."""
    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def command_with_checkpoint(*args, checkpoint_path: str | None, checkpoint_dir: str, **kwargs):
            return function(*args, checkpoint=checkpoint_path or checkpoint_dir, **kwargs)

        command_with_checkpoint = click.option(
            "--checkpoint-dir", default=DEFAULT_CHECKPOINT_DIR, envvar=CHECKPOINT_DIR_ENV, show_default=True,
            type=click.Path(), help="Used when --checkpoint is not given.")(command_with_checkpoint)
        return click.option(
            "--checkpoint", "checkpoint_path", type=click.Path(), default=None,
            envvar=f"CHARRNN_{command.upper()}_CHECKPOINT",
            help="A checkpoint file, or a directory (best.pt, else latest.pt). [default: the checkpoint dir]",
        )(command_with_checkpoint)
    return decorate


def click_type(f: Field) -> click.ParamType | None:
    """The click type of a config field, from its bounds or choices."""
    bounds, choices = f.metadata["bounds"], f.metadata["choices"]
    if choices:
        return click.Choice(choices)
    if bounds is None:
        return None
    ranged = click.IntRange if bounds.kind is int else FiniteFloatRange
    return ranged(bounds.low, bounds.high, min_open=bounds.low_open, max_open=bounds.high_open)


def config_options(command: Callable) -> Callable:
    """Adds one option per field of ModelConfig and TrainConfig, named, typed, bounded and
    documented by the field itself (charrnn/config.py)."""
    for f in reversed(option_fields()):
        name = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            command = click.option(name, f.name, is_flag=True, default=f.default, help=f.metadata["help"])(command)
            continue
        callback = (_duration_callback if f.metadata["duration"]
                    else _escapes_callback if f.metadata["escapes"] else None)
        shown = repr(f.default) if isinstance(f.default, str) else f.default is not None
        help_text = f.metadata["help"]
        if f.name in config.FINETUNE_DEFAULTS:
            finetuned = config.FINETUNE_DEFAULTS_SHOWN.get(f.name, config.FINETUNE_DEFAULTS[f.name])
            shown = f"{f.default}; with --init-from: {finetuned}"
        command = click.option(name, f.name, type=click_type(f), default=f.default, show_default=shown,
                               help=help_text or None, callback=callback)(command)
    return command


def _escapes_callback(ctx, param, value: str) -> str:
    """\\n, \\r, \\t and \\\\ read as the characters they stand for, so that '\\n\\n' works
    unquoted by the shell; '' is refused."""
    value = re.sub(r"\\([nrt\\])", lambda m: ESCAPES[m.group(1)], value)
    if not value:
        raise click.BadParameter("must not be empty")
    return value
