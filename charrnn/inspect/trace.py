"""What a model makes of a text, character by character: its guesses, its surprise, its neurons.

`trace(model, vocab, text)` reads `text` through the model once and returns a `Trace`: for every
character the model's probabilities for it (from the characters before it), its loss (−log p,
nats), and every layer's activations after reading it: the hidden state h of every cell, the
cell state c and the gates i, f, g, o of an LSTM, the gates r, z, n of a GRU. features.py's
`rank_units` then finds the units that track a feature of the text (the cell search).

PyTorch's fused core gives only the last layer's h, so each layer runs on its own here (the
fused one-layer cell, the model's own weights) and its gates and c are computed from its h;
tests hold the result equal to the model's forward pass.

Positions: a stream model reads the text as one stream from a zero state, so its first
character has no prediction (NaN). A record model reads each record as it was trained:
MARKER first, from a zero state; a separator after a record is scored as END (the marker as a
target), and its activations are those after reading the next record's MARKER.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import CharrnnError
from ..model import CharRNN, evaluating
from ..runtime import threads_for_block
from ..text.vocab import Vocabulary, unknown_characters

# The activations of each cell, in the order a page lists them; the state first.
KINDS = {"lstm": ("c", "h", "i", "f", "g", "o"), "gru": ("h", "r", "z", "n"), "rnn": ("h",)}
STATE_KINDS = {"lstm": ("c", "h"), "gru": ("h",), "rnn": ("h",)}


@dataclass
class Trace:
    """A text as a model read it. T is len(text), V the vocabulary (the marker included)."""

    text: str
    vocab: Vocabulary
    cell: str
    targets: torch.Tensor  # int64 [T]: each character's id; END (the marker) for a record separator
    probs: torch.Tensor  # float32 [T, V]: the distribution that predicted each character; NaN rows: none did
    layers: list[dict[str, torch.Tensor]] = field(default_factory=list)  # per layer: kind -> float32 [T, hidden]

    @property
    def loss(self) -> torch.Tensor:
        """−log p of each character, nats [T]; NaN where nothing predicted it."""
        p = self.probs.gather(1, self.targets[:, None]).squeeze(1)
        return -p.clamp_min(1e-30).log()

    @property
    def mean_loss(self) -> float:
        """Mean loss over the predicted characters, nats per character (NaN when none was)."""
        loss = self.loss
        scored = loss[~loss.isnan()]
        return float(scored.mean()) if len(scored) else math.nan

    @property
    def predicted(self) -> torch.Tensor:
        """bool [T]: whether the character had a prediction."""
        return ~self.probs[:, 0].isnan()

    def top(self, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """The k likeliest guesses at each position: ids [T, k] and probabilities [T, k]."""
        k = min(k, self.probs.size(1))
        values, ids = self.probs.nan_to_num(0.0).topk(k, dim=1)
        return ids, values

    def activation(self, layer: int, kind: str = "h") -> torch.Tensor:
        """A layer's activations of one kind, [T, hidden]."""
        return self.layers[layer][kind]

    def label(self, char_id: int) -> str:
        """How a guess is written: the character, or END for the marker."""
        return "END" if char_id == self.vocab.marker_id else self.vocab.chars[char_id]


@torch.inference_mode()
def trace(model: CharRNN, vocab: Vocabulary, text: str, separator: str | None = None) -> Trace:
    """Reads `text` through `model` (copies of its weights, on the CPU in fp32) and returns every character's prediction
    and every layer's activations after it.

    A record model (`vocab.marker_id` set) splits `text` into records at `separator` (default a
    newline), each read from MARKER. Raises CharrnnError for characters the model never saw.
    """
    if len(vocab) != model.config.vocab_size:
        raise CharrnnError(f"the vocabulary has {len(vocab)} symbols but the model {model.config.vocab_size}")
    if not text:
        raise CharrnnError("the text is empty")
    records = vocab.marker_id is not None
    separator = (separator or "\n") if records else None
    allowed = set(vocab.chars) | set(separator or "")
    if set(text) - allowed:
        raise unknown_characters(sorted(set(text) - allowed), skip_option=False)
    inputs, resets, shown_after, predicted_by, targets = _layout(text, vocab, separator)
    with evaluating(model):
        states, top = _run(model, inputs, resets)
        logits = torch.nn.functional.linear(top, model.head.weight.detach().float().cpu(),
                                            model.head.bias.detach().float().cpu())
    probs = torch.full((len(text), len(vocab)), math.nan)
    has = predicted_by >= 0
    probs[has] = torch.softmax(logits[predicted_by[has]], dim=-1)
    layers = [{kind: values[shown_after] for kind, values in layer.items()} for layer in states]
    return Trace(text, vocab, model.config.cell, targets, probs, layers)


