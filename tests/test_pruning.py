"""FastSTAR pruning: scores, selection, plan rules, and runs of the tiny reference model."""

import math

import pytest
import torch

from faststar.flops import FlopModel, count_flops
from faststar.model import AttentionInputs, KVCache
from faststar.pruning import (
    FastStarPruner,
    PruningConfig,
    RestoreProcessor,
    _RestoreStep,
    anchor_mask,
    gather_tokens,
    keep_count,
    planned_work,
    preset,
    scatter_tokens,
    select_inputs,
    select_tokens,
    spatial_similarity,
    step_prune_ratio,
    temporal_similarity,
    token_importance,
)
from faststar.sampler import Guidance, PyramidLoop, ScaleContext
from faststar.schedules import ScheduleSettings, build_schedule, build_steps, scale_pack_info
from tests.reference import load_tensors, tiny_transformer

RUN_FILE = "tiny_run_apg_sampled.safetensors"


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


def settings_for(scales_per_clip: int, repetition: tuple[int, ...] | None = None, **changes) -> ScheduleSettings:
    repetition = repetition or (1,) * scales_per_clip
    fields = dict(pn="0.06M", image_scale_repetition=repetition, video_scale_repetition=repetition,
                  semantic_scales=0, detail_scale_min_tokens=1, tau_image=1.0, tau_video=0.4, guidance="apg",
                  guidance_scale=34, apg_norm_threshold=0.05, max_repeat_times=100)
    fields.update(changes)
    return ScheduleSettings(**fields)


def custom_steps(sizes, latent_frames, frames_inner_clip, repetition=None):
    """Steps of a schedule with the given (h, w) pyramid: an image clip and video clips."""
    schedule = build_schedule(sizes, latent_frames, frames_inner_clip)
    settings = settings_for(len(sizes), repetition, frames_inner_clip=frames_inner_clip)
    first_full = len(sizes) - 1
    info = scale_pack_info(schedule, first_full, frames_inner_clip=frames_inner_clip)
    return build_steps(schedule, settings, first_full, info)


def run_entry(manifest):
    return manifest["files"][RUN_FILE]


def fixture_steps(manifest):
    """The tiny reference run's steps, built from the manifest's settings."""
    entry = run_entry(manifest)
    settings = settings_for(
        len(entry["image_scale_repetition"]),
        image_scale_repetition=tuple(entry["image_scale_repetition"]),
        video_scale_repetition=tuple(entry["video_scale_repetition"]),
        semantic_scales=entry["semantic_scales"],
        detail_scale_min_tokens=entry["detail_scale_min_tokens"],
        tau_image=entry["tau_list"][0],
        tau_video=entry["tau_list"][-1],
        guidance_scale=entry["cfg"],
        apg_norm_threshold=entry["apg_norm_threshold"],
        max_repeat_times=entry["max_repeat_times"],
        frames_inner_clip=entry["frames_inner_clip"],
    )
    schedule = [tuple(scale) for scale in entry["scale_schedule"]]
    context = {int(si): info for si, info in entry["context_info"].items()}
    return build_steps(schedule, settings, entry["first_full_spatial_size_scale_index"], context)


@pytest.fixture(scope="module")
def tiny(ref_dir, manifest):
    """(model, steps, text features, full (H, W), seed) of the tiny reference run."""
    entry = run_entry(manifest)
    model = tiny_transformer(ref_dir, manifest)
    text = load_tensors(ref_dir, "tiny_transformer_inputs.safetensors")["text_features"]
    full_hw = tuple(entry["scale_schedule"][-1][1:])
    return model, fixture_steps(manifest), text, full_hw, entry["g_seed"]


def run_tiny(tiny, pruner=None, callback=None):
    model, steps, text, full_hw, seed = tiny
    loop = PyramidLoop(model, steps, full_hw, Guidance("apg", 0.05), torch.Generator().manual_seed(seed),
                       pruner=pruner, callback=callback, keep_records=True)
    return loop.run(text)


@pytest.fixture(scope="module")
def dense_run(tiny):
    return run_tiny(tiny)


