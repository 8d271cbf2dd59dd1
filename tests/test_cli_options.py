"""charrnn/cli_options.py: durations as click reads them, and the train options built from the
config fields with their defaults, help and bounds."""

import pytest

from charrnn.cli import cli
from charrnn.cli_options import parse_duration

from .helpers import invoke


def test_durations():
    assert parse_duration("90") == 90 and parse_duration("10m") == 600
    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400
    assert parse_duration("1.5h") == 5400 and parse_duration("1h30m15s") == 5415 and parse_duration("1H15S") == 3615
    result = invoke("train", "x.txt", "--max-time", "ten minutes")
    assert result.exit_code == 2 and "duration" in result.output


@pytest.mark.parametrize("value, expected", [
    ("1h1h", "gives h more than once"), ("1h30m1h", "gives h more than once"), ("10m10m", "gives m more than once"),
    ("30m1h", "out of order"), ("1s1m", "out of order"), ("5s1h", "out of order"),
])
def test_a_duration_gives_each_unit_once_largest_first(value, expected):
    # Before, '1h1h' was read as 2h and '30m1h' as 1h30m.
    result = invoke("train", "x.txt", "--max-time", value)
    assert result.exit_code == 2 and expected in result.stderr and "1h30m" in result.stderr, result.output
    assert "Traceback" not in result.output


def test_train_options_come_from_the_configs():
    """charrnn/config.py is the one source of the train options: every field becomes an
    option with the field's default and help, and the run records what was parsed."""
    from charrnn.config import option_fields

    params = {p.name: p for p in cli.commands["train"].params}
    config_fields = option_fields()
    assert {"hidden", "dropout", "batch_size", "seq_len", "lr", "ema_decay", "eval_every", "seed"} <= \
        {f.name for f in config_fields}
    for field in config_fields:
        assert params[field.name].default == field.default, field.name
        assert (params[field.name].help or "") == field.metadata["help"], field.name
    assert invoke("train", "x.txt", "--batch-size", "0").exit_code == 2  # bounds come along
    assert invoke("train", "x.txt", "--dropout", "1").exit_code == 2
    assert invoke("train", "x.txt", "--cell", "transformer").exit_code == 2
