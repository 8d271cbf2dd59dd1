"""The weights laid out as the C code reads them, in one place.

Two gate orders meet here. The training kernels (lstm_amx.c, lstm_vector.c) keep PyTorch's
(i, f, g, o), so their gate gradients map straight back onto nn.LSTM's parameters. The
sampling step (lstm_step.c, and the eager step's C gate function) takes (i, f, o, g): its three
sigmoid gates are then one contiguous block, and its weights are repacked once per model anyway.
"""

from __future__ import annotations

import torch

from ..model import CharRNN, input_table
from . import abi


def gates_ifog(weight: torch.Tensor, hidden: int) -> torch.Tensor:
    """PyTorch's gate order (i, f, g, o) along dim 0 -> (i, f, o, g): the three sigmoid
    gates become one contiguous block."""
    i, f, g, o = weight.split(hidden, 0)
    return torch.cat([i, f, o, g], 0)


def sampling_table(model: CharRNN, fold_b_hh: bool = True) -> torch.Tensor:
    """Layer 0's gate inputs for every character, [vocab, gates] fp32: the embedding lookup, the
    input projection and its bias at once, plus the recurrent bias where the cell allows."""
    core = model.core
    table = input_table(model.embed.weight, core.weight_ih_l0, torch.float32) + core.bias_ih_l0.float()
    return table + core.bias_hh_l0.float() if fold_b_hh else table


def lstm_sampling_weights(model: CharRNN) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
    """What both LSTM steppers read, fp32, gates in (i, f, o, g) order: layer 0's table
    [vocab, gates]; each layer's weights [gates, inputs] (layer 0: recurrent only, the
    others [W_ih | W_hh] so that [input, h] is one product); each layer's summed biases
    [gates] (None for layer 0, whose biases are in the table)."""
    core, hidden = model.core, model.config.hidden
    table = gates_ifog(sampling_table(model).t(), hidden).t().contiguous()
    weights = [gates_ifog(core.weight_hh_l0.float(), hidden)]
    biases: list[torch.Tensor | None] = [None]
    for layer in range(1, model.config.layers):
        both = torch.cat([getattr(core, f"weight_ih_l{layer}"), getattr(core, f"weight_hh_l{layer}")], 1)
        weights.append(gates_ifog(both.float(), hidden))
        bias = getattr(core, f"bias_ih_l{layer}") + getattr(core, f"bias_hh_l{layer}")
        biases.append(gates_ifog(bias.float(), hidden))
    return table, weights, biases


def step_blocks(weight: torch.Tensor, hidden: int) -> torch.Tensor:
    """lstm_step.c's layer weights: [4 * hidden, inputs] (i, f, o, g) -> [hidden / BLOCK, inputs,
    4, BLOCK], each work item's units and gates contiguous."""
    block = abi.STEP_BLOCK
    return weight.view(4, hidden // block, block, -1).permute(1, 3, 0, 2).contiguous()


def step_head(weight: torch.Tensor, bias: torch.Tensor, padded_vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """lstm_step.c's output layer: the rows padded to `padded_vocab` (a multiple of BLOCK), the
    weights as [padded_vocab / BLOCK, hidden, BLOCK]."""
    vocab, hidden = weight.shape
    head_w = torch.zeros(padded_vocab, hidden)
    head_w[:vocab] = weight.float()
    head_b = torch.zeros(padded_vocab)
    head_b[:vocab] = bias.float()
    return head_w.view(-1, abi.STEP_BLOCK, hidden).transpose(1, 2).contiguous(), head_b


def training_columns(w: torch.Tensor) -> torch.Tensor:
    """[K, N] -> the training kernels' layout for the right operand, column blocks of 16: bf16 as
    the tiles read it, [N / 16][K / 2][16][2] (pairs of K); fp32 [N / 16][K][16]."""
    k, n = w.shape
    block = abi.UNIT_BLOCK
    if w.dtype == torch.float32:
        return w.reshape(k, n // block, block).permute(1, 0, 2).contiguous()
    return w.reshape(k // 2, 2, n // block, block).permute(2, 0, 3, 1).contiguous()