def _layout(text: str, vocab: Vocabulary, separator: str | None):
    """The model's inputs and where each character of `text` reads from them.

    Returns inputs [N] and resets [N] (zero the state before this input), and per character:
    the input after which its activations are shown, the input whose output predicted it
    (-1: none) and its target id.
    """
    index = vocab.index
    if separator is None:  # one stream
        n = len(text)
        inputs = vocab.encode(text)
        resets = torch.zeros(n, dtype=torch.bool)
        shown_after = torch.arange(n)
        predicted_by = torch.arange(n) - 1
        return inputs, resets, shown_after, predicted_by, inputs.clone()
    marker = vocab.marker_id
    inputs: list[int] = []
    resets: list[bool] = []
    shown_after: list[int] = []
    predicted_by: list[int] = []
    targets: list[int] = []
    parts = text.split(separator)
    for number, record in enumerate(parts):
        start = len(inputs)
        inputs.append(marker)
        resets.append(True)
        for offset, char in enumerate(record, 1):
            inputs.append(index[char])
            resets.append(False)
            shown_after.append(start + offset)
            predicted_by.append(start + offset - 1)
            targets.append(index[char])
        if number < len(parts) - 1:  # a separator follows: END, then the next record's MARKER
            next_marker = start + len(record) + 1
            for k, char in enumerate(separator):
                shown_after.append(next_marker)
                predicted_by.append(start + len(record) if k == 0 else -1)
                targets.append(marker if k == 0 else index.get(char, marker))
    as_tensor = lambda values, dtype=torch.int64: torch.tensor(values, dtype=dtype)  # noqa: E731
    return (as_tensor(inputs), as_tensor(resets, torch.bool), as_tensor(shown_after), as_tensor(predicted_by),
            as_tensor(targets))


def _run(model: CharRNN, inputs: torch.Tensor, resets: torch.Tensor) -> tuple[list[dict[str, torch.Tensor]],
                                                                                torch.Tensor]:
    """Every layer's activations [N, hidden] by kind over the inputs, and the last layer's h
    (what the head reads).

    Each layer's h comes from PyTorch's fused one-layer cell over the whole text; the gates then
    follow from h one step back in one product for every step at once, and an LSTM's c from the
    gates in an elementwise scan. All on one thread: a single stream's products are small, and
    threads that wait for each other at every step stall on a busy CPU (docs/experiments.md,
    "Threads on a shared CPU"); 5,000 characters of a 2x256 LSTM take 0.3 s.
    """
    config = model.config
    params = {name: p.detach().float().cpu() for name, p in model.core.named_parameters()}
    x = model.embed.weight.detach().float().cpu()[inputs]
    starts = resets.clone()
    starts[0] = True
    segments = _segments(starts)
    layers = []
    with threads_for_block(1):
        for layer in range(config.layers):
            weights = {k.replace(f"_l{layer}", "_l0"): v for k, v in params.items() if k.endswith(f"_l{layer}")}
            h = _fused_layer(model.core, config.cell, weights, x, segments)
            h_prev = torch.cat([torch.zeros(1, h.size(1)), h[:-1]])
            h_prev[starts] = 0.0
            x_part = x @ weights["weight_ih_l0"].t() + weights.get("bias_ih_l0", 0.0)
            h_part = h_prev @ weights["weight_hh_l0"].t() + weights.get("bias_hh_l0", 0.0)
            layers.append(_gates(config.cell, x_part, h_part, h, starts))
            x = h
    return layers, x


def _segments(starts: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of inputs read from a zero state."""
    bounds = starts.nonzero().flatten().tolist() + [len(starts)]
    return list(zip(bounds, bounds[1:]))


SEGMENTS_PER_CALL = 64  # records run through the fused cell together, padded to the longest


def _fused_layer(core: torch.nn.Module, cell: str, weights: dict[str, torch.Tensor], x: torch.Tensor,
                 segments: list[tuple[int, int]]) -> torch.Tensor:
    """One layer's h [N, hidden] over the inputs x [N, in], each segment from a zero state."""
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    extra = {"nonlinearity": core.nonlinearity} if cell == "rnn" else {}
    hidden = weights["weight_hh_l0"].size(1)
    one = kind(x.size(1), hidden, num_layers=1, bias="bias_ih_l0" in weights, batch_first=True, **extra)
    one.load_state_dict(weights)
    one.eval()
    if len(segments) == 1:
        return one(x[None])[0][0]
    out = torch.empty(x.size(0), hidden)
    ordered = sorted(segments, key=lambda s: s[1] - s[0])  # like lengths together: little padding
    for first in range(0, len(ordered), SEGMENTS_PER_CALL):
        group = ordered[first:first + SEGMENTS_PER_CALL]
        width = max(end - start for start, end in group)
        batch = torch.zeros(len(group), width, x.size(1))
        for row, (start, end) in enumerate(group):
            batch[row, :end - start] = x[start:end]
        result = one(batch)[0]  # padding comes after each segment, so it changes none of its outputs
        for row, (start, end) in enumerate(group):
            out[start:end] = result[row, :end - start]
    return out


def _gates(cell: str, x_part: torch.Tensor, h_part: torch.Tensor, h: torch.Tensor,
           starts: torch.Tensor) -> dict[str, torch.Tensor]:
    """A layer's activations by kind, from its input and recurrent pre-activations [N, gates * hidden]."""
    if cell == "rnn":
        return {"h": h}
    if cell == "gru":
        x_r, x_z, x_n = x_part.chunk(3, dim=1)
        h_r, h_z, h_n = h_part.chunk(3, dim=1)
        r = (x_r + h_r).sigmoid()
        return {"h": h, "r": r, "z": (x_z + h_z).sigmoid(), "n": (x_n + r * h_n).tanh()}
    i, f, g, o = (x_part + h_part).chunk(4, dim=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    new = i * g
    keep = f.masked_fill(starts[:, None], 0.0)  # a segment's first step starts from c = 0
    c = torch.empty_like(new)
    previous = torch.zeros(new.size(1))
    for t in range(new.size(0)):
        previous = torch.addcmul(new[t], keep[t], previous)
        c[t] = previous
    return {"c": c, "h": h, "i": i, "f": f, "g": g, "o": o}
