"""Several corpus files: their order, bad files, the joined cache entry, the state reset at each
document's start (batcher, model on every path, training), the CLI, and record mode."""

import contextlib
import json
import os

import pytest
import torch
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.config import TrainConfig
from charrnn.errors import CharrnnError
from charrnn.model import CharRNN, ModelConfig
from charrnn.native import recurrence as lstm_train
from charrnn.text import cache, reading, token_files
from charrnn.text.records import records_of_corpus
from charrnn.text.vocab import Vocabulary
from charrnn.training.streams import StreamBatcher, StreamData, split_for_training
from charrnn.training.trainer import Trainer

from ..helpers import TINY, make_corpus


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def decode(corpus):
    return "".join(corpus.vocab.chars[i] for i in token_files.as_ids(corpus.tokens).tolist())


# ---- which files, in which order ---------------------------------------------------------
def test_directory_order_and_hidden_files(tmp_path):
    d = tmp_path / "d"
    for name in ["b.txt", "a.txt", "sub/c.txt", "a-z.txt", "sub/deeper/e.txt", ".hidden.txt", ".git/x.txt",
                 "sub/.h.txt"]:
        write(d / name, name)
    got = reading.corpus_files([str(d)])
    assert got == [str(d / n) for n in ["a-z.txt", "a.txt", "b.txt", "sub/c.txt", "sub/deeper/e.txt"]]
    # Given paths are sorted too, duplicates count once, a hidden file given by name is read.
    given = [str(d / "b.txt"), str(d / "sub"), str(d / "a.txt"), str(d / ".." / "d" / "a.txt"), str(d / ".hidden.txt")]
    assert reading.corpus_files(given) == [str(d / n) for n in [".hidden.txt", "a.txt", "b.txt", "sub/c.txt",
                                                                "sub/deeper/e.txt"]]
    assert reading.corpus_files(["-"]) == ["-"]
    with pytest.raises(CharrnnError, match="standard input"):
        reading.corpus_files(["-", str(d / "a.txt")])
    write(tmp_path / "only-hidden" / ".x", "x")
    with pytest.raises(CharrnnError, match="no files"):
        reading.corpus_files([str(tmp_path / "only-hidden")])


def test_a_bad_file_is_an_error_naming_it(tmp_path):
    d = tmp_path / "d"
    write(d / "a.txt", "fine text\n")
    (d / "b.txt").write_bytes(b"ok \xff\xfe not utf-8")
    with pytest.raises(CharrnnError, match=r"b\.txt: byte 0xff at offset 3 is not valid utf-8"):
        cache.prepare_corpus([str(d)], "utf-8", tmp_path / "cache")
    (d / "b.txt").unlink()
    os.symlink(d / "missing.txt", d / "link.txt")
    with pytest.raises(CharrnnError, match=r"link\.txt: a broken symlink"):
        cache.prepare_corpus([str(d)], "utf-8", tmp_path / "cache")
    with pytest.raises(CharrnnError, match=r"nothing\.txt: no such file"):
        reading.corpus_files([str(d / "a.txt"), str(tmp_path / "nothing.txt")])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    d = tmp_path / "d"
    write(d / "a.txt", "fine text\n")
    locked = write(d / "locked.txt", "secret\n")
    locked.chmod(0)
    try:
        with pytest.raises(CharrnnError, match=r"locked\.txt: Permission denied"):
            cache.prepare_corpus([str(d)], "utf-8", tmp_path / "cache")
    finally:
        locked.chmod(0o644)


# ---- the joined cache entry ----------------------------------------------------------------
def test_several_files_join_with_document_starts_keyed_on_contents(tmp_path):
    d, cache_dir = tmp_path / "d", tmp_path / "cache"
    write(d / "a.txt", "hello\n")
    write(d / "b.txt", "")  # empty: no document
    write(d / "c" / "x.txt", "wörld\n")
    first = cache.prepare_corpus([str(d)], "utf-8", cache_dir)
    assert decode(first) == "hello\nwörld\n"
    assert first.doc_starts.tolist() == [0, 6]
    assert first.documents == (str(d / "a.txt"), str(d / "c" / "x.txt"))
    assert not first.reused
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["doc_starts"] == [0, 6] and "a.txt" not in json.dumps(meta)

    (d / "a.txt").rename(d / "a2.txt")  # same contents, same order, another name
    renamed = cache.prepare_corpus([str(d)], "utf-8", cache_dir)
    assert renamed.reused and renamed.path == first.path and renamed.sha256 == first.sha256
    assert renamed.documents[0] == str(d / "a2.txt")

    write(d / "a2.txt", "hellO\n")  # one byte changed
    changed = cache.prepare_corpus([str(d)], "utf-8", cache_dir)
    assert not changed.reused and changed.sha256 != first.sha256
    assert decode(changed) == "hellO\nwörld\n"
    assert cache.prepare_corpus([str(d)], "utf-8", cache_dir).reused


