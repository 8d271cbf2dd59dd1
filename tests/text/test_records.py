"""Record models: corpora of records, their batches, and what train, sample and eval do with them."""

import json
import shutil

import pytest
import torch

from charrnn import checkpoint, evaluate
from charrnn.config import ModelConfig
from charrnn.errors import CharrnnError
from charrnn.model import CharRNN, loss_fn
from charrnn.text import records
from charrnn.text.vocab import Vocabulary
from charrnn.training import record_batches

from ..helpers import invoke

NAMES = ["anna", "bob", "carl"]



def encoded(text: str) -> tuple[torch.Tensor, Vocabulary]:
    vocab = Vocabulary.from_text(text)
    return vocab.encode(text), vocab


def split(text: str, separator: str = "\n") -> records.Records:
    tokens, vocab = encoded(text)
    return records.split_records(tokens, vocab, separator, "corpus.txt")


def test_records_are_the_non_empty_texts_between_separators():
    assert split("anna\n\nbob\ncarl\n").texts() == ["anna", "bob", "carl"]
    assert split("anna\r\nbob\r\n").texts() == ["anna", "bob"]  # CRLF lines
    poems = split("a rose\nis red\n\n\nviolets\n\nblue", "\n\n")
    assert poems.texts() == ["a rose\nis red", "\nviolets", "blue"]  # str.split's rule
    assert poems.texts() == [t for t in "a rose\nis red\n\n\nviolets\n\nblue".split("\n\n") if t]
    # The vocabulary holds the records' characters and the marker, not the separator.
    names = split("anna\nbob\n")
    assert names.vocab.chars == ["a", "b", "n", "o"] and names.vocab.marker_id == 4 and len(names.vocab) == 5


def test_a_record_too_long_is_an_error_naming_its_line():
    text = "anna\nbob\n" + "x" * (records.MAX_RECORD_CHARS + 1) + "\ncarl\n"
    with pytest.raises(CharrnnError, match="line 3 has 10,001 characters"):
        split(text)
    with pytest.raises(CharrnnError, match="no records"):
        split("\n\n\n")


def test_validation_is_a_seeded_random_sample_not_the_tail():
    train, val = records.seeded_split(1000, 0.1, seed=5)
    assert len(val) == 100 and len(train) == 900
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1000))
    assert val.max() - val.min() > 500  # spread over the list, not its last tenth
    again, other = records.seeded_split(1000, 0.1, seed=5)[1], records.seeded_split(1000, 0.1, seed=6)[1]
    assert torch.equal(val, again) and not torch.equal(val, other)


def test_batches_hold_whole_records_between_markers_once_an_epoch():
    corpus = split("\n".join(f"name{'x' * (i % 9)}{i}" for i in range(300)))
    batcher = record_batches.RecordBatcher(corpus, tokens_per_batch=128, seed=1)
    marker = corpus.vocab.marker_id
    seen = []
    for _ in range(batcher.windows_per_epoch):
        x, y, _ = batcher.next()
        assert x.numel() <= 2 * 128 or x.size(0) == 1
        for row_x, row_y in zip(x, y):
            length = int((row_y != records.PAD_TARGET).sum()) - 1
            assert row_x[0] == marker and row_y[length] == marker  # START in, END out
            assert torch.equal(row_x[1:length + 1], row_y[:length])
            assert (row_y[length + 1:] == records.PAD_TARGET).all()
            seen.append(corpus.vocab.decode(row_y[:length]))
    assert sorted(seen) == sorted(corpus.texts())
    assert batcher.next()[2]  # the next epoch starts
    assert sorted(len(b) for b in records.plan_batches([5] * 100, 64, list(range(100))))[-1] == 10


def test_no_gradient_crosses_a_record_and_each_starts_from_a_zero_state():
    corpus = split("anna\nbob\ncarl\nda\n")
    model = CharRNN(ModelConfig(vocab_size=len(corpus.vocab), layers=2, hidden=16, dropout=0.0))
    x, y = records.make_batch(corpus, [0, 1, 2, 3])
    logits, _ = model(x)
    for row in range(4):  # the same logits as the record alone, from a zero state
        alone, _ = model(x[row:row + 1, : int((y[row] != records.PAD_TARGET).sum())])
        assert torch.allclose(logits[row, : alone.size(1)], alone[0], atol=1e-6)
    embedded = model.embed(x).detach().requires_grad_(True)
    out, _ = model.core(embedded)
    loss = loss_fn(model.head(out)[1:2], y[1:2])  # record 1's loss alone
    loss.backward()
    grad = embedded.grad.abs().sum(-1)
    assert grad[1].sum() > 0 and grad[[0, 2, 3]].sum() == 0


def test_loss_is_per_token_including_end():
    corpus = split("ab\nb\n")
    model = CharRNN(ModelConfig(vocab_size=len(corpus.vocab), layers=1, hidden=8))
    with torch.no_grad():
        for p in model.head.parameters():
            p.zero_()  # a uniform distribution: every token costs ln(vocab)
    result = evaluate.evaluate_records(model, corpus, torch.device("cpu"))
    assert result.chars == 3 + 2  # "ab" + END, "b" + END
    assert result.loss == pytest.approx(torch.log(torch.tensor(3.0)).item())


