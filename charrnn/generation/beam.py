"""Beam search: the most likely continuations of a prefix under a CharRNN.

Two modes. A stream model continues its prefix by exactly `length` ids, and the search
returns the `width` likeliest such continuations. A record model (makemore's convention:
the vocabulary's last id is START as an input and END as a target) is searched for the
`width` likeliest COMPLETE records, those the model ends by emitting `end_id`.

All live beams step together as one batch of the fused model, one time step per call; each
step keeps the `width` best extensions and gathers their parents' state rows. Log-probs are
log_softmax in fp32 (in float64 for a float64 model), summed in float64, so a beam's score is
its sequence's score as one pass of the model over it gives it, to the model's precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..model import CharRNN, State, evaluating


@dataclass(frozen=True)
class Beam:
    """One result: the ids generated after the prefix (without the END id) and the natural
    log-probability of those ids, and of END for a record, given the prefix."""

    ids: list[int]
    log_prob: float


def beam_search(model: CharRNN, prefix: list[int], width: int, length: int, end_id: int | None = None,
                temperature: float = 1.0) -> list[Beam]:
    """The `width` likeliest continuations of `prefix`, best first.

    prefix: the ids the model reads first, from a zero state: the prime for a stream model,
        [START] + the prime for a record model. Not empty.
    end_id None (stream): every result has exactly `length` ids.
    end_id given (records): every result is a complete record whose END came within the cap:
        at most `length` ids BEFORE the END (END does not count), so an empty record, END
        right after the prefix, is one of them. Fewer than `width` results when fewer complete
        records exist within the cap. The search stops early once no live beam can beat the
        worst kept record, since log-probs only fall as a beam grows.
    temperature: divides the logits before log_softmax; 1 scores under the model's own
        distribution.

    Ties between equal scores fall to the earlier beam, then to the lower id, so results are
    reproducible. The model runs in eval mode under no_grad (its mode is restored after) on
    the device of its parameters.
    """
    _check_arguments(model, prefix, width, length, end_id, temperature)
    with evaluating(model), torch.no_grad():
        return _search(model, prefix, width, length, end_id, temperature)


def _check_arguments(model: CharRNN, prefix: list[int], width: int, length: int, end_id: int | None,
                     temperature: float) -> None:
    vocab = model.config.vocab_size
    if not prefix:
        raise ValueError("beam search needs a prefix of at least one id (a prime, or START for records)")
    if any(not 0 <= i < vocab for i in prefix):
        raise ValueError(f"prefix ids must lie in [0, {vocab})")
    if end_id is not None and not 0 <= end_id < vocab:
        raise ValueError(f"end_id must lie in [0, {vocab})")
    if width < 1:
        raise ValueError("beam width must be >= 1")
    if length < 0:
        raise ValueError("length must be >= 0")
    if not temperature > 0:  # also rejects NaN
        raise ValueError("beam search needs a temperature > 0")


def _search(model: CharRNN, prefix: list[int], width: int, length: int, end_id: int | None,
            temperature: float) -> list[Beam]:
    logits, state = _prime(model, prefix)
    live: list[list[int]] = [[]]
    scores = torch.zeros(1, dtype=torch.float64, device=logits.device)
    finished: list[Beam] = []
    # A record may end at any step up to and including the one after its `length`-th id.
    steps = length if end_id is None else length + 1
    for t in range(steps):
        candidates = scores[:, None] + _log_probs(logits, temperature)
        floor = float("-inf")
        if end_id is not None:
            finished = _best(finished + _ended(live, candidates[:, end_id]), width)
            candidates[:, end_id] = float("-inf")  # END finishes a beam; it never extends one
            if t == length:
                break
            if len(finished) == width:
                floor = finished[-1].log_prob  # nothing below the worst kept record can enter
        parents, tokens, scores = _select(candidates, width, floor)
        live = [live[p] + [v] for p, v in zip(parents.tolist(), tokens.tolist())]
        if not live:
            break
        if t + 1 < steps:
            logits, state = _advance(model, tokens, tuple(s[:, parents] for s in state))
    if end_id is None:
        return [Beam(ids, score) for ids, score in zip(live, scores.tolist())]
    return finished


def _prime(model: CharRNN, prefix: list[int]) -> tuple[torch.Tensor, State]:
    """The prefix through the fused model once: the next id's logits [1, vocab] and the state."""
    ids = torch.tensor([prefix], dtype=torch.long, device=model.head.weight.device)
    logits, state = model(ids)  # no state: the core's zeros, in the model's own dtype
    return logits[:, -1], state


def _advance(model: CharRNN, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
    """Every live beam's last id through the model as one batch of one time step."""
    logits, state = model(tokens[:, None], state)
    return logits[:, 0], state


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """[beams, vocab] log-probs in float64, from a log_softmax in fp32 (or the model's dtype if wider)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature != 1:
        # Shifting the maximum to 0 first keeps a tiny temperature from overflowing to NaN.
        logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    return F.log_softmax(logits, dim=-1).double()


def _select(candidates: torch.Tensor, width: int, floor: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best `width` of the [beams, vocab] extension scores that are possible (finite) and
    not below `floor`: their parent rows, their ids and their scores, best first."""
    flat = candidates.flatten()
    # A stable sort keeps ties in (parent, id) order, parents being ranked already.
    order = torch.sort(flat, descending=True, stable=True).indices[:width]
    order = order[(flat[order] > float("-inf")) & (flat[order] >= floor)]
    vocab = candidates.size(1)
    return order // vocab, order % vocab, flat[order]


def _ended(live: list[list[int]], end_scores: torch.Tensor) -> list[Beam]:
    """The records that END completes now, one per live beam where END is possible."""
    return [Beam(ids, score) for ids, score in zip(live, end_scores.tolist()) if score > float("-inf")]


def _best(records: list[Beam], width: int) -> list[Beam]:
    # Python's sort is stable: of equal scores the record found earlier (the shorter) stays first.
    return sorted(records, key=lambda beam: -beam.log_prob)[:width]
