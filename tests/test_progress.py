"""Progress output: a tqdm bar on a terminal, plain lines otherwise, never stdout."""

import io

from charrnn.progress import TrainingProgress, byte_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_time_bounded_run_gets_an_estimated_total():
    screen = Terminal()
    progress = TrainingProgress(None, 0, quiet=False, stream=screen)
    progress.update(50, {"loss": 2.0}, fraction=0.25)
    assert progress.bar.total == 200
    progress.update(100, {"loss": 1.5}, fraction=0.4)
    assert progress.bar.total == 250 and progress.bar.n == 100
    progress.close()
    assert "100/250" in screen.getvalue()


def test_known_total_is_kept_and_pipes_get_plain_lines():
    progress = TrainingProgress(300, 0, quiet=False, stream=Terminal())
    progress.update(30, {"loss": 2.0}, fraction=0.5)
    assert progress.bar.total == 300
    progress.close()
    log = io.StringIO()
    plain = TrainingProgress(None, 0, quiet=False, stream=log)
    plain.update(7, {"loss": 2.0}, force_line=True, fraction=0.5)
    assert plain.bar is None and log.getvalue() == "step 7 | loss 2.0000\n"


def test_byte_bars_only_on_a_terminal():
    with byte_bar(10, "encoding", quiet=False, stream=io.StringIO()) as bar:
        assert bar.disable
    screen = Terminal()
    with byte_bar(2048, "encoding", quiet=False, stream=screen) as bar:
        bar.update(2048)
    assert "encoding" in screen.getvalue() and "2.00k" in screen.getvalue()
