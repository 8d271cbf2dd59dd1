"""Training and sampling throughput of charrnn against the loops its users would write.

Training: charrnn's own Trainer.train_step against
  - plain loop:    nn.Embedding + fused nn.LSTM + nn.Linear, AdamW, clipping, no framework;
  - per-step loop: nn.LSTM called once per character (how char-rnn.pytorch trains).
Same model size, batch, sequence length, optimiser, clipping and precision (charrnn's choice
for the device, --precision to override: bf16 autocast on CUDA GPUs and on CPUs that multiply
bf16 natively, AMX or AVX512-BF16; fp32 elsewhere). Where that precision is not fp32, the plain
loop also runs in fp32 (`plain_fp32`, `vs_plain_fp32`): the loop a user would write without
autocast. The sizes are the default model at the default batch (16 x 64), then 64 x 128 and
3x512. After warm-up, one step of each loop in turn, in one process; chars/s are from the
median step time, and the ratios are medians of the ratios of steps timed side by side.

Ceilings, measured here rather than assumed: the matrix products of a training step are
counted (forward, plus twice that for the backward pass), and this device's matrix-product
peak (a large square product in the training precision) bounds the chars/s that any loop
doing those products could reach; `ceiling_vs_per_step` is that bound over the per-step
loop's rate. charrnn's AMX path does fewer products (its first layer looks its input
projections up), so it can pass that bound; `gflops` and `of_peak` count what it does.
One sampling stream reads every weight once per character, so the read rate of a tensor the
size of the weights bounds one-stream sampling.

Sampling: charrnn's Sampler (hand-written step, step.py) for 1 and 64 streams against a loop
that calls nn.LSTM once per character (what char-rnn, torch-rnn and char-rnn.pytorch do).

    python bench/speed.py                     # CPU sizes
    python bench/speed.py --precision fp32    # the same in full precision
    python bench/speed.py --device cuda       # adds batch 256
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_name, median, print_table, timed, write_json  # noqa: E402
from charrnn.config import TrainConfig  # noqa: E402
from charrnn.generation.sampler import Sampler, SamplingOptions  # noqa: E402
from charrnn.generation.steppers import step_cell  # noqa: E402
from charrnn.model import CharRNN, ModelConfig  # noqa: E402
from charrnn.runtime import PRECISIONS, autocast, pick_device, pick_precision, precision_label  # noqa: E402
from charrnn.text.vocab import Vocabulary  # noqa: E402
from charrnn.training.streams import StreamData  # noqa: E402
from charrnn.training.trainer import Trainer  # noqa: E402

VOCAB = 65  # tiny-shakespeare's symbol count
LR, CLIP = 2e-3, 1.0
DROPOUT = ModelConfig.dropout  # charrnn's default


class PlainModel(nn.Module):
    """The same network as charrnn's default model, written out: dropout included, since it
    is part of the model being trained (between layers and before the head)."""

    def __init__(self, layers: int, hidden: int, dropout: float = DROPOUT):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, hidden)
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, x, state):
        out, state = self.lstm(self.embed(x), state)
        return self.head(self.drop(out)), state


def plain_step_fn(model: PlainModel, opt, device, per_step: bool, precision: torch.dtype | None):
    state = [None]

    def step(x, y):
        with autocast(device, precision):
            if per_step:  # one nn.LSTM call per character
                emb = model.embed(x)
                st, outs = state[0], []
                for t in range(x.size(1)):
                    out, st = model.lstm(emb[:, t : t + 1], st)
                    outs.append(out)
                logits, new = model.head(model.drop(torch.cat(outs, 1))), st
            else:
                logits, new = model(x, state[0])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        state[0] = tuple(s.detach() for s in new)

    return step


def matmul_peak(device: torch.device, precision: torch.dtype | None, size: int = 2048, reps: int = 5) -> float:
    """FLOP/s of a large square product in the precision training uses (best of reps)."""
    dtype = precision or torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    return max(2 * size**3 / timed(lambda: a @ b, device) for _ in range(reps))


def train_flops_per_char(layers: int, hidden: int, first_layer_looked_up: bool = False) -> int:
    """Matrix-product FLOPs per character of a training step: forward (both products of
    every LSTM layer and the head) and a backward pass of twice that (input and weight grads).
    `first_layer_looked_up`: the first layer's input product is a table lookup (charrnn's
    training on AMX, charrnn.model.input_table), so its share is not done at all."""
    gates = 4 * hidden
    forward = 2 * (layers * gates * (hidden + hidden) + hidden * VOCAB)
    skipped = 2 * gates * hidden if first_layer_looked_up else 0
    return 3 * (forward - skipped)


def read_rate(nbytes: int, reps: int = 500) -> float:
    """Bytes/s of summing a CPU tensor of nbytes: what streaming that many weights can reach."""
    t = torch.randn(nbytes // 4)
    t.sum()
    return max(nbytes * reps / timed(lambda: [t.sum() for _ in range(reps)], torch.device("cpu"))
               for _ in range(5))


def step_bytes(model: CharRNN) -> int:
    """fp32 bytes one step of one stream must read: every weight except layer 0's input
    projection, which the step folds into a per-character table (one row read)."""
    folded = {"weight_ih_l0", "bias_ih_l0"}
    core = sum(w.numel() for name, w in model.core.named_parameters() if name not in folded)
    head = sum(w.numel() for w in model.head.parameters())
    return 4 * (core + head + model.core.weight_ih_l0.size(0))


def bench_training(layers: int, hidden: int, batch: int, seq: int, device, rounds: int, steps: int,
                   per_step_steps: int, peak: float, precision: torch.dtype | None) -> dict:
    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (batch * (seq + 1) * (steps + 4),), dtype=torch.uint8)
    vocab = Vocabulary(chr(32 + i) for i in range(VOCAB))
    config = TrainConfig(batch_size=batch, seq_len=seq, lr=LR, grad_clip=CLIP, val_frac=0.01, max_steps=10**9)
    data = StreamData(tokens, tokens[:2], batch, seq, seed=0)
    trainer = Trainer(CharRNN(ModelConfig(VOCAB, layers=layers, hidden=hidden)), vocab, data, config, device,
                      Path("/nonexistent"), {}, precision=precision)
    x = torch.randint(0, VOCAB, (batch, seq), device=device)
    y = torch.randint(0, VOCAB, (batch, seq), device=device)

    def charrnn_step(x, y):
        trainer.train_step(x, y)

    runners = {"charrnn": charrnn_step}
    loops = [("plain", False, precision), ("per-step", True, precision)]
    if precision is not None:  # the loop a user would write without autocast, beside the same-precision one
        loops.append(("plain-fp32", False, None))
    for name, per_step, loop_precision in loops:
        model = PlainModel(layers, hidden).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=config.weight_decay, betas=(0.9, 0.99))
        runners[name] = plain_step_fn(model, opt, device, per_step, loop_precision)
    for fn in runners.values():  # warm-up: allocator, cuDNN plans, first-call set-up
        fn(x, y)
        fn(x, y)
    # One step of each loop in turn, so that each ratio compares steps taken seconds apart:
    # this VM's speed drifts by more than the differences measured, within a round too.
    # The per-step loop, many times slower, takes one step per round.
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    vs_plain, vs_per_step, vs_plain_fp32 = [], [], []
    for r in range(rounds):
        for i in range(steps):
            names = [n for n in runners if n != "per-step" or i < per_step_steps]
            turn = (r * steps + i) % len(names)  # no loop always runs first
            names = names[turn:] + names[:turn]
            taken = {n: timed(lambda fn=runners[n]: fn(x, y), device) for n in names}
            for n, t in taken.items():
                seconds[n].append(t)
            vs_plain.append(taken["plain"] / taken["charrnn"])
            vs_plain_fp32.append(taken.get("plain-fp32", taken["plain"]) / taken["charrnn"])
            if "per-step" in taken:
                vs_per_step.append(taken["per-step"] / taken["charrnn"])
    c, p, s = (batch * seq / median(seconds[k]) for k in ("charrnn", "plain", "per-step"))
    p32 = batch * seq / median(seconds["plain-fp32"]) if "plain-fp32" in seconds else p
    flops = train_flops_per_char(layers, hidden)  # what the plain and per-step loops do
    looked_up = trainer.recurrence is not None  # the Trainer's kernel looks the first layer up
    own_flops = train_flops_per_char(layers, hidden, first_layer_looked_up=looked_up)
    return {"size": f"{layers}x{hidden}", "batch": batch, "seq": seq, "precision": precision_label(precision),
            "charrnn": c, "plain": p, "per_step": s, "plain_fp32": p32,
            "vs_plain": median(vs_plain), "vs_per_step": median(vs_per_step), "vs_plain_fp32": median(vs_plain_fp32),
            "gflops": c * own_flops / 1e9,
            "peak_gflops": peak / 1e9, "of_peak": c * own_flops / peak, "ceiling_vs_per_step": peak / (s * flops),
            "first_layer_looked_up": looked_up}


def bench_sampling(layers: int, hidden: int, streams: int, chars: int, rounds: int) -> dict:
    torch.manual_seed(0)
    vocab = Vocabulary(chr(32 + i) for i in range(VOCAB))
    model = CharRNN(ModelConfig(VOCAB, layers=layers, hidden=hidden)).eval()
    sampler = Sampler(model, vocab)
    options = SamplingOptions(1.0)

    def ours():
        for _ in sampler.generate(" ", chars, options, num_samples=streams, seed=0):
            pass

    @torch.no_grad()
    def per_char():
        rng = random.Random(0)
        ids = torch.zeros(streams, 1, dtype=torch.long)
        state = None
        for _ in range(chars):
            out, state = model.core(model.embed(ids), state)
            probs = torch.softmax(model.head(out[:, -1]), -1)
            ids = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(rng.randrange(2**31)))

    cpu = torch.device("cpu")
    ours(), per_char()
    rates = {"charrnn": [], "per-char": []}
    for _ in range(rounds):
        rates["charrnn"].append(streams * chars / timed(ours, cpu))
        rates["per-char"].append(streams * chars / timed(per_char, cpu))
    c, p = median(rates["charrnn"]), median(rates["per-char"])
    stepper = step_cell(model, streams)
    step_name = type(stepper).__name__ + (" + C gates" if getattr(stepper, "gates_call", None) else "")
    row = {"size": f"{layers}x{hidden}", "streams": streams, "step": step_name,
           "charrnn": c, "per_char_lstm": p, "speedup": c / p}
    if streams == 1:
        weight_bytes = step_bytes(model)
        read = read_rate(weight_bytes)
        row.update({"weight_mb": weight_bytes / 2**20, "read_gbs": read / 1e9, "ceiling": read / weight_bytes})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="autocast dtype of all three training loops (default: charrnn's choice for the device)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (fused loops)")
    parser.add_argument("--sample-chars", type=int, default=2000)
    parser.add_argument("--sample-rounds", type=int, default=15,
                        help="alternating rounds for sampling (each well under a second, so more of them)")
    parser.add_argument("--default-size", default="2x256", help="the default model, LxH, for sampling")
    parser.add_argument("--sampling-only", action="store_true", help="skip the training table")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)

    defaults = TrainConfig()  # the batch a default `charrnn train` takes, then two larger ones
    sizes = [] if args.sampling_only else [(2, 256, defaults.batch_size, defaults.seq_len), (2, 256, 64, 128),
                                           (3, 512, 64, 128)]
    if device.type == "cuda" and not args.sampling_only:
        sizes += [(2, 256, 256, 128), (3, 512, 256, 128)]
    peak = matmul_peak(device, precision)
    training = []
    for layers, hidden, batch, seq in sizes:
        training.append(bench_training(layers, hidden, batch, seq, device, args.rounds, args.steps,
                                       per_step_steps=1, peak=peak, precision=precision))
        print(f"trained {training[-1]['size']} batch {batch}", file=sys.stderr)
    if training:
        print(f"\nTraining throughput, chars/s ({device_name(device)}):")
        print_table(training, ["size", "batch", "seq", "precision", "charrnn", "plain", "per_step", "plain_fp32",
                               "vs_plain", "vs_per_step", "vs_plain_fp32", "gflops", "peak_gflops", "of_peak",
                               "ceiling_vs_per_step"])

    default_layers, default_hidden = (int(v) for v in args.default_size.split("x"))
    cases = dict.fromkeys([(default_layers, default_hidden, 1), (2, 256, 1), (2, 256, 64)])
    sampling = []
    for layers, hidden, streams in cases:
        chars = args.sample_chars if streams == 1 else max(200, args.sample_chars // 8)
        sampling.append(bench_sampling(layers, hidden, streams, chars, args.sample_rounds))
    print(f"\nSampling throughput, chars/s in total ({device_name(torch.device('cpu'))}; sampling runs on the CPU):")
    print_table(sampling, ["size", "streams", "step", "charrnn", "per_char_lstm", "speedup", "weight_mb", "read_gbs",
                           "ceiling"])
    write_json(f"speed-{device.type}.json", {"device": device_name(device), "training": training,
                                             "sampling": sampling, "args": vars(args)}, args.json_out)


if __name__ == "__main__":
    main()
