import pytest
import torch

from charrnn.generation.steppers import LSTMStep, step_cell
from charrnn.model import CharRNN, ModelConfig

from ..helpers import assert_step_matches_fused, torch_threads


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch", [1, 3])
def test_step_matches_fused_forward(cell, batch, threads):
    """The hand-written sampling step gives the fused core's next-char distribution to 1e-5,
    from a carried-in state, with and without the two-thread split of one stream."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=23, cell=cell, layers=3, hidden=24)).eval()
    assert_step_matches_fused(model, step_cell, batch, threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
def test_lstm_tensor_step_without_the_c_library_matches_fused_forward(batch, threads):
    """The LSTM tensor step as it runs where no C compiler is: gates by tensor operations."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=23, layers=3, hidden=24)).eval()
    assert_step_matches_fused(model, lambda m, b: LSTMStep(m, b, library=None), batch, threads)


def test_one_lstm_stream_splits_its_product_across_threads():
    model = CharRNN(ModelConfig(vocab_size=5, hidden=8)).eval()
    with torch_threads(2):
        assert LSTMStep(model, 1).split == 2 and LSTMStep(model, 4).split == 1
    with torch_threads(1):
        assert LSTMStep(model, 1).split == 1
