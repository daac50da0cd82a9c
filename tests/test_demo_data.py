"""The demo data: grammar, held-out split, deterministic rendering, tracker, quantisation."""

import random

import pytest
import torch

from faststar.codes import bits_to_codes
from faststar.conditioning import encode_gt_bits
from faststar.demo.data import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_TRIPLES,
    MOTIONS,
    SHAPES,
    Caption,
    all_captions,
    make_samples,
    parse_caption,
    render_video,
)
from faststar.demo.quantize import demo_steps, quantize_latent
from faststar.demo.runs import RunFolder
from faststar.demo.text_encoder import VOCABULARY, DemoTextEncoder, tokenize
from faststar.demo.tracker import judge_colour, judge_motion, track


def test_grammar_covers_required_words():
    assert {"red", "green", "blue", "yellow", "white", "purple"} <= set(COLOURS)
    assert {"circle", "square", "triangle"} <= set(SHAPES)
    assert {"moving left", "moving right", "moving up", "moving down", "bouncing", "growing",
            "spinning"} <= set(MOTIONS)
    assert {"black", "gray", "gradient"} <= set(BACKGROUNDS)


def test_caption_text_and_parse_round_trip():
    caption = Caption("red", "circle", "moving right", "black")
    assert caption.text() == "a red circle moving right on a black background"
    assert parse_caption(caption.text()) == caption
    assert parse_caption("a red circle moving right") == Caption("red", "circle", "moving right")


@pytest.mark.parametrize("text", ["a red circle", "a pink circle bouncing", "a red circle bouncing on a red background",
                                  "the red circle bouncing"])
def test_parse_caption_rejects_text_outside_grammar(text):
    with pytest.raises(ValueError, match="grammar"):
        parse_caption(text)


def test_held_out_split_is_disjoint_and_every_word_is_trained():
    train = all_captions(held_out=False)
    held_out = all_captions(held_out=True)
    assert held_out
    assert not {c.triple for c in train} & {c.triple for c in held_out}
    assert {c.triple for c in held_out} == set(HELD_OUT_TRIPLES)
    for words, position in ((COLOURS, 0), (SHAPES, 1), (MOTIONS, 2)):
        assert {c.triple[position] for c in train} == set(words)


def test_training_samples_never_use_held_out_captions():
    samples = make_samples(500, seed=3)
    assert not any(sample.caption.held_out for sample in samples)
    assert all(sample.caption.held_out for sample in make_samples(50, seed=3, held_out=True))


def test_render_is_deterministic_from_seed():
    caption = Caption("green", "triangle", "spinning")
    first = render_video(caption, 5)
    assert first.shape == (3, 17, 64, 64)
    assert torch.equal(first, render_video(caption, 5))
    assert not torch.equal(first, render_video(caption, 6))
    assert first.min() >= -1 and first.max() <= 1


def test_make_samples_is_deterministic():
    assert make_samples(20, seed=11) == make_samples(20, seed=11)
    assert make_samples(20, seed=11) != make_samples(20, seed=12)


def test_tracker_judges_rendered_videos():
    rng = random.Random(0)
    captions = rng.sample(all_captions(False) + all_captions(True), 40)
    for index, caption in enumerate(captions):
        found = track(render_video(caption, index))
        assert judge_colour(found) == caption.colour, caption.text()
        assert judge_motion(found) == caption.motion, caption.text()


def test_tracker_finds_nothing_in_constant_video():
    found = track(torch.zeros(3, 17, 64, 64))
    assert judge_colour(found) is None
    assert judge_motion(found) is None


def test_tokenize_pads_and_rejects_unknown_words():
    ids = tokenize("a red circle moving right")
    assert ids.shape == (12,)
    assert ids[5:].eq(VOCABULARY.index("<pad>")).all()
    with pytest.raises(ValueError, match="does not know"):
        tokenize("a red dragon moving right")
    with pytest.raises(ValueError, match="empty"):
        tokenize("  ")


def test_text_encoder_features_shape():
    features = DemoTextEncoder().encode("a blue square growing on a gray background")
    assert features.shape == (12, 64)


def test_demo_steps_have_image_pyramid_and_clips():
    steps = demo_steps(5)
    assert {step.clip for step in steps} == {0, 1, 2}
    assert [step.thw for step in steps if step.clip == 0 and step.repeat_idx == 0][-1] == (1, 8, 8)
    last_scales = sorted({step.thw for step in steps if step.clip == 2})
    assert (2, 6, 6) in last_scales and (2, 8, 8) in last_scales
    assert {step.bits for step in steps} == {16, 64}


def test_quantize_without_flips_matches_gt_bit_path():
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 64, 5, 8, 8, generator=generator)
    steps = demo_steps(5)
    quantized = quantize_latent(latent, steps, keep_targets=True)
    reference = encode_gt_bits(latent, steps, len({step.si for step in steps}))
    for target, bits in zip(quantized.targets, reference):
        assert torch.equal(target.labels, bits.flatten(1, 3).long())

    error = (quantized.codes - latent).pow(2).mean()
    assert error < latent.pow(2).mean()


def test_self_correction_changes_later_labels():
    generator = torch.Generator().manual_seed(1)
    latent = torch.randn(2, 64, 5, 8, 8, generator=generator)
    steps = demo_steps(5)
    clean = quantize_latent(latent, steps, keep_targets=True)
    flipped = quantize_latent(latent, steps, torch.tensor([0.0, 0.3]), torch.Generator().manual_seed(2),
                              keep_targets=True)
    assert torch.equal(clean.targets[-1].labels[0], flipped.targets[-1].labels[0])
    assert not torch.equal(clean.targets[-1].labels[1], flipped.targets[-1].labels[1])


def test_bits_to_codes_has_unit_norm():
    bits = torch.randint(0, 2, (1, 1, 2, 2, 16), dtype=torch.uint8)
    assert torch.allclose(bits_to_codes(bits).norm(dim=1), torch.ones(1, 1, 2, 2))


def test_run_folder_resumes_state_and_random(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.load() is None
    torch.manual_seed(4)
    run.save({"step": 7, "value": torch.arange(3)})
    expected = torch.rand(2)

    torch.manual_seed(99)
    state = run.load()
    assert state["step"] == 7
    assert torch.equal(state["value"], torch.arange(3))
    assert torch.equal(torch.rand(2), expected)

    run.log({"step": 7, "loss": 0.5})
    assert run.records()[-1]["loss"] == 0.5
