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


@pytest.fixture(scope="module")
def vae(ref_dir):
    from faststar.vae import InfinityStarVAE

    return InfinityStarVAE.from_state_dict(load_tensors(ref_dir, "tiny_vae.safetensors")).eval()


def test_image_to_video_teacher_forces_first_frame(model, vae, text_features):
    from faststar.codes import bits_to_codes, upsample_codes
    from faststar.conditioning import encode_gt_bits

    plan = plan_generation(GenerationSettings("tiny", 17))
    height, width = (16 * n for n in plan.schedule[-1][1:])
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(5)) * 2 - 1

    result = generate(model, text_features, GenerationSettings("tiny", 17), vae=vae, image=image)

    latent = vae.encode_raw_features(image[:, :, None])
    image_scales = plan.first_full_spatial_size_scale_index + 1
    gt = encode_gt_bits(latent, plan.steps, image_scales)
    rebuilt = torch.zeros_like(latent)
    for bits in gt:
        if bits is not None:
            rebuilt += upsample_codes(bits_to_codes(bits), tuple(rebuilt.shape[1:]))
    assert torch.equal(result.codes[:, :, :1], rebuilt)


def test_image_of_wrong_size_rejected(model, vae, text_features):
    image = torch.zeros(1, 3, 64, 64)

    with pytest.raises(ValueError, match="64x64"):
        generate(model, text_features, GenerationSettings("tiny", 17), vae=vae, image=image)


def test_video_continuation_keeps_input_clips(model, vae, text_features):
    plan = plan_generation(GenerationSettings("tiny", 17))
    height, width = (16 * n for n in plan.schedule[-1][1:])
    video = torch.rand(1, 3, 9, height, width, generator=torch.Generator().manual_seed(6)) * 2 - 1

    result = generate(model, text_features, GenerationSettings("tiny", 17), vae=vae, video=video,
                      keep_records=True)

    latent_frames = 1 + (video.shape[2] - 1) // 4
    teacher = [r for r in result.records if r.teacher_forced]
    assert teacher and all(r.step.frame_end <= latent_frames for r in teacher)
    assert any(not r.teacher_forced for r in result.records)


def test_preset_for_checkpoint(model):
    from faststar.model import TransformerConfig
    from faststar.pipeline import preset_for_checkpoint

    assert preset_for_checkpoint(model.config) == "tiny"
    assert preset_for_checkpoint(TransformerConfig(), "480p") == "480p"
    assert preset_for_checkpoint(TransformerConfig()) is None