def moving_square_clip(frames=4, size=16, square=3, step=3):
    """A static background with a square that moves ``step`` cells right per frame.

    Returns (previous clip's last frame [1, 64, 1, H, W], clip canvas [1, 64, t, H, W],
    square mask [t, H, W]); the previous clip's square sits at x = 0.
    """
    generator = torch.Generator().manual_seed(5)
    background = torch.randn(64, generator=generator)
    foreground = torch.randn(64, generator=generator)

    def frame_with_square(x0):
        frame = background.view(64, 1, 1).repeat(1, size, size)
        mask = torch.zeros(size, size, dtype=torch.bool)
        mask[4:4 + square, x0:x0 + square] = True
        frame[:, mask] = foreground.view(64, 1)
        return frame, mask

    previous, _ = frame_with_square(0)
    frames_and_masks = [frame_with_square(step * (i + 1)) for i in range(frames)]
    canvas = torch.stack([f for f, _ in frames_and_masks], dim=1)[None]
    masks = torch.stack([m for _, m in frames_and_masks])
    return previous[None, :, None], canvas, masks


# ----------------------------------------------------------------------------------------
# Gather and scatter
# ----------------------------------------------------------------------------------------


def test_gather_scatter_round_trip_shared():
    x = torch.randn(2, 10, 4)
    base = torch.randn(2, 10, 4)
    keep_idx = torch.tensor([0, 3, 4, 9])
    out = scatter_tokens(base, keep_idx, gather_tokens(x, keep_idx))

    assert torch.equal(out[:, keep_idx], x[:, keep_idx])
    pruned = torch.tensor([i for i in range(10) if i not in keep_idx.tolist()])
    assert torch.equal(out[:, pruned], base[:, pruned])
    assert not torch.equal(base, out), "scatter must not write into its base"


def test_gather_scatter_round_trip_per_row():
    x = torch.randn(2, 10, 4)
    base = torch.zeros(2, 10, 4)
    keep_idx = torch.tensor([[1, 2, 7], [0, 5, 8]])
    out = scatter_tokens(base, keep_idx, gather_tokens(x, keep_idx))

    for row in range(2):
        kept = keep_idx[row]
        assert torch.equal(out[row, kept], x[row, kept])
        mask = torch.ones(10, dtype=torch.bool)
        mask[kept] = False
        assert torch.all(out[row, mask] == 0)


def test_select_inputs_gathers_rope_rows():
    rope = torch.randn(2, 10, 8)
    inputs = AttentionInputs(rope, KVCache(1), ("t0",), None)
    shared = select_inputs(inputs, torch.tensor([2, 5]))
    assert torch.equal(shared.rope, rope[:, [2, 5]])
    assert shared.context == ("t0",)

    per_row = select_inputs(inputs, torch.tensor([[1, 3], [4, 9]]))
    assert per_row.rope.shape == (2, 2, 1, 2, 8)
    assert torch.equal(per_row.rope[:, 1, 0], rope[:, [4, 9]])


