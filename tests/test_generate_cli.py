"""`python -m faststar generate` on the tiny reference models."""

import subprocess
import sys

import numpy as np
import pytest

from faststar.video_io import read_video

from .conftest import REPO_ROOT
from .test_text_encoder import build_tokenizer, tiny_t5_config


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory, manifest):
    """A random T5 whose width matches the tiny transformer's text channels."""
    from transformers import T5EncoderModel

    folder = tmp_path_factory.mktemp("t5")
    config = tiny_t5_config(build_tokenizer(folder))
    config.d_model = manifest["files"]["tiny_transformer.safetensors"]["constructor_kwargs"]["text_channels"]
    T5EncoderModel(config).save_pretrained(folder)
    return folder


def run_generate(ref_dir, t5, output, *extra):
    command = [sys.executable, "-m", "faststar", "generate", "--prompt", "a red circle moving right",
               "--output", str(output), "--model", str(ref_dir / "tiny_transformer.safetensors"),
               "--vae", str(ref_dir / "tiny_vae.safetensors"), "--text-encoder", str(t5),
               "--resolution", "tiny", "--device", "cpu", *extra]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_generate_writes_video_and_compares(ref_dir, tiny_t5, tmp_path):
    output = tmp_path / "tiny.mp4"

    done = run_generate(ref_dir, tiny_t5, output, "--compare-dense", "--seed", "3")

    assert done.returncode == 0, done.stderr
    frames, fps = read_video(output)
    assert frames.shape[0] == 17
    assert frames.std() > 1.0
    assert "FLOP-model speedup" in done.stdout
    psnr = float(done.stdout.split("PSNR ")[1].split(" dB")[0])
    assert 0 < psnr < 100


def test_generate_refuses_existing_output(ref_dir, tiny_t5, tmp_path):
    output = tmp_path / "taken.mp4"
    output.write_bytes(b"keep")

    done = run_generate(ref_dir, tiny_t5, output)

    assert done.returncode == 2
    assert "already exists" in done.stderr
    assert output.read_bytes() == b"keep"


@pytest.mark.parametrize("option, value, message", [
    ("--frames", "20", "video_frames=20"),
    ("--frames", "0", "video_frames=0"),
    ("--device", "tpu", "tpu"),
])
def test_generate_rejects_bad_options(ref_dir, tiny_t5, tmp_path, option, value, message):
    done = run_generate(ref_dir, tiny_t5, tmp_path / "x.mp4", option, value)

    assert done.returncode == 2
    assert message in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_generate_rejects_unknown_extension_early(ref_dir, tiny_t5, tmp_path):
    done = run_generate(ref_dir, tiny_t5, tmp_path / "x.avi")

    assert done.returncode == 2
    assert ".mp4" in done.stderr
