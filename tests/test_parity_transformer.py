"""Parity of the transformer loop with the reference runs of the fixture folder."""

import pytest
import torch

from faststar.guidance import apg_guidance
from faststar.sampler import Guidance, PyramidLoop

from .reference import load_tensors, run_settings, run_steps, tiny_transformer

RUNS = ["tiny_run_apg_teacher_forced", "tiny_run_apg_sampled", "tiny_run_cfg_sampled"]


@pytest.fixture(scope="module")
def model(ref_dir, manifest):
    return tiny_transformer(ref_dir, manifest)


@pytest.fixture(scope="module")
def text_features(ref_dir):
    return load_tensors(ref_dir, "tiny_transformer_inputs.safetensors")["text_features"]


def run_loop(model, run, text_features, teacher_bits=None, skip_unneeded_forwards=False):
    steps = run_steps(run)
    settings = run_settings(run)
    full_hw = tuple(run["scale_schedule"][-1][1:])
    generator = torch.Generator().manual_seed(run["g_seed"])
    loop = PyramidLoop(model, steps, full_hw, Guidance(settings.guidance, settings.apg_norm_threshold), generator,
                       teacher_bits=teacher_bits, skip_unneeded_forwards=skip_unneeded_forwards, keep_records=True)
    return loop.run(text_features)


def teacher_bits_of(ref_dir, run, count):
    if run["gt_leak"] <= 0:
        return None
    bits = load_tensors(ref_dir, "i2v_bits.safetensors")
    return [bits[f"gt_bits.{k:02d}"] for k in range(count)]


@pytest.mark.parametrize("name", RUNS)
def test_run_matches_reference(name, model, text_features, ref_dir, manifest):
    run = manifest["files"][f"{name}.safetensors"]
    expected = load_tensors(ref_dir, f"{name}.safetensors")
    # Guidance amplifies the raw logits' float32 error by up to 2*scale - 1 (cond - uncond).
    guided_tolerance = (2 * run["cfg"] - 1) * 1e-5

    result = run_loop(model, run, text_features, teacher_bits_of(ref_dir, run, len(run["steps"])))

    assert len(result.records) == len(run["steps"])
    for k, record in enumerate(result.records):
        prefix = f"step{k:02d}"
        assert torch.equal(record.input_codes, expected[f"{prefix}.input_codes"]), prefix
        assert torch.equal(record.rope_positions.int(), expected[f"{prefix}.rope_pos"]), prefix
        torch.testing.assert_close(record.logits_raw, expected[f"{prefix}.logits_raw"], atol=1e-5, rtol=0)
        torch.testing.assert_close(record.logits_guided, expected[f"{prefix}.logits_guided"],
                                   atol=guided_tolerance, rtol=0)
        if f"{prefix}.bits_sampled" in expected:
            assert torch.equal(record.bits_sampled, expected[f"{prefix}.bits_sampled"]), prefix
        assert torch.equal(record.bits_used, expected[f"{prefix}.bits_used"]), prefix
    assert torch.equal(result.codes, expected["summed_codes"])


def test_teacher_forced_canvas_equals_gt_canvas(model, text_features, ref_dir, manifest):
    run = manifest["files"]["tiny_run_apg_teacher_forced.safetensors"]
    gt = load_tensors(ref_dir, "i2v_bits.safetensors")

    result = run_loop(model, run, text_features, teacher_bits_of(ref_dir, run, len(run["steps"])),
                      skip_unneeded_forwards=True)

    assert torch.equal(result.codes, gt["canvas_from_gt_bits"])


def test_skipped_teacher_forwards_keep_rng_stream(model, text_features, ref_dir, manifest):
    """Teacher-force the image clip without its forwards: later sampled bits must not change."""
    run = manifest["files"]["tiny_run_apg_sampled.safetensors"]
    expected = load_tensors(ref_dir, "tiny_run_apg_sampled.safetensors")
    steps = run_steps(run)
    teacher = [expected[f"step{k:02d}.bits_used"] if step.clip == 0 else None for k, step in enumerate(steps)]

    result = run_loop(model, run, text_features, teacher, skip_unneeded_forwards=True)

    skipped = [r for r in result.records if not r.forwarded]
    assert skipped, "no teacher-forced forward was skipped"
    assert all(r.step.clip == 0 and not r.step.referenced for r in skipped)
    for k, record in enumerate(result.records):
        assert torch.equal(record.bits_used, expected[f"step{k:02d}.bits_used"]), f"step{k:02d}"
    assert torch.equal(result.codes, expected["summed_codes"])


@pytest.mark.parametrize("case", ["clipped", "unclipped"])
def test_apg_cases(case, ref_dir, manifest):
    """The stand-alone cases use the APG arguments of the APG runs."""
    tensors = load_tensors(ref_dir, "apg_cases.safetensors")
    apg = manifest["files"]["tiny_run_apg_sampled.safetensors"]["steps"][0]["apg_kwargs"]
    cond, uncond = tensors[f"apg.{case}.cond"], tensors[f"apg.{case}.uncond"]

    out = apg_guidance(cond, uncond, apg["guidance_scale"], apg["norm_threshold"], apg["eta"])

    assert torch.equal(out, tensors[f"apg.{case}.out"])
