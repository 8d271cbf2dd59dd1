import math

import pytest
import torch

from charrnn import checkpoint
from charrnn.config import TrainConfig, merge_resume_options
from charrnn.errors import CharrnnError
from charrnn.evaluate import evaluate
from charrnn.model import CharRNN, ModelConfig
from charrnn.native import recurrence as lstm_train
from charrnn.text.vocab import Vocabulary
from charrnn.training.streams import StreamData, split_for_training
from charrnn.training.trainer import Trainer, adamw

from ..helpers import make_corpus


def make_trainer(tmp_path, resume=None, precision=None, hidden=24, dropout=0.1, **overrides):
    text = make_corpus(12_000)
    vocab = Vocabulary.from_text(text)
    settings = dict(batch_size=8, seq_len=32, lr=1e-2, max_steps=40, eval_every=10, save_every=10, seed=3)
    settings.update(overrides)
    config = TrainConfig(**settings)
    model_config = ModelConfig(vocab_size=len(vocab), layers=2, hidden=hidden, dropout=dropout)
    torch.manual_seed(config.seed)
    model = resume.move_model_to("cpu") if resume else CharRNN(model_config)
    train_tokens, val_tokens = split_for_training(vocab.encode(text), config.val_frac, config.eval_chars,
                                                  config.batch_size, config.seq_len)
    data = StreamData(train_tokens, val_tokens, config.batch_size, config.seq_len, config.seed)
    return Trainer(model, vocab, data, config, torch.device("cpu"), tmp_path, {"sha256": "x", "length": len(text)},
                   resume=resume, precision=precision)


def test_tiny_model_learns_well_below_uniform(tmp_path):
    # 160 steps leave this seed a wide margin below the bound; at 120 it sat right at it.
    trainer = make_trainer(tmp_path, max_steps=160, eval_every=40)
    result = trainer.run()
    uniform = math.log(len(trainer.vocab))
    assert result.best_val_loss < 0.55 * uniform, (result.best_val_loss, uniform)
    assert [m["step"] for m in trainer.metrics] == [40, 80, 120, 160]
    assert (tmp_path / "latest.pt").exists() and (tmp_path / "best.pt").exists()


@pytest.mark.parametrize("winner", [None, "trained", "averaged"])
def test_resumed_run_matches_uninterrupted(tmp_path, monkeypatch, winner):
    """Stop at step 20 (as a signal would), resume, and land on the very same weights.

    `winner` forces which weights validate better (None: whichever really does), so resuming
    is checked with either set in the checkpoint's "model" and the other stored beside it.
    """
    if winner is not None:
        def rigged(self, model):
            return 1.0 if (model is self.average.model) == (winner == "averaged") else 2.0
        monkeypatch.setattr(Trainer, "_validation_loss", rigged)
    whole = make_trainer(tmp_path / "whole")
    whole.run()

    first = make_trainer(tmp_path / "split")
    original_step = first.optimizer.step

    def step_then_stop(*args, **kwargs):
        out = original_step(*args, **kwargs)
        if first.step == 19:  # the loop increments after this call: stop at step 20
            first.request_stop(2)
        return out

    first.optimizer.step = step_then_stop
    assert first.run().stopped_by_signal == 2 and first.step == 20
    saved = checkpoint.load(tmp_path / "split" / "latest.pt")
    if winner is not None:
        assert first.use_average == (winner == "averaged")
    for a, b in zip(saved.model.parameters(), first.output_model.parameters()):
        assert torch.equal(a, b)

    resumed = make_trainer(tmp_path / "split", resume=saved)
    assert resumed.step == 20
    resumed.run()
    assert resumed.step == whole.step == 40
    def losses(trainer):
        return [{k: v for k, v in m.items() if k not in ("elapsed", "chars_per_s")} for m in trainer.metrics]

    assert losses(resumed) == losses(whole)
    assert resumed.use_average == whole.use_average
    for trainer in (resumed, whole):
        assert not torch.equal(trainer.model.head.weight, trainer.average.model.head.weight)
    for a, b in zip([*resumed.model.parameters(), *resumed.average.model.parameters()],
                    [*whole.model.parameters(), *whole.average.model.parameters()]):
        assert torch.equal(a, b)


