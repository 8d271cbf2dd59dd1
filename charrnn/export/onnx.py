"""`charrnn export -o model.onnx`: the one-character step as an ONNX graph.

The graph is written node by node with `onnx.helper` rather than traced with
`torch.onnx.export`: the step is a dozen standard operators (Gather, Gemm, Split, Sigmoid,
Tanh, Mul, Add, Concat), so the file depends on no exporter version and any runtime that
implements opset 17 runs it. Inputs: `ids` [batch] int64, `h` (and `c` for an LSTM)
[layers, batch, hidden] float32. Outputs: `logits` [batch, vocab] and the new `h_out`
(`c_out`). The metadata says how to read the ids (vocabulary, record marker).
"""

from __future__ import annotations

import json

from .. import __version__
from ..checkpoint import Checkpoint
from ..errors import CharrnnError
from .weights import named_parameters

OPSET = 17


def _onnx():
    """The onnx package, or a one-line error naming the extra that installs it."""
    try:
        import onnx
    except ImportError:
        raise CharrnnError("exporting to ONNX needs the onnx package: pip install 'charrnn[onnx]'") from None
    return onnx


class _Graph:
    """Collects nodes and initialisers, naming every intermediate value uniquely."""

    def __init__(self, onnx):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0

    def constant(self, name: str, tensor) -> str:
        """A tensor initialiser from a torch tensor (onnx installs numpy, so the bytes go through it)."""
        self.initializers.append(self.onnx.numpy_helper.from_array(tensor.contiguous().numpy(), name))
        return name

    def op(self, kind: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs) -> str | list[str]:
        self.count += 1
        names = [name] if name is not None else [f"{kind.lower()}_{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(self.helper.make_node(kind, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names


def build_model(ckpt: Checkpoint):
    """The step of `ckpt`'s model as an onnx ModelProto."""
    import torch

    onnx = _onnx()
    config = ckpt.model_config
    params = dict(named_parameters(ckpt.model))
    g = _Graph(onnx)
    hidden, layers, cell = config.hidden, config.layers, config.cell
    lstm = cell == "lstm"

    for name, tensor in params.items():
        g.constant(name, tensor)
    g.constant("axis_zero", torch.tensor([0], dtype=torch.int64))
    if cell != "rnn":  # the gates' widths, for Split
        g.constant(f"split_{cell}", torch.tensor([hidden] * (4 if lstm else 3), dtype=torch.int64))
    for layer in range(layers):
        g.constant(f"layer_{layer}", torch.tensor(layer, dtype=torch.int64))

    x = g.op("Gather", "embed", "ids", axis=0)  # [batch, hidden]
    new_h, new_c = [], []
    for layer in range(layers):
        h = g.op("Gather", "h", f"layer_{layer}", axis=0)
        gi = g.op("Gemm", x, f"weight_ih_l{layer}", f"bias_ih_l{layer}", transB=1)
        gh = g.op("Gemm", h, f"weight_hh_l{layer}", f"bias_hh_l{layer}", transB=1)
        if lstm:
            c = g.op("Gather", "c", f"layer_{layer}", axis=0)
            i, f, cand, o = g.op("Split", g.op("Add", gi, gh), "split_lstm", axis=1, outputs=4)
            kept = g.op("Mul", g.op("Sigmoid", f), c)
            c_next = g.op("Add", kept, g.op("Mul", g.op("Sigmoid", i), g.op("Tanh", cand)))
            x = g.op("Mul", g.op("Sigmoid", o), g.op("Tanh", c_next))
            new_c.append(g.op("Unsqueeze", c_next, "axis_zero"))
        elif cell == "gru":
            ir, iz, i_n = g.op("Split", gi, "split_gru", axis=1, outputs=3)
            hr, hz, h_n = g.op("Split", gh, "split_gru", axis=1, outputs=3)
            r = g.op("Sigmoid", g.op("Add", ir, hr))
            z = g.op("Sigmoid", g.op("Add", iz, hz))
            n = g.op("Tanh", g.op("Add", i_n, g.op("Mul", r, h_n)))
            x = g.op("Add", n, g.op("Mul", z, g.op("Sub", h, n)))  # (1 - z) n + z h
        else:
            x = g.op("Tanh", g.op("Add", gi, gh))
        new_h.append(g.op("Unsqueeze", x, "axis_zero"))
    g.op("Gemm", x, "head_weight", "head_bias", transB=1, name="logits")
    g.op("Concat", *new_h, axis=0, name="h_out")
    if lstm:
        g.op("Concat", *new_c, axis=0, name="c_out")

    helper, tp = onnx.helper, onnx.TensorProto
    state_shape = [layers, "batch", hidden]
    inputs = [helper.make_tensor_value_info("ids", tp.INT64, ["batch"]),
              helper.make_tensor_value_info("h", tp.FLOAT, state_shape)]
    outputs = [helper.make_tensor_value_info("logits", tp.FLOAT, ["batch", config.vocab_size]),
               helper.make_tensor_value_info("h_out", tp.FLOAT, state_shape)]
    if lstm:
        inputs.append(helper.make_tensor_value_info("c", tp.FLOAT, state_shape))
        outputs.append(helper.make_tensor_value_info("c_out", tp.FLOAT, state_shape))
    graph = helper.make_graph(g.nodes, f"charrnn_{cell}_step", inputs, outputs, g.initializers)
    model = helper.make_model(graph, producer_name="charrnn", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime 1.16 and later
    helper.set_model_props(model, metadata(ckpt))
    onnx.checker.check_model(model)
    return model


def metadata(ckpt: Checkpoint) -> dict[str, str]:
    """What a runtime needs to turn ids into text and back, as the model's string properties."""
    config = ckpt.model_config
    vocab = ckpt.vocab
    return {
        "charrnn_version": __version__,
        "vocabulary": json.dumps(vocab.chars, ensure_ascii=False),
        "marker_id": json.dumps(vocab.marker_id),  # "null" for a stream model
        "record_separator": json.dumps(ckpt.record_separator),
        "default_prime": json.dumps("\n" if "\n" in vocab else vocab.chars[0]),
        "cell": config.cell,
        "layers": str(config.layers),
        "hidden": str(config.hidden),
        "vocab_size": str(config.vocab_size),
        "inputs": "ids [batch] int64; h" + (", c" if config.cell == "lstm" else "")
                  + " [layers, batch, hidden] float32",
    }


def serialize(ckpt: Checkpoint) -> bytes:
    return build_model(ckpt).SerializeToString()