def test_one_file_is_todays_entry(tmp_path):
    path = write(tmp_path / "a.txt", "just one file\n")
    write(tmp_path / "d" / "a.txt", "just one file\n")
    write(tmp_path / "d" / "empty.txt", "")
    single = cache.prepare(str(path), "utf-8", tmp_path / "cache")
    for paths in ([str(path)], [str(tmp_path / "d")]):
        corpus = cache.prepare_corpus(paths, "utf-8", tmp_path / "cache")
        assert corpus.path == single.path and corpus.sha256 == single.sha256 and corpus.doc_starts is None


def test_renumbered_for_a_resumed_vocabulary_keeps_the_starts(tmp_path):
    write(tmp_path / "d" / "a.txt", "ab")
    write(tmp_path / "d" / "b.txt", "ba")
    corpus = cache.prepare_corpus([str(tmp_path / "d")], "utf-8", tmp_path / "cache")
    wider = cache.renumber(corpus, Vocabulary("abc"))
    assert wider.doc_starts.tolist() == [0, 2] and wider.documents == corpus.documents
    assert token_files.as_ids(wider.tokens).tolist() == [0, 1, 1, 0]


# ---- the batcher's resets ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [None, 5])
def test_batcher_marks_every_document_start(seed):
    length, starts = 1000, [0, 37, 38, 400, 999]
    is_start = torch.zeros(length, dtype=torch.bool)
    is_start[starts] = True
    text = torch.arange(length) % 7
    b = StreamBatcher(text, batch_size=4, seq_len=10, seed=seed, doc_starts=torch.tensor(starts + [1200]))
    plain = StreamBatcher(text, batch_size=4, seq_len=10, seed=seed)
    marked = 0
    for _ in range(3 * b.windows_per_epoch):  # through epoch rotations and the text's wrap
        x, _, _ = b.next()
        assert torch.equal(x, plain.next()[0])  # the batches themselves are today's
        pos = b.position
        first = b.stream_starts + pos.offset + (pos.window - 1) * b.seq_len
        expected = is_start[(first[:, None] + torch.arange(b.seq_len)) % length]
        if b.resets is None:
            assert not expected.any()
        else:
            assert torch.equal(b.resets, expected)
            marked += int(b.resets.sum())
    assert marked > 0 and plain.resets is None
    one = StreamBatcher(text, batch_size=4, seq_len=10, seed=seed, doc_starts=torch.tensor([0]))
    for _ in range(2 * one.windows_per_epoch):  # one document: no resets, the text wraps as today
        one.next()
        assert one.resets is None


# ---- the model: a reset is a fresh start ---------------------------------------------------
RESET_COLUMNS = {0: [9], 1: [0, 30], 2: [], 3: [17, 18]}  # row -> columns where a document starts


def reset_mask(batch, steps):
    resets = torch.zeros(batch, steps, dtype=torch.bool)
    for row in range(batch):
        for col in RESET_COLUMNS.get(row % 4, []):
            resets[row, col] = True
    return resets


def assert_resets_are_fresh_starts(model, batch, steps, atol, context):
    ids = torch.randint(0, model.config.vocab_size, (batch, steps), generator=torch.Generator().manual_seed(1))
    state = tuple(torch.randn_like(s) for s in model.initial_state(batch))
    resets = reset_mask(batch, steps)
    with context():
        logits, new_state = model(ids, state, resets=resets)
        plain, plain_state = model(ids, state)
        for row in range(batch):
            columns = RESET_COLUMNS.get(row % 4, [])
            if not columns:  # no reset: what runs today
                torch.testing.assert_close(logits[row].float(), plain[row].float(), atol=atol, rtol=0)
                continue
            last = columns[-1]
            fresh, fresh_state = model(ids[:, last:])  # every row read from a zero state at `last`
            torch.testing.assert_close(logits[row, last:].float(), fresh[row].float(), atol=atol, rtol=0)
            for s, f in zip(new_state, fresh_state):
                torch.testing.assert_close(s[:, row].float(), f[:, row].float(), atol=atol, rtol=0)
            if len(columns) > 1 or columns[0] > 0:
                first = columns[0]
                torch.testing.assert_close(logits[row, :first].float(), plain[row, :first].float(), atol=atol,
                                           rtol=0)
    return ids, state, resets


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_logits_after_a_reset_are_those_from_a_zero_state(cell):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16, dropout=0.0))
    with torch.no_grad():
        assert_resets_are_fresh_starts(model.eval(), 4, 40, 1e-5, torch.no_grad)