def test_validation_scores_both_weight_sets_and_keeps_the_better(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=30, eval_every=10)
    trainer.run()
    for m in trainer.metrics:
        assert m["val_loss"] == min(m["val_loss_trained"], m["val_loss_averaged"])
    last = trainer.metrics[-1]
    saved = checkpoint.load(tmp_path / "latest.pt")
    kept = trainer.average.model if last["val_loss_averaged"] < last["val_loss_trained"] else trainer.model
    for a, b in zip(saved.model.parameters(), kept.parameters()):
        assert torch.equal(a, b)
    # Without an average there is one loss and one set of weights.
    plain = make_trainer(tmp_path / "plain", max_steps=10, eval_every=10, ema_decay=0.0)
    plain.run()
    assert plain.average is None and "val_loss_trained" not in plain.metrics[0]
    assert set(torch.load(tmp_path / "plain" / "latest.pt", weights_only=True)) & {"trained_model",
                                                                                   "averaged_model"} == set()


def test_schedule_warms_up_then_decays_to_the_floor(tmp_path):
    trainer = make_trainer(tmp_path, warmup_steps=10, max_steps=100, lr=1.0, min_lr_frac=0.1)
    lrs = []
    for step in range(100):
        trainer.step = step
        lrs.append(trainer.learning_rate())
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(lrs[9], rel=0.01)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    trainer.step = 100
    assert trainer.learning_rate() == pytest.approx(0.1) and trainer.done()


def test_learning_rate_follows_validation_when_it_stops_improving(tmp_path, monkeypatch):
    """With plateau_decay, each validation that fails to beat the best cuts the rate; the run
    ends once the cut takes it under min_lr_frac of the peak, and a resumed run keeps the cut."""
    def rigged(self, model):
        return {10: 2.0, 20: 1.5, 30: 1.6, 40: 1.4}.get(self.step, 1.7)

    monkeypatch.setattr(Trainer, "_validation_loss", rigged)
    trainer = make_trainer(tmp_path, max_steps=200, eval_every=10, warmup_steps=0, plateau_decay=0.5,
                           min_lr_frac=0.1)
    trainer.run()
    # Cuts at steps 30, 50, 60 and 70 (1.6 and 1.7 do not beat 1.5 and 1.4); 1/16 < 0.1 stops.
    assert trainer.step == 70 and trainer.lr_scale == 0.5**4 and trainer.plateaued()
    trainer.lr_scale = 1.0
    scales = []
    for m in trainer.metrics:
        trainer.step = m["step"]
        scales.append(m["lr"] / trainer.learning_rate())
    assert scales == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.125, 0.0625])
    saved = checkpoint.load(tmp_path / "latest.pt")
    assert saved.data["schedule"]["lr_scale"] == 0.5**4
    resumed = make_trainer(tmp_path, resume=saved, max_steps=200, eval_every=10, warmup_steps=0,
                           plateau_decay=0.5, min_lr_frac=0.1)
    assert resumed.lr_scale == 0.5**4 and resumed.done()
    # Off by default: the same validations leave the rate alone.
    plain = make_trainer(tmp_path / "plain", max_steps=40, eval_every=10)
    plain.run()
    assert plain.lr_scale == 1.0 and plain.step == 40


def test_time_budget_drives_the_schedule(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=None, max_time=60.0)
    assert trainer.total_steps() is None
    trainer.elapsed = 30.0
    assert trainer.progress_fraction() == pytest.approx(0.5)
    trainer.elapsed = 61.0
    assert trainer.done()


def test_bf16_training_learns_carries_fp32_state_and_resumes_in_fp32(tmp_path):
    """bf16 autocast on the CPU (what `auto` picks on AMX CPUs) learns like fp32, scores
    within bf16's rounding of fp32, and leaves checkpoints that resume in either precision.
    The shapes fit the C recurrence's blocks, so on an AMX or AVX512-BF16 CPU this trains through it."""
    trainer = make_trainer(tmp_path, precision=torch.bfloat16, max_steps=160, eval_every=40, batch_size=16,
                           hidden=32)
    assert trainer.recurrence == lstm_train.kernel(torch.bfloat16)  # chosen once, for the run's precision
    assert trainer.model.recurrence is trainer.recurrence
    result = trainer.run()
    assert result.best_val_loss < 0.55 * math.log(len(trainer.vocab))
    assert all(s.dtype == torch.float32 for s in trainer.state)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    full = evaluate(trainer.model, trainer.data.val_tokens, torch.device("cpu"))
    halved = evaluate(trainer.model, trainer.data.val_tokens, torch.device("cpu"), precision=torch.bfloat16)
    assert halved.chars == full.chars and halved.loss == pytest.approx(full.loss, abs=0.02)
    resumed = make_trainer(tmp_path, resume=checkpoint.load(tmp_path / "latest.pt"), max_steps=170, eval_every=40)
    assert resumed.step == 160 and resumed.run().step == 170


