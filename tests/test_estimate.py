"""FLOP-model estimates of pruning plans per scale, and run summaries on the tiny model."""

import json

import pytest

from faststar import estimate, flops, pruning
from faststar.model import TransformerConfig
from faststar.pipeline import GenerationSettings, generate, model_preset, plan_generation

from .reference import load_tensors, tiny_transformer

DEFAULT_PLAN = pruning.PRESETS[pruning.DEFAULT_PRESET]
RELEASED_720P_5S = GenerationSettings("720p", 81)


@pytest.fixture(scope="module")
def released_720p():
    return estimate.estimate_plan(DEFAULT_PLAN, RELEASED_720P_5S)


def pruned_scales(result):
    return [scale for scale in result.scales if scale.keep_ratio < 1.0]


def test_released_720p_matches_count_flops(released_720p):
    steps = plan_generation(RELEASED_720P_5S).steps
    work = pruning.planned_work(DEFAULT_PLAN, steps, flops.RELEASED_8B.depth)
    dense = flops.count_flops(flops.RELEASED_8B, steps)
    pruned = flops.count_flops(flops.RELEASED_8B, steps, work)

    assert released_720p.dense.total == dense.total
    assert released_720p.pruned.total == pruned.total
    assert released_720p.speedup == pytest.approx(flops.flop_speedup(flops.RELEASED_8B, steps, work))
    assert released_720p.speedup > 1.0


def test_scales_add_up_to_the_plan(released_720p):
    steps = plan_generation(RELEASED_720P_5S).steps

    assert [scale.si for scale in released_720p.scales] == sorted({step.si for step in steps})
    assert sum(scale.tokens for scale in released_720p.scales) == sum(step.L for step in steps)
    text_share = released_720p.dense.text / released_720p.dense.total
    assert sum(scale.flop_share for scale in released_720p.scales) == pytest.approx(1.0 - text_share)


def test_pruned_scales_follow_the_plan(released_720p):
    steps = plan_generation(RELEASED_720P_5S).steps
    per_clip = pruning.scales_per_clip(steps)
    last_clip = steps[-1].clip
    pruned_count = len(DEFAULT_PLAN.prune_ratios)

    pruned = pruned_scales(released_720p)

    assert [scale.rel_si for scale in pruned] == list(range(per_clip - pruned_count, per_clip))
    assert all(scale.clip == last_clip for scale in pruned)
    for scale, keep in zip(pruned, DEFAULT_PLAN.keep_ratios):
        assert scale.keep_ratio == pytest.approx(keep, abs=1e-3)


def test_dense_plan_has_no_speedup():
    result = estimate.estimate_plan(pruning.PRESETS["off"], RELEASED_720P_5S)

    assert result.speedup == 1.0
    assert pruned_scales(result) == []


def test_skip_plan_keeps_nothing_at_last_scale():
    result = estimate.estimate_plan(pruning.PRESETS["skip_last"], GenerationSettings("480p", 161))

    skipped = pruned_scales(result)
    assert skipped
    assert all(scale.kept == 0 for scale in skipped)
    assert result.speedup > 1.0


def test_small_preset_priced_with_its_own_model():
    settings = GenerationSettings("tiny", 17)
    config = model_preset("tiny").transformer_config
    steps = plan_generation(settings).steps
    own_model = flops.FlopModel.from_config(config, text_tokens=flops.DEFAULT_TEXT_TOKENS)

    result = estimate.estimate_plan(DEFAULT_PLAN, settings)

    assert result.dense.total == flops.count_flops(own_model, steps).total
    assert result.dense.total < flops.count_flops(flops.RELEASED_8B, steps).total


def test_text_tokens_capped_at_model_text_length():
    short_text = TransformerConfig(embed_dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=128,
                                   text_channels=16, text_maxlen=12, block_chunks=2)

    assert estimate.flop_model(short_text).text_tokens == 12
    assert estimate.flop_model(None).text_tokens == flops.DEFAULT_TEXT_TOKENS
    assert estimate.flop_model(None) == flops.RELEASED_8B


def test_invalid_settings_rejected():
    with pytest.raises(ValueError, match="video_frames=80"):
        estimate.estimate_plan(DEFAULT_PLAN, GenerationSettings("720p", 80))


def test_estimate_dict_is_json(released_720p):
    payload = json.loads(json.dumps(released_720p.to_dict()))

    assert payload["speedup"] == pytest.approx(released_720p.speedup)
    assert payload["dense_tflop"] == pytest.approx(released_720p.dense.total / 1e12)
    assert len(payload["scales"]) == len(released_720p.scales)
    assert payload["scales"][-1]["keep_ratio"] == pytest.approx(released_720p.scales[-1].keep_ratio)


# ---------------------------------------------------------------------------------------
# Run summaries
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(ref_dir, manifest):
    return tiny_transformer(ref_dir, manifest)


@pytest.fixture(scope="module")
def text_features(ref_dir):
    return load_tensors(ref_dir, "tiny_transformer_inputs.safetensors")["text_features"]


def test_dense_run_summary(model, text_features):
    result = generate(model, text_features, GenerationSettings("tiny", 17, seed=3))

    summary = estimate.run_summary(result, None, model.config, elapsed_s=2.5)

    assert summary["tokens"] == sum(step.L for step in result.plan.steps)
    assert summary["tokens_refined"] == summary["tokens"]
    assert summary["estimated_speedup"] == 1.0
    assert summary["pruning"] == "off"
    assert summary["seconds"] == 2.5


def test_pruned_run_summary_matches_plan_estimate(model, text_features):
    settings = GenerationSettings("tiny", 17, seed=3)
    pruner = pruning.FastStarPruner(DEFAULT_PLAN)
    result = generate(model, text_features, settings, pruner=pruner, callback=pruner.observe)

    summary = estimate.run_summary(result, pruner, model.config, elapsed_s=1.0)
    planned = estimate.estimate_plan(DEFAULT_PLAN, settings, model.config)

    assert summary["pruning"] == DEFAULT_PLAN.method
    assert summary["tokens_refined"] < summary["tokens"]
    assert summary["estimated_speedup"] == pytest.approx(planned.speedup)
    assert summary["per_scale"]
    assert all(entry["kept"] < entry["tokens"] for entry in summary["per_scale"])
    assert "estimated speedup (FLOP model)" in estimate.format_summary(summary)


def test_run_ended_early_has_no_speedup(model, text_features):
    settings = GenerationSettings("tiny", 17, seed=3)
    pruner = pruning.FastStarPruner(DEFAULT_PLAN)
    result = generate(model, text_features, settings, pruner=pruner, callback=pruner.observe)
    del pruner.stats.steps[-1]

    assert estimate.run_speedup(result.plan.steps, pruner, estimate.flop_model(model.config)) == 1.0
