import pytest
import torch

from charrnn.model import CharRNN, ModelConfig, StepCell


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch", [1, 3])
def test_step_cell_matches_fused_forward(cell, batch):
    """The hand-written sampling step gives the fused core's next-char distribution to 1e-5."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=23, cell=cell, layers=3, hidden=24)).eval()
    ids = torch.randint(0, 23, (batch, 50))
    with torch.no_grad():
        ref, ref_state = model(ids)
        step = StepCell(model)
        states = step.layer_states(model.initial_state(batch))
        logits = []
        for t in range(ids.size(1)):
            out, states = step.step(ids[:, t].tolist(), states)
            logits.append(out)
        got = torch.stack(logits, 1)
    assert torch.allclose(got.softmax(-1), ref.softmax(-1), atol=1e-5)
    assert torch.allclose(got, ref, atol=1e-5)
    for a, b in zip(step.model_state(states), ref_state):
        assert torch.allclose(a, b, atol=1e-5)


def test_state_carry_equals_one_long_pass():
    torch.manual_seed(1)
    model = CharRNN(ModelConfig(vocab_size=10, layers=2, hidden=16)).eval()
    ids = torch.randint(0, 10, (2, 40))
    with torch.no_grad():
        whole, _ = model(ids)
        a, state = model(ids[:, :25])
        b, _ = model(ids[:, 25:], state)
    assert torch.allclose(torch.cat([a, b], 1), whole, atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=5, cell="transformer")
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=5, dropout=1.0)
