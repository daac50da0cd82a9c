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


def test_cache_keeps_only_referenced_scales(model, text_features, manifest):
    """K/V live only for scales a later clip reads, and only until their last reader ran."""
    from faststar.sampler import TEXT_KEY, scale_key

    run = manifest["files"]["tiny_run_apg_sampled.safetensors"]
    steps = run_steps(run)
    readers = {ref: max(s.si for s in steps if ref in s.ref_sids) for s in steps for ref in s.ref_sids}
    cached_after_step = []

    loop = PyramidLoop(model, steps, tuple(run["scale_schedule"][-1][1:]), Guidance("apg"),
                       torch.Generator().manual_seed(run["g_seed"]),
                       callback=lambda record: cached_after_step.append((record.step, set(loop.cache.keys()))))
    loop.run(text_features)

    def done(si, step):
        """True once the last repetition of scale si has run at ``step``."""
        return si < step.si or (si == step.si and step.last_repetition)

    for step, keys in cached_after_step:
        live = {scale_key(si) for si, last in readers.items() if done(si, step) and not done(last, step)}
        assert keys == {TEXT_KEY} | live, f"step {step.step}"


def test_bfloat16_blocks_track_float32(model, text_features, manifest):
    """bf16 blocks with float32 head: same schedule, logits close to the float32 run."""
    import copy

    run = manifest["files"]["tiny_run_apg_teacher_forced.safetensors"]
    bf16_model = copy.deepcopy(model)
    for block in bf16_model.blocks:
        block.to(torch.bfloat16)

    reference = run_loop(model, run, text_features, teacher_bits_of_fixture(run))
    result = run_loop(bf16_model, run, text_features, teacher_bits_of_fixture(run))

    assert torch.equal(result.codes, reference.codes)
    for ours, theirs in zip(result.records, reference.records):
        assert ours.logits_raw.dtype == torch.float32
        scale = theirs.logits_raw.abs().max()
        assert (ours.logits_raw - theirs.logits_raw).abs().max() < 0.05 * scale


def teacher_bits_of_fixture(run):
    from .conftest import reference_dir

    return teacher_bits_of(reference_dir(), run, len(run["steps"]))
