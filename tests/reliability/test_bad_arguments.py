"""Bad arguments: every out-of-range number is a usage error (exit 2) before any work, and no
combination of prime and sampling options ends in a traceback."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn import checkpoint

from ..helpers import TINY, invoke, write_corpus

TRAIN_BAD = [
    ("--hidden", "0"), ("--hidden", "-16"), ("--hidden", "abc"), ("--layers", "0"), ("--batch-size", "0"),
    ("--seq-len", "-1"),
    ("--dropout", "1"), ("--dropout", "1.5"), ("--dropout", "-0.1"), ("--dropout", "nan"),
    ("--val-frac", "0"), ("--val-frac", "1"), ("--val-frac", "-0.2"), ("--val-frac", "nan"),
    ("--lr", "0"), ("--lr", "-1e-3"), ("--lr", "nan"), ("--lr", "inf"),
    ("--min-lr-frac", "-0.1"), ("--min-lr-frac", "1.5"), ("--min-lr-frac", "nan"),
    ("--warmup-steps", "-1"), ("--weight-decay", "-0.01"), ("--weight-decay", "nan"),
    ("--grad-clip", "-1"), ("--grad-clip", "nan"),
    ("--max-epochs", "0"), ("--max-epochs", "-2"), ("--max-epochs", "inf"), ("--max-epochs", "nan"),
    ("--max-steps", "0"), ("--max-steps", "-5"),
    ("--max-time", "abc"), ("--max-time", "0"), ("--max-time", "0s"), ("--max-time", "-5m"),
    ("--max-time", "10 minutes"), ("--max-time", ""), ("--max-time", "1.5.2h"), ("--max-time", "inf"),
    ("--eval-every", "0"), ("--save-every", "0"),
    ("--seed", str(2**64)), ("--seed", str(-(2**63) - 1)), ("--seed", "1.5"),
    ("--cell", "transformer"), ("--device", "tpu"),
]

SAMPLE_BAD = [
    ("--temp", "-1"), ("--temp", "-0.001"), ("--temp", "nan"), ("--temp", "inf"),
    ("--top-p", "0"), ("--top-p", "1.5"), ("--top-p", "-0.5"), ("--top-p", "nan"),
    ("--top-k", "0"), ("--top-k", "-3"), ("--length", "-1"), ("--num-samples", "0"), ("--seed", "x"),
    ("--prime", ""), ("--stop", ""),
]


def assert_usage_error(result) -> None:
    assert result.exit_code == 2, result.output
    assert "Error:" in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so the default ./checkpoints would land here
    return write_corpus(tmp_path / "corpus.txt")


def test_control_the_same_command_with_good_values_trains(corpus, tmp_path):
    """The bad-value cases below differ from this only in one option, so their missing
    ./checkpoints dir shows they stopped before any work."""
    assert invoke("train", corpus, *TINY, "--max-steps", 2, "-q").exit_code == 0
    assert (tmp_path / "checkpoints" / checkpoint.LATEST).exists()


@pytest.mark.parametrize(("option", "value"), TRAIN_BAD, ids=[f"{o}={v}" for o, v in TRAIN_BAD])
def test_train_option_out_of_range(corpus, tmp_path, option, value):
    result = invoke("train", corpus, *TINY, "--max-steps", 2, "-q", f"{option}={value}")
    assert_usage_error(result)
    assert option in result.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(("option", "value"), SAMPLE_BAD, ids=[f"{o}={v}" for o, v in SAMPLE_BAD])
def test_sample_option_out_of_range(trained, option, value):
    assert_usage_error(invoke("sample", "--checkpoint", trained, "--length", 10, f"{option}={value}"))


def test_other_commands_options_out_of_range(trained, tmp_path):
    assert_usage_error(invoke("eval", trained.parent / "corpus.txt", "--checkpoint", trained, "--streams=0"))
    assert_usage_error(invoke("eval", trained.parent / "corpus.txt", "--checkpoint", trained, "--device=tpu"))
    out = tmp_path / "out.txt"
    assert_usage_error(invoke("corpus", "python-stdlib", "--max-bytes=0", "-o", out))
    assert_usage_error(invoke("corpus", "no-such-corpus", "-o", out))
    assert not out.exists()


# ---- property test: prime and sampling options -------------------------------------------
SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, 0.0, 1.0, 5e-324, 1e-45]


def _sample_case():
    return st.fixed_dictionaries({
        "prime": st.one_of(st.none(), st.text(max_size=12),
                           st.text(alphabet="the cat sat on a mat\n", min_size=1, max_size=12)),
        "temp": st.one_of(st.none(), st.floats(-2, 5), st.sampled_from(SPECIAL_FLOATS)),
        "top_k": st.one_of(st.none(), st.integers(-3, 60)),
        "top_p": st.one_of(st.none(), st.floats(-0.5, 1.5), st.sampled_from(SPECIAL_FLOATS)),
        "length": st.integers(-2, 30),
        "seed": st.one_of(st.none(), st.integers(-(2**70), 2**70)),
        "num_samples": st.integers(1, 3),
        "stop": st.one_of(st.none(), st.text(max_size=2)),
    })


def _expected_exit(case: dict, vocab: set[str]) -> int:
    def finite_at_least(x, low):
        return x is None or (math.isfinite(x) and x >= low)

    usage_ok = (
        finite_at_least(case["temp"], 0)
        and (case["top_k"] is None or case["top_k"] >= 1)
        and (case["top_p"] is None or (math.isfinite(case["top_p"]) and 0 < case["top_p"] <= 1))
        and case["length"] >= 0
        and case["prime"] != ""
        and case["stop"] != ""
    )
    if not usage_ok:
        return 2
    if case["prime"] is not None and not set(case["prime"]) <= vocab:
        return 1
    return 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_sample_case())
def test_sampling_never_tracebacks(trained, case):
    vocab = set(checkpoint.load(trained).vocab.chars)
    args = ["sample", "--checkpoint", trained, f"--length={case['length']}", f"--num-samples={case['num_samples']}"]
    for key in ("prime", "temp", "top_k", "top_p", "seed", "stop"):
        if case[key] is not None:
            args.append(f"--{key.replace('_', '-')}={case[key]!r}" if isinstance(case[key], float)
                        else f"--{key.replace('_', '-')}={case[key]}")
    result = invoke(*args)  # fails on any escaped exception
    expected = _expected_exit(case, vocab)
    assert result.exit_code == expected, (case, result.output)
    if expected == 0:
        assert all(c in vocab for c in result.stdout.replace(case["prime"] or "", "", 1)), result.stdout
        if case["num_samples"] == 1 and case["stop"] is None:
            assert len(result.stdout) >= len(case["prime"] or "") + case["length"]
    else:
        assert result.stdout == "" and "Error" in result.stderr
