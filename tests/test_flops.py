"""FLOP model: the formula on a hand-sized case, and the released shapes' shares and speedups."""

import math

import pytest

from faststar.flops import RELEASED_8B, FlopModel, StepWork, count_flops, flop_speedup, share_of_steps
from faststar.model import TransformerConfig
from faststar.pruning import PruningConfig, planned_work, preset
from faststar.schedules import plan_schedule


@pytest.fixture(scope="module")
def steps_720p():
    return plan_schedule("720p", 81).steps


@pytest.fixture(scope="module")
def steps_480p_10s():
    return plan_schedule("480p", 161).steps


def last_scales(steps, count, clip=None):
    clip = steps[-1].clip if clip is None else clip
    per_clip = max(step.rel_si for step in steps) + 1
    return [s.step for s in steps if s.clip == clip and s.rel_si >= per_clip - count]


def test_linear_cost_of_released_block():
    # q, o: 4096^2; k, v: 4096 x 1024; MLP: 3 x 4096 x 16384; two FLOPs per multiply-add.
    expected = 2 * (2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 16384)
    assert RELEASED_8B.linear_per_token == expected
    assert RELEASED_8B.depth == 36


def test_hand_sized_two_clip_run():
    model = FlopModel(embed_dim=8, depth=2, kv_width=4, mlp_hidden=16, rows=2, text_tokens=3)
    # Step 44 is the image clip's last step; step 45 starts clip 1 and attends to its K/V.
    steps = plan_schedule("720p", 81).steps[:46]
    assert steps[45].ref_steps == (44,)
    work = [StepWork.skipped()] * 44 + [StepWork((5, 5)), StepWork((2, 2))]
    count = count_flops(model, steps, work)

    per_token = 2 * (2 * 8 * 8 + 2 * 8 * 4 + 3 * 8 * 16)
    text = 2 * 2 * (3 * per_token + 4 * 3 * 3 * 8)
    reference = 2 * 2 * (5 * per_token + 4 * 5 * (3 + 5) * 8)
    reader = 2 * 2 * (2 * per_token + 4 * 2 * (3 + 5 + 2) * 8)
    assert count.text == text
    assert count.per_step[44] == reference
    assert count.per_step[45] == reader
    assert count.total == text + reference + reader


def test_dense_720p_totals(steps_720p):
    count = count_flops(RELEASED_8B, steps_720p)
    assert count.total / 1e15 == pytest.approx(18.5, abs=0.05)
    assert count.linear / 1e15 == pytest.approx(8.56, abs=0.01)
    assert count.attention / 1e15 == pytest.approx(9.97, abs=0.01)


@pytest.mark.parametrize("count, share", [(1, 48.3), (2, 61.5), (3, 75.7), (4, 85.6), (5, 89.3)])
def test_720p_last_scale_shares(steps_720p, count, share):
    assert 100 * share_of_steps(RELEASED_8B, steps_720p, last_scales(steps_720p, count)) == pytest.approx(share, abs=0.05)


def test_480p_10s_clip_shares(steps_480p_10s):
    assert 100 * share_of_steps(RELEASED_8B, steps_480p_10s, last_scales(steps_480p_10s, 3)) == pytest.approx(46.7, abs=0.05)
    clip1 = last_scales(steps_480p_10s, 3, clip=1)
    assert 100 * share_of_steps(RELEASED_8B, steps_480p_10s, clip1) == pytest.approx(29.6, abs=0.1)


def test_balanced_preset_speedup_720p(steps_720p):
    work = planned_work(preset("balanced"), steps_720p, RELEASED_8B.depth)
    assert flop_speedup(RELEASED_8B, steps_720p, work) == pytest.approx(2.15, abs=0.005)


def test_last4_preset_speedup(steps_720p):
    config = preset("last4")
    work = planned_work(config, steps_720p, RELEASED_8B.depth)
    assert flop_speedup(RELEASED_8B, steps_720p, work) == pytest.approx(2.08, abs=0.005)

    every_repetition = planned_work(config.replace(keep_last_repetition=False), steps_720p, RELEASED_8B.depth)
    assert flop_speedup(RELEASED_8B, steps_720p, every_repetition) == pytest.approx(2.24, abs=0.005)

    steps_480p = plan_schedule("480p", 81).steps
    work_480p = planned_work(config, steps_480p, RELEASED_8B.depth)
    assert flop_speedup(RELEASED_8B, steps_480p, work_480p) == pytest.approx(1.53, abs=0.005)


@pytest.mark.parametrize("ratio, expected", [(0.3, 1.47), (0.5, 1.96), (0.6, 2.28), (0.8, 3.10)])
def test_uniform_last3_table_720p(steps_720p, ratio, expected):
    work = planned_work(PruningConfig(prune_ratios=(ratio,) * 3), steps_720p, RELEASED_8B.depth)
    assert flop_speedup(RELEASED_8B, steps_720p, work) == pytest.approx(expected, abs=0.005)


def test_pruned_reference_shrinks_reader_attention(steps_480p_10s):
    full = planned_work(PruningConfig(kv_policy="full"), steps_480p_10s, RELEASED_8B.depth)
    kept = planned_work(PruningConfig(kv_policy="kept"), steps_480p_10s, RELEASED_8B.depth)
    referenced = [s.step for s in steps_480p_10s if s.keep_kv]
    assert referenced, "the 10 s schedule has a referenced scale"
    assert full[referenced[-1]].tokens[0] == steps_480p_10s[referenced[-1]].L
    assert kept[referenced[-1]].tokens[0] < steps_480p_10s[referenced[-1]].L

    reader = next(s for s in steps_480p_10s if s.ref_steps == (referenced[-1],))
    dense_reader = count_flops(RELEASED_8B, steps_480p_10s, full).per_step[reader.step]
    kept_reader = count_flops(RELEASED_8B, steps_480p_10s, kept).per_step[reader.step]
    assert kept_reader < dense_reader
    assert flop_speedup(RELEASED_8B, steps_480p_10s, kept) > flop_speedup(RELEASED_8B, steps_480p_10s, full)


def test_from_config_matches_released():
    assert FlopModel.from_config(TransformerConfig()) == RELEASED_8B


def test_work_length_mismatch_raises(steps_720p):
    with pytest.raises(ValueError, match="one per step"):
        count_flops(RELEASED_8B, steps_720p, [StepWork.uniform(1, 36)])
    bad = [StepWork.uniform(step.L + 1, 36) for step in steps_720p]
    with pytest.raises(ValueError, match="must lie in"):
        count_flops(RELEASED_8B, steps_720p, bad)


def test_skipped_step_costs_nothing(steps_720p):
    work = planned_work(preset("skip_last"), steps_720p, RELEASED_8B.depth)
    count = count_flops(RELEASED_8B, steps_720p, work)
    assert count.per_step[-1] == 0
    assert flop_speedup(RELEASED_8B, steps_720p, work) == pytest.approx(1 / (1 - 0.483), abs=0.01)
    assert math.isfinite(count.total)
