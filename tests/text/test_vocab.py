import torch

from charrnn.text.vocab import Vocabulary, escape_chars


def test_round_trip_any_script():
    text = "Hello, мир! 你好 🙂 naïve\tcafé\n"
    vocab = Vocabulary.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.chars == sorted(set(text))
    assert len(vocab) == len(set(text))


def test_ids_follow_sorted_order_as_int64():
    vocab = Vocabulary.from_text("cab")
    assert vocab.encode("abc").tolist() == [0, 1, 2]
    assert vocab.encode("abc").dtype == torch.int64
    big = Vocabulary(chr(0x10000 + i) for i in range(70_000))  # past any 16-bit width
    assert big.encode(big.chars[-1]).tolist() == [69_999]


def test_unknown_and_escape():
    vocab = Vocabulary.from_text("abc")
    assert vocab.unknown("abxyzx") == ["x", "y", "z"] and vocab.unknown("cab") == []
    assert escape_chars(["\n", " ", "a", "\x00"]) == "\\n ' ' a \\x00"


def test_escape_with_limit_counts_the_rest():
    assert escape_chars("abcde", limit=2) == "a b and 3 more"
    assert escape_chars("ab", limit=2) == "a b"