def kernel_context(path: str) -> contextlib.AbstractContextManager:
    """The precision a path trains in: bf16 autocast for the bf16 kernels, none otherwise."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if path == "bf16" else contextlib.nullcontext()


KERNEL_PATHS = {"bf16": torch.bfloat16, "fp32": torch.float32}  # the C recurrences, by precision


def skip_without_kernel(path: str) -> None:
    """A skip unless this CPU can train through the C recurrence of `path`'s precision, checked
    when the test runs so that the library builds into the session's cache folder."""
    if path in KERNEL_PATHS and lstm_train.kernel(KERNEL_PATHS[path]) is None:
        pytest.skip(f"no {path} recurrence library here (lstm_amx.c or lstm_vector.c: needs the CPU and a compiler)")


@pytest.mark.parametrize("path", list(KERNEL_PATHS))
def test_the_kernel_path_resets_like_a_zero_state(path):
    skip_without_kernel(path)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell="lstm", layers=2, hidden=32, dropout=0.0)).train()
    model.recurrence = lstm_train.kernel(KERNEL_PATHS[path])  # as the Trainer chooses it
    ids = torch.zeros(16, 40, dtype=torch.long)
    with kernel_context(path):
        assert model.uses_recurrence_kernel(ids)
    # The two runs split the window differently, which could round bf16 products differently;
    # on a Sapphire Rapids VM they agree exactly (a reset that is ignored is off by ~5e-2).
    assert_resets_are_fresh_starts(model, 16, 40, 1e-2 if path == "bf16" else 1e-5,
                                   lambda: kernel_context(path))


@pytest.mark.parametrize("cell,path", [("lstm", p) for p in ["plain", *KERNEL_PATHS]]
                         + [("gru", "plain"), ("rnn", "plain")])
def test_no_gradient_crosses_a_reset(cell, path):
    skip_without_kernel(path)
    torch.manual_seed(0)
    batch, steps, reset_at = (3, 24, 10) if path == "plain" else (16, 24, 10)
    model = CharRNN(ModelConfig(vocab_size=9, cell=cell, layers=2, hidden=32, dropout=0.0, weight_drop=0.2)).train()
    model.recurrence = lstm_train.kernel(KERNEL_PATHS[path]) if path in KERNEL_PATHS else None
    # Symbol 0 appears only in row 0, before its reset: nothing scored after the reset may reach it.
    ids = torch.randint(1, 9, (batch, steps), generator=torch.Generator().manual_seed(2))
    ids[0, :reset_at] = 0
    resets = torch.zeros(batch, steps, dtype=torch.bool)
    resets[0, reset_at] = True
    for mask, crosses in ((resets, False), (None, True)):
        model.zero_grad()
        state = tuple(torch.randn_like(s).requires_grad_() for s in model.initial_state(batch))
        with kernel_context(path):
            assert model.uses_recurrence_kernel(ids) == (path != "plain")
            logits, _ = model(ids, state, resets=mask)
        logits[0, reset_at:].float().sum().backward()
        reached = model.embed.weight.grad[0].abs().max() > 0 or any(s.grad[:, 0].abs().max() > 0 for s in state)
        assert bool(reached) == crosses
        assert model.embed.weight.grad[1:].abs().max() > 0  # the rest of the window does learn