def test_restore_processor_with_all_tokens_kept_is_dense(tiny):
    model = tiny[0]
    block = model.blocks[0]
    thw = (2, 3, 5)
    x = torch.randn(2, 30, model.config.embed_dim)
    rope = torch.randn(2, 30, model.config.head_dim // 2)
    cache = KVCache(len(model.blocks))
    cache.put("t0", 0, torch.randn(2, 2, 4, model.config.head_dim), torch.randn(2, 2, 4, model.config.head_dim))
    inputs = AttentionInputs(rope, cache, ("t0",), None)

    processor = RestoreProcessor((0, 1), "area")
    processor.cache[0] = [torch.zeros(2, model.config.embed_dim, *thw)] * 2
    with torch.no_grad():
        dense = block(x, inputs, 0)
        for keep_idx in (torch.arange(30), None):
            processor.active = _RestoreStep("prune", thw, 30, keep_idx)
            restored = processor(block, x, inputs, 0)
            assert torch.allclose(restored, dense, atol=1e-5), f"keep_idx={keep_idx}"


# ----------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [0, 2, 3])
def test_kept_counts_and_anchors_per_scale(stride):
    steps = custom_steps([(1, 1), (2, 3), (4, 7), (6, 11), (9, 16)], 9, 8)
    generator = torch.Generator().manual_seed(0)
    for step in steps:
        for ratio in (0.3, 0.6, 0.95):
            kept = keep_count(step.thw, ratio, False, stride)
            anchors = anchor_mask(step.thw, stride)
            expected = max(math.ceil(round((1 - ratio) * step.L, 6)), 1, int(anchors.sum()))
            assert kept == expected, f"{step.thw} ratio {ratio}"

            keep_idx = select_tokens(torch.rand(step.thw, generator=generator), kept, False, anchors)
            assert keep_idx.numel() == kept
            assert torch.equal(keep_idx, keep_idx.unique(sorted=True)), "indices must be sorted and unique"
            assert set(anchors.flatten().nonzero().flatten().tolist()) <= set(keep_idx.tolist())


def test_anchor_grid_is_regular():
    mask = anchor_mask((2, 9, 16), 4)
    rows = mask[0].any(dim=1).nonzero().flatten().tolist()
    cols = mask[0].any(dim=0).nonzero().flatten().tolist()
    assert rows == [0, 4, 8]
    assert cols == [1, 5, 9, 13]
    assert torch.equal(mask[0], mask[1])
    assert not anchor_mask((2, 9, 16), 0).any()


def test_per_frame_selection_keeps_equal_counts():
    thw = (4, 6, 11)
    importance = torch.zeros(thw)
    importance[0] = 10.0  # a global top-k would take frame 0 first
    kept = keep_count(thw, 0.5, True, 0)
    keep_idx = select_tokens(importance, kept, per_frame=True)

    per_frame = torch.bincount(keep_idx // (6 * 11), minlength=4)
    assert per_frame.tolist() == [33] * 4
    assert torch.equal(keep_idx, keep_idx.unique(sorted=True))

    global_idx = select_tokens(importance, kept, per_frame=False)
    assert torch.bincount(global_idx // 66, minlength=4)[0] == 66


# ----------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------


def test_no_temporal_term_in_image_clip():
    steps = custom_steps([(1, 1), (4, 4), (8, 8)], 5, 4)
    image_step = steps[2]
    assert image_step.clip == 0
    assert image_step.thw == (1, 8, 8)
    grid = torch.randn(1, 64, 1, 8, 8)
    previous = torch.randn(1, 64, 1, 4, 4)
    assert temporal_similarity(grid, None, "previous_frame") is None
    assert temporal_similarity(grid, None, "clip_last_frame") is None

    context = ScaleContext(image_step, grid, previous, torch.zeros(1, 64, 1, 8, 8), None)
    fused = token_importance(context, PruningConfig(score="faststar"))
    spatial = token_importance(context, PruningConfig(score="spatial"))
    assert torch.equal(fused, spatial)


def test_first_video_frame_uses_preceding_clip():
    generator = torch.Generator().manual_seed(11)
    grid = torch.randn(1, 64, 3, 4, 4, generator=generator)
    alone = temporal_similarity(grid, None, "previous_frame")
    assert torch.all(alone[0] == 1), "frame 0 without a preceding clip has no temporal term"
    expected_adjacent = torch.nn.functional.cosine_similarity(grid[0, :, 1], grid[0, :, 0], dim=0)
    assert torch.allclose(alone[1], expected_adjacent, atol=1e-6)

    previous_clip = torch.randn(1, 64, 5, 4, 4, generator=generator)
    with_clip = temporal_similarity(grid, previous_clip, "previous_frame")
    expected = torch.nn.functional.cosine_similarity(grid[0, :, 0], previous_clip[0, :, -1], dim=0)
    assert torch.allclose(with_clip[0], expected, atol=1e-6)
    assert torch.equal(with_clip[1:], alone[1:])

    every_frame = temporal_similarity(grid, previous_clip, "clip_last_frame")
    expected_last = torch.nn.functional.cosine_similarity(grid[0, :, 2], previous_clip[0, :, -1], dim=0)
    assert torch.allclose(every_frame[2], expected_last, atol=1e-6)


def test_static_region_converged_and_moving_square_kept():
    previous_frame, canvas, square = moving_square_clip()
    coarse = torch.nn.functional.interpolate(canvas, size=(4, 8, 8), mode="area")
    steps = custom_steps([(1, 1), (8, 8), (16, 16)], 5, 4)
    step = steps[-1]
    assert step.thw == (4, 16, 16)
    context = ScaleContext(step, canvas, coarse, canvas, previous_frame)

    importance = token_importance(context, PruningConfig())
    static = torch.zeros(4, 16, 16, dtype=torch.bool)
    static[:, 10:] = True  # rows far from the square's path
    assert importance[static].abs().max() < 1e-5, "a static region scores as converged"
    assert importance[square].min() > 0.1

    spatial = spatial_similarity(canvas, coarse)
    assert spatial[static].min() > 1 - 1e-5

    config = PruningConfig(prune_ratios=(0.75,))
    kept = keep_count(step.thw, 0.75, False, 0)
    keep_idx = select_tokens(importance, kept)
    kept_mask = torch.zeros(step.L, dtype=torch.bool)
    kept_mask[keep_idx] = True
    assert kept_mask.view(4, 16, 16)[square].all(), "every token of the moving square is kept"
    assert step_prune_ratio(config, step, 3) == 0.75


def test_spatial_only_ignores_motion():
    previous_frame, canvas, square = moving_square_clip()
    steps = custom_steps([(1, 1), (8, 8), (16, 16)], 5, 4)
    context = ScaleContext(steps[-1], canvas, canvas.clone(), canvas, previous_frame)
    spatial = token_importance(context, PruningConfig(score="spatial"))
    temporal = token_importance(context, PruningConfig(score="temporal"))
    assert spatial.abs().max() < 1e-5, "input equal to the previous input is fully converged"
    assert temporal[square].min() > 0.1


def test_fusion_rules():
    previous_frame, canvas, _ = moving_square_clip()
    coarse = torch.nn.functional.interpolate(canvas, size=(4, 8, 8), mode="area")
    steps = custom_steps([(1, 1), (8, 8), (16, 16)], 5, 4)
    context = ScaleContext(steps[-1], canvas, coarse, canvas, previous_frame)
    d_spatial = token_importance(context, PruningConfig(score="spatial"))
    d_temporal = token_importance(context, PruningConfig(score="temporal"))

    p2 = token_importance(context, PruningConfig(fusion_p=2.0))
    assert torch.allclose(p2, (d_spatial**2 + d_temporal**2).sqrt(), atol=1e-6)
    maximum = token_importance(context, PruningConfig(fusion_p=math.inf))
    assert torch.allclose(maximum, torch.maximum(d_spatial, d_temporal))
    weighted = token_importance(context, PruningConfig(fusion="weighted", spatial_weight=0.25))
    assert torch.allclose(weighted, 0.25 * d_spatial + 0.75 * d_temporal, atol=1e-6)


# ----------------------------------------------------------------------------------------
# Plan rules and configuration
# ----------------------------------------------------------------------------------------


def test_plan_rules_per_step():
    steps = custom_steps([(1, 1), (2, 3), (3, 5), (4, 7)], 9, 4, repetition=(3, 3, 2, 1))
    config = PruningConfig(prune_ratios=(0.2, 0.5))
    ratios = {(s.clip, s.rel_si, s.repeat_idx): step_prune_ratio(config, s, 4) for s in steps}

    assert all(ratios[(0, rel, r)] is None for rel in range(4) for r in range(3) if (0, rel, r) in ratios)
    assert ratios[(1, 1, 0)] is None
    assert ratios[(1, 2, 0)] == 0.2
    assert ratios[(1, 2, 1)] == 0.2
    assert ratios[(2, 3, 0)] == 0.5
    # Clip 1's last scale is read by clip 2: 'full' K/V runs it dense, 'kept' prunes it.
    assert ratios[(1, 3, 0)] is None
    kept_kv = config.replace(kv_policy="kept")
    assert step_prune_ratio(kept_kv, next(s for s in steps if (s.clip, s.rel_si) == (1, 3)), 4) == 0.5

    last_dense = config.replace(keep_last_repetition=True)
    repeated = [s for s in steps if (s.clip, s.rel_si) == (1, 2)]
    assert [step_prune_ratio(last_dense, s, 4) for s in repeated] == [0.2, None]

    with_image = config.replace(prune_image_clip=True)
    image_steps = {s.rel_si: s for s in steps if s.clip == 0}
    assert step_prune_ratio(with_image, image_steps[2], 4) == 0.2
    assert step_prune_ratio(with_image, image_steps[3], 4) is None, "read by clip 1, keeps full K/V"
    assert step_prune_ratio(with_image.replace(kv_policy="kept"), image_steps[3], 4) == 0.5


@pytest.mark.parametrize("changes, message", [
    (dict(prune_ratios=(1.0,)), "method='skip'"),
    (dict(prune_ratios=(-0.1,)), "invalid prune ratio"),
    (dict(method="skip", prune_ratios=(0.5,)), "give 1.0"),
    (dict(score="entropy"), "invalid score"),
    (dict(fusion_p=0), "fusion_p"),
    (dict(anchor_stride=-1), "anchor_stride"),
    (dict(temporal_reference="next_frame"), "temporal_reference"),
    (dict(kv_policy="none"), "kv_policy"),
    (dict(restore_layers=(3, 2)), "restore_layers"),
])
def test_invalid_config_raises(changes, message):
    with pytest.raises(ValueError, match=message):
        PruningConfig(**changes)


def test_presets():
    assert not preset("off").active
    assert preset("balanced").keep_ratios == (0.5, 0.5, 0.4)
    assert preset("last4").keep_last_repetition
    assert preset("fastvar").method == "restore"
    assert preset("balanced", per_frame=True).per_frame
    with pytest.raises(ValueError, match="unknown pruning preset"):
        preset("turbo")


# ----------------------------------------------------------------------------------------
# Runs of the tiny reference model
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    preset("off"),
    PruningConfig(prune_ratios=(0.0, 0.0, 0.0)),
    PruningConfig(method="restore", prune_ratios=(0.0, 0.0)),
    PruningConfig(prune_ratios=(0.0,) * 5, prune_image_clip=True, kv_policy="kept"),
])
def test_keep_ratio_one_is_dense_bit_for_bit(tiny, dense_run, ref_dir, config):
    pruner = FastStarPruner(config)
    result = run_tiny(tiny, pruner)
    assert torch.equal(result.codes, dense_run.codes)
    assert torch.equal(dense_run.codes, load_tensors(ref_dir, RUN_FILE)["summed_codes"])
    assert all(s.mode == "dense" and s.kept == s.tokens for s in pruner.stats.steps)


def test_partial_update_run(tiny, dense_run):
    model, steps, _, full_hw, _ = tiny
    canvases = []
    pruner = FastStarPruner(preset("balanced"))

    def callback(record):
        pruner.observe(record)
        canvases.append(record.canvas.clone())

    result = run_tiny(tiny, pruner, callback)
    stats = pruner.stats
    assert len(stats.steps) == len(steps)
    assert not torch.equal(result.codes, dense_run.codes)

    planned = planned_work(pruner.config, steps, len(model.blocks))
    for entry, work, record in zip(stats.steps, planned, result.records):
        assert entry.kept == work.tokens[0]
        assert entry.seconds is not None and entry.seconds > 0
        if entry.mode == "partial":
            assert record.keep_idx.numel() == entry.kept
            assert record.logits_guided.shape[1] == entry.kept, "guidance sees kept tokens only"
            assert torch.equal(entry.mask.flatten().nonzero().flatten(), record.keep_idx.cpu())

    pruned_modes = {(s.clip, s.rel_si): s.mode for s in stats.steps}
    assert pruned_modes[(0, 4)] == "dense", "the image clip is not pruned"
    assert pruned_modes[(1, 4)] == "dense", "clip 1's last scale is read by clip 2 and keeps full K/V"
    assert pruned_modes[(2, 4)] == "partial"

    # At a clip's last scale the codes are added without resampling: pruned tokens keep their value.
    last = len(steps) - 1
    pruned = ~stats.steps[last].mask
    assert torch.equal(canvases[last][0][:, pruned], canvases[last - 1][0][:, pruned])
    assert not torch.equal(canvases[last][0][:, ~pruned], canvases[last - 1][0][:, ~pruned])

    config = FlopModel.from_config(model.config, text_tokens=tiny[2].shape[0])
    run_flops = count_flops(config, steps, stats.work(len(model.blocks))).total
    assert run_flops == count_flops(config, steps, planned).total
    assert run_flops < count_flops(config, steps).total

    frames, labels = stats.keep_map_frames(full_hw)
    pruned_steps = [s for s in stats.steps if s.mask is not None]
    assert frames.shape == (sum(s.thw[0] for s in pruned_steps), *full_hw)
    assert len(labels) == frames.shape[0]
    assert set(frames.unique().tolist()) <= {0.0, 1.0}


def test_kept_kv_policy_prunes_referenced_scale(tiny):
    pruner = FastStarPruner(preset("balanced", kv_policy="kept"))
    result = run_tiny(tiny, pruner)
    modes = {(s.clip, s.rel_si): s for s in pruner.stats.steps}
    assert modes[(1, 4)].mode == "partial"
    assert torch.isfinite(result.codes).all()


def test_restore_baseline_run(tiny, dense_run):
    model = tiny[0]
    pruner = FastStarPruner(preset("fastvar", restore_layers=(0, 2)))
    result = run_tiny(tiny, pruner)
    assert model.block_processor is None, "the block processor is removed after the run"

    modes = [(s.clip, s.rel_si, s.repeat_idx, s.mode) for s in pruner.stats.steps]
    assert (1, 1, 2, "cache") in modes
    assert (1, 3, 0, "restore") in modes
    assert (1, 2, 1, "dense") in modes, "the last repetition runs dense"
    assert torch.isfinite(result.codes).all()
    assert not torch.equal(result.codes, dense_run.codes)

    canvas_score = FastStarPruner(PruningConfig(method="restore", restore_layers=(0, 2)))
    run_tiny(tiny, canvas_score)
    masks = [s.mask for s in canvas_score.stats.steps if s.mode == "restore"]
    assert masks and all(m is not None for m in masks)


def test_restore_needs_an_earlier_scale(tiny):
    pruner = FastStarPruner(PruningConfig(method="restore", prune_ratios=(0.5,) * 5))
    with pytest.raises(ValueError, match="no earlier scale to cache"):
        run_tiny(tiny, pruner)
    assert tiny[0].block_processor is None


def test_skip_baseline_adds_nothing(tiny):
    canvases = []
    pruner = FastStarPruner(preset("skip_last"))
    run_tiny(tiny, pruner, lambda record: canvases.append(record.canvas.clone()))
    skipped = [i for i, s in enumerate(pruner.stats.steps) if s.mode == "skip"]
    assert [(pruner.stats.steps[i].clip, pruner.stats.steps[i].rel_si) for i in skipped] == [(2, 4)]
    assert torch.equal(canvases[skipped[0]], canvases[skipped[0] - 1])


class Cancelled(Exception):
    pass


@pytest.mark.parametrize("name", ["balanced", "fastvar"])
def test_cancelled_run_leaves_model_unpatched(tiny, name):
    model = tiny[0]
    pruner = FastStarPruner(preset(name, restore_layers=(0, 2)) if name == "fastvar" else preset(name))

    def cancel(record):
        if record.step.si == 8:
            assert name != "fastvar" or model.block_processor is pruner.restore
            raise Cancelled

    with pytest.raises(Cancelled):
        run_tiny(tiny, pruner, cancel)
    assert model.block_processor is None
    assert pruner.restore is None

    result = run_tiny(tiny, FastStarPruner(preset("off")))
    assert torch.isfinite(result.codes).all()