@pytest.fixture(scope="module")
def names_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("names")
    corpus = folder / "names.txt"
    corpus.write_text("\n".join(NAMES * 40) + "\n")
    ckpt = folder / "ck"
    result = invoke("train", corpus, "--records", "--checkpoint-dir", ckpt, "--max-steps", 150, "--layers", 1,
                    "--hidden", 32, "--eval-every", 50, "--seed", 3, "-q")
    assert result.exit_code == 0, result.output
    return ckpt


def test_a_record_model_learns_where_records_end(names_model):
    info = json.loads(invoke("info", names_model, "--json").stdout)
    assert info["records"] == {"separator": "\n", "count": 120} and info["vocab_size"] == 8
    greedy = invoke("sample", "--checkpoint", names_model, "-n", 3, "--temp", 0).stdout.splitlines()
    assert len(greedy) == 3 and set(greedy) <= set(NAMES)
    for name in NAMES:  # the first letter leads to the whole name, which ends there
        assert invoke("sample", "--checkpoint", names_model, "--prime", name[0], "--temp", 0).stdout == name + "\n"
    drawn = invoke("sample", "--checkpoint", names_model, "-n", 30, "--seed", 1).stdout.splitlines()
    assert len(drawn) == 30 and sum(d in NAMES for d in drawn) >= 20


def test_novel_never_prints_a_training_record_and_unique_no_repeat(names_model):
    novel = invoke("sample", "--checkpoint", names_model, "-n", 5, "--novel", "--seed", 2, "--length", 8)
    assert novel.exit_code == 0
    lines = novel.stdout.splitlines()
    assert lines and not set(lines) & set(NAMES) and "dropped" in novel.stderr
    unique = invoke("sample", "--checkpoint", names_model, "-n", 3, "--unique", "--seed", 2)
    assert sorted(unique.stdout.splitlines()) == sorted(NAMES)
    stuck = invoke("sample", "--checkpoint", names_model, "-n", 2, "--unique", "--temp", 0)
    assert stuck.exit_code == 0 and len(stuck.stdout.splitlines()) == 1 and "only 1 of 2" in stuck.stderr


def test_prime_is_a_prefix_and_beams_are_the_likeliest_records(names_model):
    primed = invoke("sample", "--checkpoint", names_model, "--prime", "ca", "-n", 5, "--seed", 4).stdout
    assert all(line.startswith("ca") for line in primed.splitlines())
    beams = json.loads(invoke("sample", "--checkpoint", names_model, "--beam", 3, "--json").stdout)
    assert sorted(b["text"] for b in beams) == sorted(NAMES)
    assert [b["log_prob"] for b in beams] == sorted((b["log_prob"] for b in beams), reverse=True)
    assert json.loads(invoke("sample", "--checkpoint", names_model, "--beam", 1, "--prime", "b",
                             "--json").stdout)[0]["text"] == "bob"


def test_eval_scores_a_files_records(names_model, tmp_path):
    held_out = tmp_path / "held.txt"
    held_out.write_text("anna\nbob\n")
    result = json.loads(invoke("eval", held_out, "--checkpoint", names_model, "--json", "--precision", "fp32").stdout)
    ckpt = checkpoint.load(names_model)
    ids = torch.tensor([ckpt.vocab.index[c] for c in "annabob"])
    expected = evaluate.evaluate_records(ckpt.model, records.Records(ids, torch.tensor([0, 4, 7]), ckpt.vocab),
                                        torch.device("cpu"))
    assert result["records"] == 2 and result["chars"] == 9
    assert result["loss"] == pytest.approx(expected.loss, abs=1e-6)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("zed\n")
    refused = invoke("eval", unknown, "--checkpoint", names_model)
    assert refused.exit_code == 1 and "outside the model's vocabulary" in refused.stderr


def test_stream_options_and_models_stay_apart(trained_dir, corpus_file, tmp_path):
    assert invoke("sample", "--checkpoint", trained_dir, "--novel").exit_code == 1
    assert json.loads(invoke("info", trained_dir, "--json").stdout)["records"] is None
    ckpt = tmp_path / "ck"
    shutil.copytree(trained_dir, ckpt)
    resumed = invoke("train", corpus_file, "--checkpoint-dir", ckpt, "--resume", "--records")
    assert resumed.exit_code == 1 and "--records True differs from the checkpoint's False" in resumed.stderr


def test_record_run_resumes(names_model, tmp_path):
    ckpt = tmp_path / "ck"
    shutil.copytree(names_model, ckpt)
    corpus = tmp_path / "names.txt"
    corpus.write_text("\n".join(NAMES * 40) + "\n")
    result = invoke("train", corpus, "--checkpoint-dir", ckpt, "--resume", "--max-steps", 160, "-q")
    assert result.exit_code == 0, result.output
    assert checkpoint.load(ckpt / "latest.pt").data["step"] == 160

