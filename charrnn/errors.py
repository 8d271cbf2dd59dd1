"""Errors that mean "the user asked for something that cannot be done".

The library raises these; the CLI turns them into one-line messages and an exit code,
so nothing below the CLI needs to know about click.
"""

# A run stopped by signal N exits 128 + N, as shells report it: 130 for Ctrl-C, 143 for SIGTERM.
EXIT_SIGNAL_BASE = 128


class CharrnnError(Exception):
    """A problem with the user's input or environment, reported in one line (exit 1)."""

    exit_code = 1


class CheckpointError(CharrnnError):
    """A checkpoint file that is missing, damaged, foreign or unsafe (exit 2)."""

    exit_code = 2


class TrainingDiverged(CharrnnError):
    """The loss became NaN or infinite; the last good checkpoint was kept (exit 3)."""

    exit_code = 3