# ---- training ------------------------------------------------------------------------------
def test_trainer_passes_the_batches_resets(tmp_path, monkeypatch):
    text = make_corpus(6000)
    vocab = Vocabulary.from_text(text)
    config = TrainConfig(batch_size=8, seq_len=32, max_steps=12, eval_every=6, save_every=6, seed=3)
    train_tokens, val_tokens = split_for_training(vocab.encode(text), config.val_frac, config.eval_chars,
                                                  config.batch_size, config.seq_len)
    starts = torch.arange(0, len(text), 150)
    data = StreamData(train_tokens, val_tokens, config.batch_size, config.seq_len, config.seed, doc_starts=starts)
    seen = []
    original = CharRNN._recur_segments

    def spy(self, ids, state, resets, columns, amx, weights):
        seen.append(int(resets.sum()))
        return original(self, ids, state, resets, columns, amx, weights)

    monkeypatch.setattr(CharRNN, "_recur_segments", spy)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=1, hidden=32))
    Trainer(model, vocab, data, config, torch.device("cpu"), tmp_path, {"sha256": "x", "length": len(text)}).run()
    assert len(seen) >= 3 and sum(seen) > 0  # a start every ~5 windows of each stream


def test_train_a_directory_through_the_cli_then_info_and_resume(tmp_path):
    d = tmp_path / "corpus"
    text = make_corpus(9000)
    for i, name in enumerate(["one.txt", "two/three.txt", "two/four.txt"]):
        write(d / name, text[i * 3000:(i + 1) * 3000])
    write(d / ".notes", "\x00 never read")
    ck = tmp_path / "ck"
    args = ["train", str(d), "--checkpoint-dir", str(ck), *TINY, "--max-steps", "6", "--eval-every", "3",
            "--precision", "fp32", "--threads", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "9,000 chars of 3 files" in result.output
    info = CliRunner().invoke(cli, ["info", str(ck), "--json"])
    assert info.exit_code == 0, info.output
    described = json.loads(info.stdout)
    assert described["corpus_length"] == 9000 and described["step"] == 6
    corpus = cache.prepare_corpus([str(d)], "utf-8", ck / "cache")
    assert described["corpus_sha256"] == corpus.sha256 and corpus.reused
    resumed = CliRunner().invoke(cli, ["train", str(d), "--checkpoint-dir", str(ck), "--resume", "--max-steps", "8",
                                       "--threads", "1"])
    assert resumed.exit_code == 0, resumed.output
    assert "different corpus" not in resumed.output and "resuming at step 6" in resumed.output
    bad = CliRunner().invoke(cli, ["train", str(d), "-", "--checkpoint-dir", str(tmp_path / "ck2"), *TINY])
    assert bad.exit_code != 0 and "standard input" in bad.output


# ---- record mode ---------------------------------------------------------------------------
def test_records_of_every_file_a_files_end_ending_a_record(tmp_path):
    d = tmp_path / "names"
    write(d / "a.txt", "anna\nbob\ncarl")  # no final newline: the file's end ends "carl"
    write(d / "b.txt", "dave\n\neve\n")
    corpus = cache.prepare_corpus([str(d)], "utf-8", tmp_path / "cache")
    records = records_of_corpus(corpus, "\n", str(d), keep_chars=None)
    assert records.texts() == ["anna", "bob", "carl", "dave", "eve"]
    assert "\n" not in records.vocab and records.vocab.marker_id == len(records.vocab.chars)
    resumed = records_of_corpus(corpus, "\n", str(d), keep_chars=Vocabulary("abcdelnorvxyz", marker=True))
    assert resumed.texts() == records.texts()
    write(d / "c.txt", "x" * 20_000)
    long = cache.prepare_corpus([str(d)], "utf-8", tmp_path / "cache")
    with pytest.raises(CharrnnError, match=r"c\.txt: the record starting on line 1"):
        records_of_corpus(long, "\n", str(d), keep_chars=None)


def test_train_records_over_two_files_through_the_cli(tmp_path):
    names = ["anna", "bob", "carl", "dave", "eve", "fred", "gina", "hugo", "ida", "jack"] * 6
    write(tmp_path / "a.txt", "\n".join(names[:30]))
    write(tmp_path / "b.txt", "\n".join(names[30:]) + "\n")
    ck = tmp_path / "ck"
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "b.txt"), str(tmp_path / "a.txt"), "--records",
                                      "--checkpoint-dir", str(ck), *TINY, "--max-steps", "4", "--eval-every", "2",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "records of 2 files" in result.output
    info = json.loads(CliRunner().invoke(cli, ["info", str(ck), "--json"]).stdout)
    assert info["records"]["count"] == 60