def test_fp32_training_through_the_kernel_follows_nn_lstm(tmp_path, monkeypatch):
    """fp32 training on a CPU with the fp32 kernel (what `auto` picks where bf16 is not native)
    takes the same steps as through nn.LSTM: only the order of sums differs, so after 60 steps
    of the same batches the validation losses agree. (Without dropout: nn.LSTM draws its masks
    between layers from the generator differently.)"""
    if lstm_train.kernel(torch.float32) is None:  # checked here, so that it builds into the session's cache
        pytest.skip("no fp32 recurrence library here (needs AVX2 and FMA, and a C compiler)")
    losses = {}
    for setting in ("fp32", "off"):
        monkeypatch.setenv(lstm_train.KERNEL_ENV, setting)
        trainer = make_trainer(tmp_path / setting, max_steps=60, eval_every=30, batch_size=16, hidden=32,
                               dropout=0.0)
        assert trainer.model.train().uses_recurrence_kernel(torch.zeros(16, 4, dtype=torch.long)) == (
            setting == "fp32")
        losses[setting] = trainer.run().best_val_loss
    assert losses["fp32"] == pytest.approx(losses["off"], abs=1e-4)


def test_the_optimizer_is_torchs_fused_adamw_where_it_has_one(monkeypatch):
    """One pass over the weights on the CPU (torch >= 2.4); a torch that refuses fused=True for
    the device gets the plain AdamW with the same settings."""
    weights = [torch.nn.Parameter(torch.randn(4, 3))]
    config = TrainConfig(lr=3e-3, weight_decay=0.2)
    fused = adamw(weights, config, torch.device("cpu"))
    assert fused.defaults["fused"] and fused.defaults["lr"] == 3e-3 and fused.defaults["weight_decay"] == 0.2
    assert not adamw(weights, config, torch.device("mps")).defaults["fused"]  # not one of FUSED_ADAMW_DEVICES
    real = torch.optim.AdamW

    def refusing(params, fused=None, **settings):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **settings)

    monkeypatch.setattr(torch.optim, "AdamW", refusing)
    plain = adamw(weights, config, torch.device("cpu"))
    assert not plain.defaults["fused"] and plain.defaults["betas"] == (0.9, 0.99)


def test_resume_keeps_the_epochs_rotation_and_older_checkpoints_keep_the_unrotated_layout(tmp_path):
    first = make_trainer(tmp_path, max_steps=5)
    first.run()
    saved = checkpoint.load(tmp_path / "latest.pt")
    offset = saved.data["data_position"]["offset"]
    assert offset == first.batcher.epoch_offset(0) != 0
    assert make_trainer(tmp_path, resume=saved, max_steps=10).batcher.position.offset == offset
    del saved.data["data_position"]["offset"]  # as written before epochs were rotated
    assert make_trainer(tmp_path, resume=saved, max_steps=10).batcher.position.offset == 0


def test_resume_options_keep_the_run_and_reject_changes():
    stored = {"hidden": 256, "lr": 2e-3, "max_steps": 100, "eval_every": 250}
    given = {"hidden": 512, "lr": 2e-3, "max_steps": 500, "eval_every": 100}
    merged = merge_resume_options(stored, given, explicit={"max_steps"})
    assert merged == {"hidden": 256, "lr": 2e-3, "max_steps": 500, "eval_every": 250, "weight_drop": 0.0,
                      "ema_decay": 0.0, "plateau_decay": 1.0, "records": False, "record_sep": "\n"}
    assert merge_resume_options(stored, given, explicit={"lr"})["lr"] == 2e-3
    with pytest.raises(CharrnnError, match="--hidden 512 differs"):
        merge_resume_options(stored, given, explicit={"hidden"})


def test_checkpoints_older_than_an_option_resume_with_the_value_their_run_had():
    # A checkpoint written before --weight-drop existed was trained without it, whatever
    # today's default is; asking for weight drop on resume would change the run.
    stored = {"hidden": 256, "dropout": 0.1}
    assert merge_resume_options(stored, {"weight_drop": 0.25}, explicit=set())["weight_drop"] == 0.0
    with pytest.raises(CharrnnError, match="--weight-drop 0.25 differs from the checkpoint's 0.0"):
        merge_resume_options(stored, {"weight_drop": 0.25}, explicit={"weight_drop"})


def test_too_short_corpus_is_a_clear_error():
    tokens = Vocabulary.from_text("abc").encode("abc" * 20)
    with pytest.raises(CharrnnError, match="too short"):
        split_for_training(tokens, val_frac=0.1, eval_chars=None, batch_size=8, seq_len=32)
    train, val = split_for_training(tokens, val_frac=0.1, eval_chars=3, batch_size=2, seq_len=4)
    assert len(train) == 54 and val.tolist() == tokens[54:58].tolist()
