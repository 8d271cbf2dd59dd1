"""The C libraries' interface as Python sees it: the constants and the struct layout that the C
sources declare. build.py checks each against the library's own report when it loads one, so a
mismatch leaves charrnn on its PyTorch paths instead of corrupting memory."""

from __future__ import annotations

import ctypes

# Raised with the C files' ABI_VERSION whenever a function's arguments change.
STEP_ABI_VERSION, AMX_ABI_VERSION, VECTOR_ABI_VERSION = 1, 1, 1

# lstm_step.c (sampling): hidden units per work item, and the blocks its weights are packed in.
STEP_BLOCK = 16

# lstm_amx.c and lstm_vector.c (training): the tile constants.
UNIT_BLOCK = 16  # hidden units a thread takes at a time, and columns of a packed block of W
BATCH_MULTIPLE, HIDDEN_MULTIPLE = 16, 32  # rows of a tile; bf16 values of K per tile
OUT_OF_MEMORY, UNSUPPORTED_SHAPE = -1, -2  # the training kernels' return codes besides 0


class LstmStepStruct(ctypes.Structure):
    """lstm_step.c's struct charrnn_lstm: the packed weights and the buffers of one stream."""

    _fields_ = [(name, ctypes.c_int) for name in ("layers", "hidden", "vocab", "padded_vocab", "threads")] + [
        ("table", ctypes.c_void_p),
        ("weights", ctypes.POINTER(ctypes.c_void_p)),
        ("biases", ctypes.POINTER(ctypes.c_void_p)),
        ("head_w", ctypes.c_void_p),
        ("head_b", ctypes.c_void_p),
        ("h", ctypes.c_void_p * 2),
        ("c", ctypes.c_void_p),
        ("logits", ctypes.c_void_p),
    ]
