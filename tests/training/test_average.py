import pytest
import torch

from charrnn.model import CharRNN, ModelConfig
from charrnn.training.average import WeightAverage


def test_average_moves_towards_the_trained_weights_by_the_warmed_up_decay():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=7, layers=1, hidden=8))
    average = WeightAverage(model, decay=0.995)
    assert not average.model.training and not any(p.requires_grad for p in average.model.parameters())
    start = [p.detach().clone() for p in average.model.parameters()]

    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(model, step=1)
    # At step 1 the decay is 2/11: the average spans the steps so far, not 200 of them.
    assert average.decay_at(1) == pytest.approx(2 / 11)
    for a, s, p in zip(average.model.parameters(), start, model.parameters()):
        torch.testing.assert_close(a, s + (p - s) * (9 / 11))

    assert average.decay_at(10_000) == 0.995
    assert average.decay_at(1780) < 0.995 == average.decay_at(1800)
    with pytest.raises(ValueError):
        WeightAverage(model, decay=1.0)
