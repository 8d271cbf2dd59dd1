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
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=5, weight_drop=1.0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_weight_drop_masks_the_recurrent_weights_in_training_only(cell):
    torch.manual_seed(2)
    model = CharRNN(ModelConfig(vocab_size=10, cell=cell, layers=2, hidden=16, dropout=0.0, weight_drop=0.5))
    plain = CharRNN(ModelConfig(vocab_size=10, cell=cell, layers=2, hidden=16, dropout=0.0))
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(0, 10, (3, 12))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids)[0], plain.eval()(ids)[0])
        model.train()
        first, second = model(ids)[0], model(ids)[0]
        assert not torch.allclose(first, plain.train()(ids)[0]) and not torch.allclose(first, second)

    # One mask per call, shared by every time step: a dropped weight gets no gradient at all,
    # and the parameters themselves are unchanged by the forward pass.
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(ids)[0].square().sum().backward()
    for name in model.recurrent_weight_names:
        grad = getattr(model.core, name).grad
        assert 0.3 < (grad == 0).float().mean() < 0.7
        assert torch.equal(getattr(model.core, name), before[f"core.{name}"])
    assert all((getattr(model.core, f"weight_ih_l{k}").grad != 0).float().mean() > 0.9 for k in range(2))
