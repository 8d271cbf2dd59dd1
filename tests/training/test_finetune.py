"""Fine-tuning (`train --init-from`, charrnn/training/finetune.py): the vocabulary grown with
the base's rows kept, renumbered and added; the base's predictions unchanged at step 0; a stream
base becoming a record model; lineage in `info`; the errors; resume; the API; and a short real
fine-tune that beats the same steps from nothing."""

import json
import math

import pytest
import torch

import charrnn
from charrnn import checkpoint
from charrnn.config import FINETUNE_DEFAULTS
from charrnn.text.vocab import Vocabulary
from charrnn.training import finetune

from ..helpers import invoke, make_corpus

BASE_RUN = dict(layers=2, hidden=32, batch_size=8, seq_len=32, eval_every=50, device="cpu", seed=1)
# The new corpus: the base's grammar, and characters the base never saw (capitals, '!', '~').
NEW_TEXT = make_corpus(6000, seed=7).replace("the ", "The ").replace(".\n", "!\n") + "~\n"


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A stream model trained on the tiny grammar (lowercase, '.', newline)."""
    folder = tmp_path_factory.mktemp("base")
    corpus = folder / "base.txt"
    corpus.write_text(make_corpus(20_000), encoding="utf-8")
    result = charrnn.train(corpus, folder / "run", max_steps=200, **BASE_RUN)
    assert result.exit_code == 0
    return folder / "run"


@pytest.fixture()
def new_corpus(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text(NEW_TEXT, encoding="utf-8")
    return path


def test_the_vocabulary_grows_keeping_renumbering_and_adding_rows(base_dir):
    base = checkpoint.load(base_dir)
    vocab = finetune.grown_vocabulary(base.vocab, list(set(NEW_TEXT)), records=False)
    assert set(vocab.chars) == set(base.vocab.chars) | set(NEW_TEXT) and vocab.chars == sorted(vocab.chars)
    config = finetune.run_configs(_job(base_dir), base, len(vocab))[0]
    model = finetune.grown_model(base, vocab, config)
    old, new = base.model.state_dict(), model.state_dict()
    for char in base.vocab.chars:  # kept, at the new id (the capitals moved every lowercase id)
        i, j = base.vocab.index[char], vocab.index[char]
        for name in ("embed.weight", "head.weight", "head.bias"):
            assert torch.equal(new[name][j], old[name][i]), (char, name)
    assert vocab.index["a"] != base.vocab.index["a"]  # renumbered
    for char in set(vocab.chars) - set(base.vocab.chars):  # added: an average input, an improbable output
        j = vocab.index[char]
        assert torch.allclose(new["embed.weight"][j], old["embed.weight"].mean(0))
        assert not new["head.weight"][j].any()
        assert new["head.bias"][j] == old["head.bias"].min() - finetune.NEW_OUTPUT_MARGIN
    for name, value in old.items():
        if name.startswith("core."):
            assert torch.equal(new[name], value), name


def test_the_grown_model_predicts_the_known_characters_as_the_base_did(base_dir):
    """At step 0, over a text of known characters, the grown model's distribution on the base's
    characters is the base's, scaled by what the new characters take: a small share."""
    base = checkpoint.load(base_dir)
    vocab = finetune.grown_vocabulary(base.vocab, list(set(NEW_TEXT)), records=False)
    model = finetune.grown_model(base, vocab, finetune.run_configs(_job(base_dir), base, len(vocab))[0]).eval()
    text = make_corpus(300, seed=3)
    with torch.no_grad():
        want = base.model.eval()(base.vocab.encode(text)[None])[0].softmax(-1)[0]
        got = model(vocab.encode(text)[None])[0].softmax(-1)[0]
    known = vocab.encode(base.vocab.chars)
    share = 1 - got[:, known].sum(-1)  # the new characters' probability at each position
    assert share.max() < 1e-3
    assert torch.allclose(got[:, known] / (1 - share)[:, None], want, atol=1e-5)


