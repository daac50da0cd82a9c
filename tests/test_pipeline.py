"""The generate() entry point on the tiny reference model."""

import pytest
import torch

from faststar.pipeline import GenerationSettings, generate, plan_generation

from .reference import load_tensors, tiny_transformer


@pytest.fixture(scope="module")
def model(ref_dir, manifest):
    return tiny_transformer(ref_dir, manifest)


@pytest.fixture(scope="module")
def text_features(ref_dir):
    return load_tensors(ref_dir, "tiny_transformer_inputs.safetensors")["text_features"]


def test_tiny_preset_reproduces_reference_run(model, text_features, ref_dir, manifest):
    run = manifest["files"]["tiny_run_apg_sampled.safetensors"]
    expected = load_tensors(ref_dir, "tiny_run_apg_sampled.safetensors")
    frames = 4 * (expected["summed_codes"].shape[2] - 1) + 1

    result = generate(model, text_features, GenerationSettings("tiny", frames, seed=run["g_seed"]))

    assert [list(s) for s in result.plan.schedule] == run["scale_schedule"]
    assert torch.equal(result.codes, expected["summed_codes"])
    assert len(result.stats) == len(run["steps"])
    assert all(s.kept == s.tokens for s in result.stats)


def test_image_only_generation(model, text_features):
    result = generate(model, text_features, GenerationSettings("tiny", 1))

    assert result.codes.shape[2] == 1
    assert all(s.clip == 0 for s in result.stats)


@pytest.mark.parametrize("frames", [2, 16, 33])
def test_unsupported_frame_counts_rejected(frames):
    with pytest.raises(ValueError, match=str(frames)):
        plan_generation(GenerationSettings("tiny", frames))


def test_unknown_preset_rejected():
    with pytest.raises(ValueError, match="1080p"):
        plan_generation(GenerationSettings("1080p", 81))


def test_cancel_from_callback_stops_run(model, text_features):
    seen = []

    def cancel_after_three(record):
        seen.append(record.step.step)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(model, text_features, GenerationSettings("tiny", 17), callback=cancel_after_three)
    assert seen == [0, 1, 2]
