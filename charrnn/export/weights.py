"""The model's parameters as both exports read them: named, in PyTorch's own layout and gate order.

Both exports write the same function as `CharRNN` (embedding, stacked cell, linear head), so
they read the parameters as PyTorch stores them (gates i, f, g, o for an LSTM; r, z, n for a
GRU) and do their own folding: the ONNX graph keeps them as they are, the page packs them
for its kernel when it loads.
"""

from __future__ import annotations

import copy

import torch

from ..errors import CharrnnError
from ..model import CharRNN

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def named_parameters(model: CharRNN) -> list[tuple[str, torch.Tensor]]:
    """Every parameter the step reads, in the order the page's blob holds them, fp32 on the CPU.

    Raises CharrnnError for a model no export can write (a cell or shape charrnn never trains).
    """
    config = model.config
    if config.cell not in GATES:
        raise CharrnnError(f"cannot export a {config.cell!r} model: only lstm, gru and rnn cells")
    core = model.core
    if getattr(core, "proj_size", 0) or getattr(core, "bidirectional", False) or \
            getattr(core, "nonlinearity", "tanh") != "tanh":
        raise CharrnnError("cannot export this model: its core is not the plain stacked cell charrnn trains")
    names = [("embed", model.embed.weight)]
    for layer in range(config.layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            names.append((f"{name}_l{layer}", getattr(core, f"{name}_l{layer}")))
    names += [("head_weight", model.head.weight), ("head_bias", model.head.bias)]
    return [(name, tensor.detach().float().cpu().contiguous()) for name, tensor in names]


def rounded_to_fp16(model: CharRNN) -> CharRNN:
    """A copy of `model` whose weights are what the page holds: each rounded to fp16 and back.

    The page's text at temperature 0 equals charrnn's on these weights, not on the fp32 ones
    (an argmax near a tie can flip when a weight moves by 2^-11 of itself)."""
    rounded = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        for parameter in rounded.parameters():
            parameter.copy_(parameter.half().float())
    return rounded
