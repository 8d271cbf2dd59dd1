import pytest
import torch

from charrnn.model import CharRNN, ModelConfig


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
