"""Parity of ground-truth bit encoding (I2V/V2V) and the interactive mode with the reference."""

import pytest
import torch

from faststar.codes import flatten_tokens
from faststar.conditioning import InteractiveConditionSpec, encode_gt_bits, interactive_conditions, next_former
from faststar.rope import visual_positions

from .reference import load_tensors, run_steps, tiny_transformer
from .test_parity_schedules import _as_scales, _interact_context, _interact_settings


def test_gt_bits_match_reference(ref_dir, manifest):
    run = manifest["files"]["tiny_run_apg_teacher_forced.safetensors"]
    expected = load_tensors(ref_dir, "i2v_bits.safetensors")
    steps = run_steps(run)

    bits = encode_gt_bits(expected["latent"], steps, leak_scales=len(run["scale_schedule"]))

    assert len(bits) == len(steps)
    for k, labels in enumerate(bits):
        assert torch.equal(labels, expected[f"gt_bits.{k:02d}"]), f"gt_bits.{k:02d}"


def test_gt_bits_stop_at_leak(ref_dir, manifest):
    """Image-to-video leaks only the image pyramid: later steps get no bits."""
    run = manifest["files"]["tiny_run_apg_teacher_forced.safetensors"]
    latent = load_tensors(ref_dir, "i2v_bits.safetensors")["latent"]
    steps = run_steps(run)
    image_scales = run["first_full_spatial_size_scale_index"] + 1

    bits = encode_gt_bits(latent[:, :, :1], steps, leak_scales=image_scales)

    assert all((b is not None) == (s.si < image_scales) for b, s in zip(bits, steps))


@pytest.fixture(scope="module")
def interact(manifest):
    return manifest["files"]["tiny_run_interact.safetensors"]


def test_interactive_segments_match_reference(ref_dir, manifest, interact):
    from faststar.pipeline import generate_segment
    from faststar.schedules import SchedulePlan

    tensors = load_tensors(ref_dir, "tiny_run_interact.safetensors")
    model = tiny_transformer(ref_dir, manifest)
    schedule = _as_scales(interact["scale_schedule"])
    settings = _interact_settings(manifest, interact)
    plan = SchedulePlan(schedule, settings, interact["first_full_spatial_size_scale_index"],
                        _interact_context(manifest, interact), run_steps_interactive(manifest, interact))
    spec = InteractiveConditionSpec(schedule[interact["semantic_scale_ind"]][1:],
                                    tuple(interact["detail_frame_inds"]))
    full_hw = schedule[-1][1:]

    former = tensors["former_clip_features"]
    first_frame = former[:, :, 0:1]
    for segment in interact["segments"]:
        prefix = f"seg{segment['segment']}"
        for condition in interactive_conditions(former, first_frame, spec):
            name = f"{prefix}.{condition.key}"
            assert torch.equal(flatten_tokens(condition.codes), tensors[f"{name}.input_codes"]), name
            positions = visual_positions(tuple(condition.codes.shape[2:]), full_hw, condition.frames,
                                         condition.scale_position)
            assert torch.equal(positions.int(), tensors[f"{name}.rope_pos"]), name

        codes, next_former_codes, result = generate_segment(
            model, tensors[f"{prefix}.text_features"], former, first_frame, plan, spec,
            seed=interact["g_seed"], keep_records=True)

        for k, record in enumerate(result.records):
            name = f"{prefix}.step{k:02d}"
            assert torch.equal(record.input_codes, tensors[f"{name}.input_codes"]), name
            assert torch.equal(record.rope_positions.int(), tensors[f"{name}.rope_pos"]), name
            torch.testing.assert_close(record.logits_raw, tensors[f"{name}.logits_raw"], atol=1e-5, rtol=0)
            assert torch.equal(record.bits_sampled, tensors[f"{name}.bits_sampled"]), name
        assert torch.equal(codes, tensors[f"{prefix}.generated_codes"]), prefix
        assert torch.equal(next_former_codes, next_former(former, codes))

        former = next_former_codes


def run_steps_interactive(manifest, interact):
    from faststar.schedules import build_steps

    return build_steps(_as_scales(interact["scale_schedule"]), _interact_settings(manifest, interact),
                       interact["first_full_spatial_size_scale_index"], _interact_context(manifest, interact))
