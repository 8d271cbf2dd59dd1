"""Generated ids as text (charrnn/generation/writer.py): one sample's pieces as they come, several
samples' texts, each ending once it has generated its stop string."""

from charrnn.generation.writer import sample_pieces, sample_texts

CHARS = ["\n", " ", ".", "a", "b"]


def steps(*rows: str) -> list[list[int]]:
    """Sampler.generate's items (the next id of every sample) for samples written as strings."""
    return [[CHARS.index(c) for c in column] for column in zip(*rows)]


def test_one_sample_streams_the_prime_then_each_character():
    pieces = list(sample_pieces(steps("ab. ba"), CHARS, "ROMEO:", None))
    assert pieces == ["ROMEO:", "a", "b", ".", " ", "b", "a"]
    assert list(sample_pieces(steps("ab"), CHARS, "", None)) == ["a", "b"]  # an unshown prime yields nothing


def test_one_sample_ends_once_it_has_generated_the_stop_string():
    assert "".join(sample_pieces(steps("ab. ba. a"), CHARS, "", ". ")) == "ab. "
    assert "".join(sample_pieces(steps("ab"), CHARS, "", "..")) == "ab"  # never met: the whole length
    # The prime is not searched: only generated text stops a sample.
    assert "".join(sample_pieces(steps("a."), CHARS, "x.", ".")) == "x.a."


def test_reading_stops_at_the_stop_string_without_drawing_further():
    drawn = []

    def generated():
        for item in steps("a.bbbb"):
            drawn.append(item)
            yield item

    assert "".join(sample_pieces(generated(), CHARS, "", ".")) == "a."
    assert len(drawn) == 2


def test_several_samples_each_end_at_their_own_stop_and_keep_the_prime():
    texts = sample_texts(steps("ab.ab", "b.aaa", "aaaaa"), CHARS, "> ", ".", 3)
    assert texts == ["> ab.", "> b.", "> aaaaa"]
    assert sample_texts(steps("ab", "ba"), CHARS, "", None, 2) == ["ab", "ba"]
