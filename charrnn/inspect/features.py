"""The cell search: features of a text (inside quotes, inside brackets, the position in a line,
indentation, line starts, capitals, or any regex) and the units of a `Trace` that track them
best, by correlation. `charrnn viz` ranks them on its page; notebooks call `rank_units`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .trace import STATE_KINDS, Trace

OPENERS, CLOSERS = "([{", ")]}"


BUILTIN_FEATURES = ("inside quotes", "inside brackets", "position in line", "indentation depth",
                    "start of line", "capital letter")


def builtin_features(text: str) -> dict[str, torch.Tensor]:
    """The built-in features of each character, float32 [T] each, as the model could know them
    after reading it: inside a "double-quoted" stretch (the opening quote in, the closing one
    out), inside brackets, the column in the line, the line's indentation (leading spaces, a
    tab as 4), the first character of a line, a capital letter."""
    n = len(text)
    quotes, brackets, column, indent, starts, capitals = ([0.0] * n for _ in range(6))
    inside = False
    depth = col = line_indent = 0
    leading = True
    for t, char in enumerate(text):
        if char == '"':
            inside = not inside
        if char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            depth = max(0, depth - 1)
        starts[t] = 1.0 if col == 0 else 0.0
        if char == "\n":
            col, line_indent, leading = 0, 0, True
        else:
            if leading and char in " \t":
                line_indent += 4 if char == "\t" else 1
            else:
                leading = False
            col += 1
        quotes[t] = float(inside)
        brackets[t] = float(depth > 0)
        column[t] = float(col)
        indent[t] = float(line_indent)
        capitals[t] = float(char.isupper())
    values = (quotes, brackets, column, indent, starts, capitals)
    return {name: torch.tensor(v) for name, v in zip(BUILTIN_FEATURES, values)}


def regex_feature(text: str, pattern: str | re.Pattern) -> torch.Tensor:
    """1 for every character a match of `pattern` covers, else 0: float32 [T]."""
    values = torch.zeros(len(text))
    for match in re.finditer(pattern, text):
        values[match.start():match.end()] = 1.0
    return values


@dataclass(frozen=True)
class UnitScore:
    """How well one unit tracks a feature: Pearson's correlation over the text's characters
    (its sign says whether the unit rises or falls with the feature)."""

    layer: int
    kind: str
    unit: int
    score: float


def rank_units(result: Trace, features: Mapping[str, torch.Tensor], top: int = 5,
               kinds: tuple[str, ...] | None = None) -> dict[str, list[UnitScore]]:
    """For each feature, the `top` units whose activations correlate with it most strongly
    (by |r|), best first; [] for a feature that is constant over the text. `kinds` defaults to
    the cell's state (c and h for an LSTM, h otherwise)."""
    kinds = kinds or STATE_KINDS[result.cell]
    columns, names = [], []
    for layer, values in enumerate(result.layers):
        for kind in kinds:
            columns.append(values[kind])
            names.extend((layer, kind, unit) for unit in range(values[kind].size(1)))
    acts = _standardised(torch.cat(columns, dim=1).double())
    ranked: dict[str, list[UnitScore]] = {}
    for name, feature in features.items():
        f = feature.double()
        if len(f) != acts.size(0):
            raise ValueError(f"feature {name!r} has {len(f)} values for a text of {acts.size(0)} characters")
        if len(f) < 2 or float(f.std()) == 0.0:
            ranked[name] = []
            continue
        corr = acts.t() @ _standardised(f[:, None]).squeeze(1) / len(f)
        order = corr.abs().argsort(descending=True)[:top].tolist()
        ranked[name] = [UnitScore(*names[i], score=float(corr[i])) for i in order]
    return ranked


def _standardised(x: torch.Tensor) -> torch.Tensor:
    """Columns centred and scaled to unit variance; a constant column becomes zeros."""
    x = x - x.mean(0, keepdim=True)
    std = x.pow(2).mean(0, keepdim=True).sqrt()
    return x / torch.where(std > 0, std, torch.ones_like(std))
