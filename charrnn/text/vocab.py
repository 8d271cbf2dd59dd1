"""Character vocabulary: the sorted set of Unicode characters in a corpus."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..errors import CharrnnError


class Vocabulary:
    """Maps characters to integer ids and back. Ids follow sorted character order.

    A record model's vocabulary also has a marker, one id past the characters, which means
    START as an input and END as a target (records.py); `len` counts it.
    """

    def __init__(self, chars: Iterable[str], marker: bool = False):
        self.chars: list[str] = sorted(set(chars))
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("vocabulary entries must be single characters")
        self.index: dict[str, int] = {c: i for i, c in enumerate(self.chars)}
        self.marker_id: int | None = len(self.chars) if marker else None

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls(set(text))

    def __len__(self) -> int:
        return len(self.chars) + (self.marker_id is not None)

    def __contains__(self, char: str) -> bool:
        return char in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and (self.chars, self.marker_id) == (other.chars, other.marker_id)

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` that are not in the vocabulary, sorted."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text: Iterable[str]) -> torch.Tensor:
        """`text` (or any sequence of characters, such as another vocabulary's: its renumbering
        into this one) as int64 ids, for texts held in memory. Corpora are encoded by tokens.py
        instead, streamed to files of the narrowest width."""
        index = self.index
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The text of `ids` (a marker is left out). Public API on purpose: the Python API turns
        ids back into text with it (the CLI's sampler writes characters as it draws them)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        chars = self.chars
        return "".join(chars[i] for i in ids if i != self.marker_id)


def known_text(text: str, allowed: set[str], skip_unknown: bool) -> tuple[str, int]:
    """`text` in the characters a model can read (`allowed`), and how many others were dropped:
    with `skip_unknown`; else they are an `unknown_characters` error."""
    kept = "".join(c for c in text if c in allowed)
    if len(kept) < len(text) and not skip_unknown:
        raise unknown_characters(sorted(set(text) - allowed))
    return kept, len(text) - len(kept)


def unknown_characters(unknown: Sequence[str], skip_option: bool = True) -> CharrnnError:
    """The one error for text (a file, stdin or a str) with characters a model never saw; it
    names --skip-unknown where the command has it (`skip_option`)."""
    hint = " (--skip-unknown drops them)" if skip_option else ""
    return CharrnnError(f"the text has {len(unknown)} characters outside the model's vocabulary: "
                        f"{escape_chars(unknown, limit=20)}{hint}")


def escape_chars(chars: Iterable[str], limit: int | None = None) -> str:
    """Printable rendering of characters, e.g. for error messages: 'a', '\\n', '\\x00'.

    With `limit`, shows that many and counts the rest ("a b and 12 more").
    """
    chars = list(chars)
    shown = chars if limit is None else chars[:limit]
    text = " ".join(repr(c)[1:-1] if c != " " else "' '" for c in shown)
    return text + (f" and {len(chars) - len(shown)} more" if len(shown) < len(chars) else "")