def test_a_fine_tune_writes_a_new_run_with_its_lineage_and_leaves_the_base_alone(base_dir, new_corpus, tmp_path):
    before = {p.name: p.read_bytes() for p in base_dir.iterdir() if p.is_file()}
    out = tmp_path / "ft"
    result = invoke("train", new_corpus, "--init-from", base_dir, "--checkpoint-dir", out, "--max-steps", "20",
                    "--eval-every", "10", "--batch-size", "8", "--seq-len", "32")
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert "lstm 2x32" in first and f"from {base_dir / 'best.pt'}" in first
    ckpt = checkpoint.load(out / "latest.pt")
    assert ckpt.field("step", int) == 20 and set(NEW_TEXT) <= set(ckpt.vocab.chars)
    assert ckpt.field("train_args", dict)["lr"] == FINETUNE_DEFAULTS["lr"]  # the fine-tuning defaults
    assert ckpt.model_config.dropout == FINETUNE_DEFAULTS["dropout"]
    base = checkpoint.load(base_dir)
    lineage = ckpt.field("lineage", dict)
    assert lineage["base"] == "best.pt" and lineage["steps"] == base.field("step", int)
    assert lineage["corpus_sha256"] == base.field("corpus", dict)["sha256"]
    info = json.loads(invoke("info", out / "latest.pt", "--json").stdout)
    assert info["lineage"] == lineage
    assert "fine-tuned from" in invoke("info", out / "latest.pt").stdout
    assert {p.name: p.read_bytes() for p in base_dir.iterdir() if p.is_file()} == before
    resumed = invoke("train", new_corpus, "--resume", "--checkpoint-dir", out, "--max-steps", "30")
    assert resumed.exit_code == 0, resumed.output
    again = checkpoint.load(out / "latest.pt")
    assert again.field("step", int) == 30 and again.field("lineage", dict) == lineage
    assert again.field("train_args", dict)["lr"] == FINETUNE_DEFAULTS["lr"]
    assert again.model_config.dropout == FINETUNE_DEFAULTS["dropout"]


def test_a_stream_base_becomes_a_record_model(base_dir, tmp_path):
    """The marker is one more id, starting as the base's newline (a record ends where a line does)."""
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["tom", "ann", "bo", "Eve"] * 30) + "\n")
    result = charrnn.train(names, tmp_path / "ft", init_from=base_dir, records=True, max_steps=20, eval_every=10,
                           device="cpu")
    assert result.exit_code == 0 and result.steps == 20
    model = charrnn.load(result.checkpoint_dir)
    assert model.record_separator == "\n" and "E" in model.vocab and "y" in model.vocab  # grown, base's kept
    base = checkpoint.load(base_dir)
    vocab = Vocabulary(set(base.vocab.chars) | set("tomanboEve"), marker=True)
    grown = finetune.grown_model(base, vocab, finetune.run_configs(_job(base_dir), base, len(vocab))[0])
    newline = base.vocab.index["\n"]
    assert torch.equal(grown.embed.weight[vocab.marker_id], base.model.embed.weight[newline])
    assert torch.equal(grown.head.bias[vocab.marker_id], base.model.head.bias[newline])
    assert all(isinstance(r, str) and r for r in model.generate(n=3, seed=0))


@pytest.mark.parametrize("args, message", [
    (["--hidden", "64"], "--hidden 64 contradicts the base checkpoint's 32"),
    (["--cell", "gru"], "--cell gru contradicts the base checkpoint's lstm"),
    (["--resume"], "--init-from starts a new run and --resume continues one"),
])
def test_options_that_contradict_the_base_are_one_line_errors(base_dir, new_corpus, tmp_path, args, message):
    result = invoke("train", new_corpus, "--init-from", base_dir, "--checkpoint-dir", tmp_path / "ft", *args)
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "ft" / "latest.pt").exists()


