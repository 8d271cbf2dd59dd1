"""`charrnn export` on the command line: the page and the ONNX file through the Python API's
Model.export, and the one-line errors that leave nothing behind."""

import pytest

from ..helpers import invoke, one_line_error


def test_export_writes_the_page_and_reports_it(trained_dir, tmp_path):
    out = tmp_path / "model.html"
    result = invoke("export", "--checkpoint", trained_dir, "-o", out, "--title", "Tiny")
    assert result.exit_code == 0 and result.stdout == "", result.output
    assert f"wrote {out}" in result.stderr and "html of a lstm 1x32" in result.stderr
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>Tiny</title>" in page


def test_export_writes_onnx(trained_dir, tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'charrnn[onnx]')")
    out = tmp_path / "model.onnx"
    result = invoke("export", "--checkpoint", trained_dir, "-o", out, "-q")
    assert result.exit_code == 0 and result.output == "" and out.stat().st_size > 1000


@pytest.mark.parametrize("name, message", [
    ("model.txt", "unknown export format '.txt'"),
    ("a_file/model.html", "cannot write"),
])
def test_export_errors_are_one_line_and_leave_nothing(trained_dir, tmp_path, name, message):
    (tmp_path / "a_file").write_text("not a folder")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("export", "--checkpoint", trained_dir, "-o", tmp_path / name)
    assert result.exit_code == 1 and message in one_line_error(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_export_of_a_missing_checkpoint_is_samples_error(tmp_path):
    as_export = invoke("export", "--checkpoint", tmp_path / "none", "-o", tmp_path / "m.html")
    as_sample = invoke("sample", "--checkpoint", tmp_path / "none")
    assert as_export.exit_code == as_sample.exit_code != 0 and as_export.stderr == as_sample.stderr
