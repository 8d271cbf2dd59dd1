import dataclasses

import torch

from charrnn.evaluate import eval_streams
from charrnn.training.streams import StreamBatcher, split


def test_split_takes_the_tail_for_validation():
    tokens = torch.arange(100)
    train, val = split(tokens, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_batches_are_contiguous_streams_with_shifted_targets():
    tokens = torch.arange(1000)
    b = StreamBatcher(tokens, batch_size=4, seq_len=10)
    x1, y1, first = b.next()
    x2, y2, again = b.next()
    assert first and not again
    assert x1.shape == (4, 10) and x1.dtype == torch.int64
    assert torch.equal(y1, x1 + 1)
    # Row r of the next batch continues row r of this one: the state can be carried.
    assert torch.equal(x2[:, 0], x1[:, -1] + 1)
    assert x1[1, 0] == 250  # streams are laid side by side


def test_epochs_wrap_and_position_is_restorable():
    b = StreamBatcher(torch.arange(200), batch_size=2, seq_len=9)
    assert b.windows_per_epoch == 11
    seen = [b.next() for _ in range(11)]
    x, _, new_epoch = b.next()
    assert new_epoch and b.position.epoch == 1 and torch.equal(x, seen[0][0])
    c = StreamBatcher(torch.arange(200), batch_size=2, seq_len=9)
    c.position.epoch, c.position.window = b.position.epoch, b.position.window
    assert torch.equal(c.next()[0], b.next()[0])


def test_eval_streams_score_every_target_once():
    for n, streams, burn in [(100, 7, 5), (11, 16, 3), (1000, 1, 256), (50, 4, 0)]:
        spans = eval_streams(torch.arange(n), streams, burn)
        scored = [t for _, score, end in spans for t in range(score, end)]
        assert scored == list(range(1, n))
        for ctx, score, _ in spans:
            assert 0 <= ctx <= score - 1 and score - 1 - ctx <= burn


def test_a_seed_rotates_each_epoch_and_streams_stay_contiguous_across_the_wrap():
    n, batch, seq = 1000, 4, 10
    b = StreamBatcher(torch.arange(n), batch_size=batch, seq_len=seq, seed=7)
    offsets = []
    for _ in range(3):
        windows = [b.next() for _ in range(b.windows_per_epoch)]
        assert windows[0][2] and not any(w[2] for w in windows[1:])
        offsets.append(b.position.offset)
        x = torch.cat([w[0] for w in windows], dim=1)
        y = torch.cat([w[1] for w in windows], dim=1)
        # Each row reads one run of consecutive characters, wrapping from the text's end to
        # its start, so the state carried from window to window is still the right one.
        assert torch.equal(y, (x + 1) % n)
        assert torch.equal(x[:, 1:], (x[:, :-1] + 1) % n)
        assert torch.equal(x[:, 0], (b.position.offset + torch.arange(batch) * (n // batch)) % n)
    assert len(set(offsets)) == 3  # the boundaries move from epoch to epoch
    again = StreamBatcher(torch.arange(n), batch_size=batch, seq_len=seq, seed=7)
    assert [again.epoch_offset(e) for e in range(3)] == offsets  # drawn from seed and epoch alone
    assert StreamBatcher(torch.arange(n), batch_size=batch, seq_len=seq, seed=8).epoch_offset(0) != offsets[0]


def test_a_rotated_position_restores_and_rank_rows_share_the_global_batch():
    def batcher(rows=slice(None)):
        return StreamBatcher(torch.arange(500), batch_size=4, seq_len=9, rows=rows, seed=3)

    b = batcher()
    for _ in range(b.windows_per_epoch + 5):  # into the second epoch
        b.next()
    c = batcher()
    c.position = dataclasses.replace(b.position)
    halves = [batcher(slice(0, 2)), batcher(slice(2, 4))]
    for h in halves:
        h.position = dataclasses.replace(b.position)
    expected = b.next()[0]
    assert torch.equal(c.next()[0], expected)
    assert torch.equal(torch.cat([h.next()[0] for h in halves]), expected)
