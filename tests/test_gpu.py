"""GPU paths: run where CUDA is present (a lent GPU machine), skipped on CPU-only CI."""

import json

import pytest
import torch
from click.testing import CliRunner

from charrnn import checkpoint
from charrnn.cli import cli

from .helpers import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_train_on_gpu_then_resume_sample_and_eval_on_cpu(tmp_path, corpus_file):
    ckpt = tmp_path / "ck"
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", str(corpus_file), "--device", "cuda", "--checkpoint-dir", str(ckpt),
                                  "--max-steps", "30", "--eval-every", "15", "-q", *TINY])
    assert trained.exit_code == 0, trained.output
    data = torch.load(ckpt / "latest.pt", weights_only=True)  # plain load, no map_location needed
    assert all(t.device.type == "cpu" for t in data["model"].values())

    resumed = runner.invoke(cli, ["train", str(corpus_file), "--device", "cpu", "--checkpoint-dir", str(ckpt),
                                  "--resume", "--max-steps", "40", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.load(ckpt / "latest.pt").data["step"] == 40

    sample = runner.invoke(cli, ["sample", "--checkpoint-dir", str(ckpt), "--length", "50", "--seed", "0"])
    assert sample.exit_code == 0 and len(sample.stdout) >= 50
    gpu_eval = json.loads(runner.invoke(cli, ["eval", str(corpus_file), "--checkpoint-dir", str(ckpt), "--json",
                                              "--device", "cuda"]).stdout)
    cpu_eval = json.loads(runner.invoke(cli, ["eval", str(corpus_file), "--checkpoint-dir", str(ckpt), "--json",
                                              "--device", "cpu", "--precision", "fp32"]).stdout)
    # bf16 autocast on the GPU: close to the float32 CPU figure, not equal.
    assert gpu_eval["loss"] == pytest.approx(cpu_eval["loss"], abs=0.05)


def test_cpu_checkpoint_resumes_on_gpu(tmp_path, corpus_file):
    ckpt = tmp_path / "ck"
    runner = CliRunner()
    first = runner.invoke(cli, ["train", str(corpus_file), "--device", "cpu", "--checkpoint-dir", str(ckpt),
                                "--max-steps", "10", "-q", *TINY])
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(cli, ["train", str(corpus_file), "--device", "cuda", "--checkpoint-dir", str(ckpt),
                                  "--resume", "--max-steps", "20", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.load(ckpt).data["step"] == 20


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpu_nccl_run_matches_one_gpu(tmp_path):
    """The README's torchrun command as it runs on GPUs: NCCL, one rank per device. bf16
    autocast makes the two runs close rather than equal."""
    from .helpers import make_corpus, run_charrnn
    from .test_distributed import RUN, final, torchrun

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_corpus(20_000), encoding="utf-8")
    on_gpus = [{"cpu": "cuda", "fp32": "auto"}.get(a, a) for a in RUN]
    torchrun(2, "train", str(corpus), "--checkpoint-dir", "two", "--max-steps", "12", *on_gpus, cwd=tmp_path)
    run_charrnn("train", str(corpus), "--checkpoint-dir", "one", "--max-steps", "12", *on_gpus, cwd=tmp_path)
    (two, _), (one, _) = final(tmp_path / "two"), final(tmp_path / "one")
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=0.02)
