"""The shipped demo model: weights load, videos move, colour and motion follow the prompt."""

import argparse
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from faststar.demo import load_demo
from faststar.demo.data import Caption
from faststar.demo.evaluate import TARGET_COLOUR, TARGET_MOTION, add_arguments, evaluate, format_report
from faststar.demo.evaluate import pruning_plan, run
from faststar.demo.preset import TRANSFORMER_CONFIG, VAE_CONFIG
from faststar.demo.sampling import generate_video
from faststar.demo.tracker import judge_colour, judge_motion, track
from faststar.demo.train_transformer import batch_loss, build_models
from faststar.demo.weights import TEXT_ENCODER_FILE, TRANSFORMER_FILE, VAE_FILE, WEIGHTS_DIR

MAX_WEIGHTS_BYTES = 30 * 1024 * 1024

# Fixed (caption, seed) pairs, one per motion, with captions from the training split.
FIXED_PAIRS = [
    (Caption("red", "circle", "moving right", "black"), 0),
    (Caption("yellow", "square", "moving left", "gray"), 1),
    (Caption("white", "circle", "moving down", "black"), 2),
    (Caption("blue", "square", "moving up", "black"), 3),
    (Caption("purple", "square", "growing", "gray"), 4),
    (Caption("green", "triangle", "bouncing", "black"), 5),
]


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    return load_demo()


@pytest.fixture(scope="module")
def fixed_videos(demo):
    return [(caption, generate_video(demo, caption.text(), seed).video) for caption, seed in FIXED_PAIRS]


def test_weights_are_safetensors_within_size_budget():
    files = [WEIGHTS_DIR / name for name in (TRANSFORMER_FILE, VAE_FILE, TEXT_ENCODER_FILE)]
    assert all(path.exists() for path in files)
    assert sum(path.stat().st_size for path in files) <= MAX_WEIGHTS_BYTES


def test_transformer_file_uses_released_key_layout():
    with safe_open(str(WEIGHTS_DIR / TRANSFORMER_FILE), framework="pt") as handle:
        keys = list(handle.keys())
    assert any(key.startswith("block_chunks.0.module.0.") for key in keys)
    assert not any(key.startswith("blocks.") for key in keys)


def test_load_demo_builds_preset_sizes(demo):
    transformer, vae, text_encoder, preset = demo
    assert preset == "demo"
    assert transformer.config.embed_dim == TRANSFORMER_CONFIG.embed_dim
    assert transformer.config.depth == TRANSFORMER_CONFIG.depth
    assert transformer.config.text_channels == TRANSFORMER_CONFIG.text_channels
    assert vae.config == VAE_CONFIG
    assert text_encoder.encode("a red circle").shape == (12, TRANSFORMER_CONFIG.text_channels)


def test_generated_video_is_not_constant(demo):
    video = generate_video(demo, "a red circle moving right", seed=0).video
    assert video.shape == (3, 17, 64, 64)
    assert torch.isfinite(video).all()
    assert video.std() > 0.05
    assert (video[:, 1:] - video[:, :-1]).abs().mean() > 1e-3


def test_generation_is_deterministic_per_seed(demo):
    first = generate_video(demo, "a blue square bouncing", seed=3, pruning=None).video
    second = generate_video(demo, "a blue square bouncing", seed=3, pruning=None).video
    assert torch.equal(first, second)


def test_faststar_prunes_tokens(demo):
    pruned = generate_video(demo, "a green circle moving up", seed=1)
    assert pruned.kept_fraction < 1.0


def test_colour_matches_caption_for_fixed_seeds(fixed_videos):
    judged = [(caption.text(), judge_colour(track(video))) for caption, video in fixed_videos]
    matches = [caption.colour == colour for (caption, _), (_, colour) in zip(FIXED_PAIRS, judged)]
    assert sum(matches) / len(matches) >= TARGET_COLOUR, judged


def test_motion_matches_caption_for_fixed_seeds(fixed_videos):
    judged = [(caption.text(), judge_motion(track(video))) for caption, video in fixed_videos]
    matches = [caption.motion == motion for (caption, _), (_, motion) in zip(FIXED_PAIRS, judged)]
    assert sum(matches) / len(matches) >= TARGET_MOTION, judged


def test_training_step_lowers_loss():
    model, encoder = build_models(seed=0)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 64, 5, 8, 8, generator=generator)
    token_ids = torch.randint(1, 10, (2, 12), generator=generator)
    no_flip, kept = torch.zeros(2), torch.zeros(2, dtype=torch.bool)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(encoder.parameters()), lr=3e-3)

    first, _ = batch_loss(model, encoder, latents, token_ids, no_flip, kept)
    for _ in range(5):
        loss, _ = batch_loss(model, encoder, latents, token_ids, no_flip, kept)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last, _ = batch_loss(model, encoder, latents, token_ids, no_flip, kept)
    assert last.item() < first.item()
    assert encoder.token_embed.weight.grad is not None


def test_evaluate_judges_pruned_videos(demo):
    plan, label = pruning_plan("balanced", "random")
    report = evaluate(demo, seeds=[0], vae_clips=1, pruning=plan, limit=1, pruning_label=label)
    pair = report.pairs[0]
    assert report.pruning == "balanced, score random"
    assert plan.score == "random"
    assert isinstance(pair.pruned_colour_ok, bool)
    assert isinstance(pair.pruned_motion_ok, bool)
    assert 0.0 < pair.kept_fraction < 1.0
    assert "with FastSTAR: colour matches caption" in format_report(report)


def test_evaluate_dense_only_skips_pruned_judges(demo):
    report = evaluate(demo, seeds=[0], vae_clips=1, pruning=None, limit=1)
    assert report.pruning is None
    assert report.pairs[0].pruned_colour_ok is None
    assert "with FastSTAR" not in format_report(report)


def test_pruning_plan_rejects_score_without_preset():
    with pytest.raises(ValueError, match="--score random needs a pruning preset"):
        pruning_plan("none", "random")
    assert pruning_plan("none", None) == (None, None)
    assert pruning_plan("fast", None)[1] == "fast"


def test_evaluate_command_checks_json_path_first(tmp_path, monkeypatch):
    def fail_load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the argument check")

    monkeypatch.setattr("faststar.demo.evaluate.load_demo", fail_load)
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    with pytest.raises(FileNotFoundError, match="create it first"):
        run(parser.parse_args(["--json", str(tmp_path / "missing" / "report.json")]))
    with pytest.raises(ValueError, match="invalid --threads 0"):
        run(parser.parse_args(["--threads", "0"]))