def test_a_bad_base_gets_samples_errors_and_its_folder_is_never_written(base_dir, new_corpus, tmp_path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    for base in (tmp_path / "missing", damaged, tmp_path):
        as_sample = invoke("sample", "--checkpoint", base)
        as_base = invoke("train", new_corpus, "--init-from", base, "--checkpoint-dir", tmp_path / "ft")
        assert as_base.exit_code == as_sample.exit_code != 0 and as_base.stderr == as_sample.stderr
    into_base = invoke("train", new_corpus, "--init-from", base_dir, "--checkpoint-dir", base_dir, "--overwrite")
    assert into_base.exit_code == 1 and "is the base checkpoint's folder" in into_base.stderr


def test_a_record_base_fine_tunes_only_as_a_record_model(tmp_path, new_corpus):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["tom", "ann"] * 40) + "\n")
    charrnn.train(names, tmp_path / "names", records=True, max_steps=5, hidden=16, layers=1, device="cpu")
    result = invoke("train", new_corpus, "--init-from", tmp_path / "names", "--checkpoint-dir", tmp_path / "ft")
    assert result.exit_code == 1 and "is a record model: fine-tune it as one (add --records)" in result.stderr


def test_help_shows_the_fine_tuning_defaults():
    shown = " ".join(invoke("train", "--help").output.split())
    for value in FINETUNE_DEFAULTS.values():
        assert f"with --init-from: {value}" in shown


def test_fine_tuning_beats_the_same_steps_from_nothing(base_dir, new_corpus, tmp_path):
    """On a corpus of the grammar the base learned, 40 steps from the base end far below 40 steps
    from nothing (and below the untrained model's log-vocab)."""
    common = dict(max_steps=40, eval_every=20, batch_size=8, seq_len=32, device="cpu", seed=2)
    tuned = charrnn.train(new_corpus, tmp_path / "tuned", init_from=base_dir, **common)
    scratch = charrnn.train(new_corpus, tmp_path / "scratch", layers=2, hidden=32, **common)
    assert tuned.best_val_loss < scratch.best_val_loss - 0.3, (tuned.best_val_loss, scratch.best_val_loss)
    assert tuned.best_val_loss < 0.5 * math.log(len(charrnn.load(tmp_path / "tuned").vocab))


def _job(base_dir):
    from charrnn.config import ModelConfig, TrainConfig, TrainJob

    return TrainJob(corpus=("x",), checkpoint_dir=base_dir.parent / "elsewhere", model=ModelConfig(),
                    train=TrainConfig(), init_from=str(base_dir))


def test_validation_is_spaced_by_the_size_of_the_validation_split(base_dir, tmp_path):
    """50 steps up to a 10,000-character split, then one step per 200 of its characters, in
    multiples of 50; a given --eval-every stands."""
    job = _job(base_dir)
    config = finetune.run_configs(job, checkpoint.load(base_dir), 40)[1]
    spacing = {chars: finetune.with_eval_interval(config, job, chars).eval_every
               for chars in (0, 1_000, 10_000, 10_001, 25_000, 250_000)}
    assert spacing == {0: 50, 1_000: 50, 10_000: 50, 10_001: 100, 25_000: 150, 250_000: 1250}
    big = tmp_path / "big.txt"
    big.write_text(make_corpus(250_000, seed=5), encoding="utf-8")  # a 25,000-character validation split
    common = ("--max-steps", "1", "--batch-size", "8", "--seq-len", "32")
    assert invoke("train", big, "--init-from", base_dir, "--checkpoint-dir", tmp_path / "a", *common).exit_code == 0
    assert checkpoint.load(tmp_path / "a" / "latest.pt").field("train_args", dict)["eval_every"] == 150
    given = invoke("train", big, "--init-from", base_dir, "--checkpoint-dir", tmp_path / "b", "--eval-every", "7",
                   *common)
    assert given.exit_code == 0
    assert checkpoint.load(tmp_path / "b" / "latest.pt").field("train_args", dict)["eval_every"] == 7
