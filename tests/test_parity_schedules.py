"""Parity of faststar.schedules with the reference schedules, context info and step tables.

Expected values come from schedules.json and manifest.json of the reference fixture folder.
"""

import dataclasses
import json

import pytest

from faststar import schedules

# Which preset mirrors which reference script (names, not results).
SCRIPT_PRESETS = {
    "tools/infer_video_720p.py": "720p",
    "tools/infer_video_480p.py": "480p",
    "tools/infer_interact_480p.py": "interact_480p",
}


def _as_json(value):
    """Round-trip through JSON: int keys become strings and tuples lists, as in the fixtures."""
    return json.loads(json.dumps(value))


def _as_scales(schedule):
    return [tuple(scale) for scale in schedule]


def _config_preset(config_name):
    """Map a schedules.json config name ('720p_81', '480p_161') to its preset name."""
    return config_name.split("_")[0]


@pytest.fixture(scope="module")
def schedules_json(ref_dir):
    with open(ref_dir / "schedules.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tiny_runs(manifest):
    runs = {
        name: entry
        for name, entry in manifest["files"].items()
        if entry.get("kind") == "run" and "steps" in entry and "segments" not in entry
    }
    assert runs, "manifest.json lists no tiny runs with per-step tables"
    return runs


@pytest.fixture(scope="module")
def interact_run(manifest):
    runs = [entry for entry in manifest["files"].values() if "segments" in entry]
    assert len(runs) == 1, "manifest.json should list one interactive run"
    return runs[0]


# ----------------------------------------------------------------------------------------
# Resolution tables
# ----------------------------------------------------------------------------------------


def test_template_order_matches_tables(schedules_json):
    for table_name, table in schedules_json["tables"].items():
        assert list(schedules.TEMPLATES) == table["h_div_w_templates_in_dict_order"], table_name


def test_dynamic_resolution_table_entries(schedules_json):
    for table_name, table in schedules_json["tables"].items():
        video_frames = int(table_name.split("=")[1])
        mine = _as_json(schedules.dynamic_resolution_table(video_frames))

        assert mine["h_div_w_templates_in_dict_order"] == table["h_div_w_templates_in_dict_order"]
        assert list(mine["templates"]) == list(table["templates"]), table_name
        for template, by_pn in table["templates"].items():
            assert list(mine["templates"][template]) == list(by_pn), (table_name, template)
            for pn, expected in by_pn.items():
                assert mine["templates"][template][pn] == expected, (table_name, template, pn)


def test_scale_schedule_every_table_entry(schedules_json):
    for table_name, table in schedules_json["tables"].items():
        for template, by_pn in table["templates"].items():
            for pn, entry in by_pn.items():
                for pt, expected in entry["pt2scale_schedule"].items():
                    video_frames = schedules.video_frames_for(int(pt))
                    mine = schedules.scale_schedule(float(template), pn, video_frames)
                    assert mine == _as_scales(expected), (table_name, template, pn, pt)


def test_template_pixels_match_tables(schedules_json):
    table = schedules_json["tables"]["video_frames=1"]
    for template, by_pn in table["templates"].items():
        for pn, entry in by_pn.items():
            assert list(schedules.template_pixels(template, pn)) == entry["pixel"], (template, pn)


def test_nearest_template_of_templates(schedules_json):
    for template in schedules_json["tables"]["video_frames=1"]["h_div_w_templates_in_dict_order"]:
        assert schedules.nearest_template(template) == template


def test_nearest_template_of_script_ratio(schedules_json):
    settings = schedules_json["script_settings"]
    for config_name, config in schedules_json["configs"].items():
        script_ratio = [s for s in settings.values() if s["pn"] == config["pn"]][0]["h_div_w_target"]
        assert schedules.nearest_template(script_ratio) == config["h_div_w_template"], config_name
        preset = schedules.PRESETS[_config_preset(config_name)]
        assert preset.h_div_w == script_ratio, config_name


# ----------------------------------------------------------------------------------------
# Configs: schedules and context info of the released models
# ----------------------------------------------------------------------------------------


def test_config_schedules_and_indices(schedules_json):
    for name, config in schedules_json["configs"].items():
        schedule = schedules.scale_schedule(config["h_div_w_template"], config["pn"], config["video_frames"])
        first_full = schedules.first_full_spatial_size_scale_index(schedule)

        assert schedule == _as_scales(config["scale_schedule"]), name
        assert first_full == config["first_full_spatial_size_scale_index"], name
        assert first_full + 1 == config["tower_split_index"], name


def test_config_scale_pack_info(schedules_json):
    for name, config in schedules_json["configs"].items():
        schedule = _as_scales(config["scale_schedule"])
        first_full = config["first_full_spatial_size_scale_index"]
        info = schedules.scale_pack_info(schedule, first_full, **config["get_scale_pack_info_args"])
        assert _as_json(info) == config["get_scale_pack_info"], name


def test_config_repetitions_match_presets(schedules_json):
    for name, config in schedules_json["configs"].items():
        preset = schedules.PRESETS[_config_preset(name)]
        assert list(preset.image_scale_repetition) == config["image_scale_repetition"], name
        assert list(preset.video_scale_repetition) == config["video_scale_repetition"], name
        assert preset.pn == config["pn"], name
        assert config["video_frames"] in preset.video_frames, name


def test_plan_schedule_matches_configs(schedules_json):
    for name, config in schedules_json["configs"].items():
        plan = schedules.plan_schedule(_config_preset(name), config["video_frames"])
        args = config["get_scale_pack_info_args"]

        assert plan.schedule == _as_scales(config["scale_schedule"]), name
        assert plan.first_full_spatial_size_scale_index == config["first_full_spatial_size_scale_index"]
        assert plan.tower_split_index == config["tower_split_index"], name
        assert _as_json(plan.context_info) == config["get_scale_pack_info"], name
        assert plan.settings.frames_inner_clip == args["frames_inner_clip"], name
        assert plan.settings.context_frames == args["context_frames"], name


def test_plan_step_counts_follow_repetitions(schedules_json):
    for name, config in schedules_json["configs"].items():
        plan = schedules.plan_schedule(_config_preset(name), config["video_frames"])
        clip_count = len(config["scale_schedule"]) // (config["first_full_spatial_size_scale_index"] + 1)
        image_steps = sum(config["image_scale_repetition"])
        expected = image_steps + sum(config["video_scale_repetition"]) * (clip_count - 1)
        assert len(plan.steps) == expected, name


def test_plan_step_counts_of_spec():
    # Visual forwards per generation, without the text step.
    assert len(schedules.plan_schedule("720p", 81).steps) == 85
    assert len(schedules.plan_schedule("480p", 81).steps) == 81
    assert len(schedules.plan_schedule("480p", 161).steps) == 120


def test_plan_references_previous_clip(schedules_json):
    for name, config in schedules_json["configs"].items():
        plan = schedules.plan_schedule(_config_preset(name), config["video_frames"])
        for step in plan.steps:
            expected = config["get_scale_pack_info"][str(step.si)]
            assert list(step.ref_sids) == expected["ref_sids"], (name, step.step)
            assert (step.frame_start, step.frame_end) == (expected["frame_ss"], expected["frame_ee"])
            assert step.clip == expected["clipid"], (name, step.step)


def test_short_last_clip_canvas():
    # 97 frames = 25 latent frames: the image, a clip of 20 and a clip of 4 latent frames.
    plan = schedules.plan_schedule("480p", 97)
    final_h, final_w = plan.schedule[-1][1:]
    clip_frames = {step.clip: step.frame_end - step.frame_start for step in plan.steps}
    assert len(clip_frames) == 3
    assert len(set(clip_frames.values())) == 3
    for step in plan.steps:
        assert step.canvas_thw == (clip_frames[step.clip], final_h, final_w), step.step
        assert step.thw[0] == clip_frames[step.clip], step.step


def test_plan_head_and_codebook_agree(schedules_json):
    for name, config in schedules_json["configs"].items():
        plan = schedules.plan_schedule(_config_preset(name), config["video_frames"])
        settings = plan.settings
        for step in plan.steps:
            tokens = step.thw[1] * step.thw[2]
            assert (step.head == "semantic") == (step.rel_si < settings.semantic_scales)
            assert (step.codebook == "detail") == (tokens >= settings.detail_scale_min_tokens)
            assert step.head == step.codebook, (name, step.si)


# ----------------------------------------------------------------------------------------
# Script settings
# ----------------------------------------------------------------------------------------


def test_script_settings_match_presets(schedules_json):
    for script, expected in schedules_json["script_settings"].items():
        preset = schedules.PRESETS[SCRIPT_PRESETS[script]]

        assert preset.pn == expected["pn"], script
        assert list(preset.image_scale_repetition) == expected["image_scale_repetition"], script
        assert list(preset.video_scale_repetition) == expected["video_scale_repetition"], script
        assert preset.semantic_scales == expected["semantic_scales"], script
        assert preset.detail_scale_min_tokens == expected["detail_scale_min_tokens"], script
        assert preset.guidance == ("apg" if expected["use_apg"] else "cfg"), script
        assert expected["use_apg"] + expected["use_cfg"] == 1, script
        assert preset.guidance_scale == expected["cfg"], script
        assert preset.dynamic_scale_schedule == expected["dynamic_scale_schedule"], script


def test_script_settings_temperatures(schedules_json):
    for script, expected in schedules_json["script_settings"].items():
        preset = schedules.PRESETS[SCRIPT_PRESETS[script]]
        tau_image = expected.get("tau_image", expected.get("tau"))
        tau_video = expected.get("tau_video", expected.get("tau"))
        assert preset.tau_image == tau_image, script
        assert preset.tau_video == tau_video, script


def test_script_settings_optional_fields(schedules_json):
    for script, expected in schedules_json["script_settings"].items():
        preset = schedules.PRESETS[SCRIPT_PRESETS[script]]
        if "apg_norm_threshold" in expected:
            assert preset.apg_norm_threshold == expected["apg_norm_threshold"], script
        if isinstance(expected["video_frames"], int):
            assert preset.video_frames == (expected["video_frames"],), script
        if "h_div_w_target" in expected:
            assert preset.h_div_w == expected["h_div_w_target"], script
        assert preset.v2v_gt_leak == expected.get("gt_leak_v2v"), script


def test_script_settings_i2v_gt_leak(schedules_json):
    for name, config in schedules_json["configs"].items():
        preset = schedules.PRESETS[_config_preset(name)]
        script = [s for s, p in SCRIPT_PRESETS.items() if p == _config_preset(name)][0]
        expected = schedules_json["script_settings"][script]["gt_leak_i2v"]
        schedule = _as_scales(config["scale_schedule"])
        if isinstance(expected, int):
            assert preset.i2v_gt_leak_for(schedule) == expected, name
        else:
            # The 720p script computes it from the schedule.
            assert expected.replace(" ", "") == "len(scale_schedule)//2", name
            assert preset.i2v_gt_leak_for(schedule) == len(schedule) // 2, name


# ----------------------------------------------------------------------------------------
# Tiny runs: per-step tables
# ----------------------------------------------------------------------------------------


def _expected_step(reference_step):
    """Translate a manifest step into the Step attributes it describes."""
    mapping = {
        "step": "step",
        "si": "si",
        "rel_si": "rel_si",
        "clip": "clip",
        "repeat_idx": "repeat_idx",
        "repeat_times": "repeat_times",
        "real_sid": "real_sid",
        "thw": "thw",
        "L": "L",
        "bits": "bits",
        "head": "head_module",
        "lfq": "lfq_module",
        "tau": "tau",
        "cfg": "cfg",
        "ref_sids": "ref_sids",
        "ref_steps": "ref_steps",
        "last_repetition_step": "last_repetition",
    }
    expected = {}
    for key, attribute in mapping.items():
        if key in reference_step:
            value = reference_step[key]
            expected[attribute] = tuple(value) if isinstance(value, list) else value
    if "frames" in reference_step:
        expected["frames"] = tuple(reference_step["frames"])
    return expected


def _actual_step(step, expected_keys):
    values = {name: getattr(step, name) for name in expected_keys if name != "frames"}
    if "frames" in expected_keys:
        values["frames"] = tuple(range(step.frame_start, step.frame_end))
    return values


def _assert_steps_equal(steps, reference_steps, label):
    assert len(steps) == len(reference_steps), label
    for step, reference_step in zip(steps, reference_steps):
        expected = _expected_step(reference_step)
        assert _actual_step(step, expected) == expected, (label, reference_step["step"])


def _tiny_settings(run, args_tiny):
    return schedules.ScheduleSettings(
        pn=args_tiny["pn"],
        image_scale_repetition=tuple(run["image_scale_repetition"]),
        video_scale_repetition=tuple(run["video_scale_repetition"]),
        semantic_scales=run["semantic_scales"],
        detail_scale_min_tokens=run["detail_scale_min_tokens"],
        tau_image=run["tau_list"][0],
        tau_video=run["tau_list"][-1],
        guidance="apg" if run["use_apg"] else "cfg",
        guidance_scale=run["cfg"],
        apg_norm_threshold=run["apg_norm_threshold"],
        max_repeat_times=run["max_repeat_times"],
        frames_inner_clip=run["frames_inner_clip"],
    )


def _tiny_context(run, args_tiny):
    return schedules.scale_pack_info(
        _as_scales(run["scale_schedule"]),
        run["first_full_spatial_size_scale_index"],
        frames_inner_clip=run["frames_inner_clip"],
        context_frames=args_tiny["context_frames"],
        context_interval=args_tiny["context_interval"],
        context_from_largest_no=args_tiny["context_from_largest_no"],
    )


def _tiny_steps(run, args_tiny):
    return schedules.build_steps(
        _as_scales(run["scale_schedule"]),
        _tiny_settings(run, args_tiny),
        run["first_full_spatial_size_scale_index"],
        _tiny_context(run, args_tiny),
    )


def test_tiny_schedule_from_sizes(tiny_runs, manifest):
    for name, run in tiny_runs.items():
        schedule = _as_scales(run["scale_schedule"])
        first_full = run["first_full_spatial_size_scale_index"]
        sizes = [scale[1:] for scale in schedule[: first_full + 1]]
        latent_count = run["clip_time_ranges"][-1][1]

        built = schedules.build_schedule(sizes, latent_count, run["frames_inner_clip"])
        assert built == schedule, name
        assert schedules.first_full_spatial_size_scale_index(built) == first_full, name


def test_tiny_sizes_are_template_subset(tiny_runs, manifest):
    for name, run in tiny_runs.items():
        final_h, final_w = run["scale_schedule"][-1][1:]
        template = schedules.nearest_template(final_h / final_w)
        template_sizes = schedules.template_sizes(template, manifest["args_tiny"]["pn"])
        sizes = {tuple(scale[1:]) for scale in run["scale_schedule"]}
        assert sizes <= set(template_sizes), name


def test_tiny_context_info(tiny_runs, manifest):
    for name, run in tiny_runs.items():
        info = _tiny_context(run, manifest["args_tiny"])
        assert _as_json(info) == run["context_info"], name


def test_tiny_tau_and_cfg_lists(tiny_runs, manifest):
    for name, run in tiny_runs.items():
        plan = schedules.SchedulePlan(
            _as_scales(run["scale_schedule"]),
            _tiny_settings(run, manifest["args_tiny"]),
            run["first_full_spatial_size_scale_index"],
            _tiny_context(run, manifest["args_tiny"]),
            [],
        )
        assert plan.tau_list == run["tau_list"], name
        assert plan.cfg_list == run["cfg_list"], name


def test_tiny_steps_match_manifest(tiny_runs, manifest):
    for name, run in tiny_runs.items():
        steps = _tiny_steps(run, manifest["args_tiny"])
        _assert_steps_equal(steps, run["steps"], name)


def test_tiny_steps_kv_length(tiny_runs, manifest):
    for name, run in tiny_runs.items():
        steps = _tiny_steps(run, manifest["args_tiny"])
        tokens_of_scale = {step.si: step.L for step in steps}
        for step, reference_step in zip(steps, run["steps"]):
            kv_length = sum(tokens_of_scale[ref_si] for ref_si in step.ref_sids) + run["L_text"] + step.L
            assert set(reference_step["attn_kv_len_per_layer"]) == {kv_length}, (name, step.step)


def test_tiny_steps_clip_canvases(tiny_runs, manifest):
    for name, run in tiny_runs.items():
        steps = _tiny_steps(run, manifest["args_tiny"])
        final_h, final_w = run["scale_schedule"][-1][1:]
        for step in steps:
            start, end = run["clip_time_ranges"][step.clip]
            assert (step.frame_start, step.frame_end) == (start, end), (name, step.step)
            assert step.canvas_thw == (end - start, final_h, final_w), (name, step.step)


def test_tiny_steps_first_in_clip(tiny_runs, manifest):
    for name, run in tiny_runs.items():
        steps = _tiny_steps(run, manifest["args_tiny"])
        first_steps = {}
        for reference_step in run["steps"]:
            first_steps.setdefault(reference_step["clip"], reference_step["step"])
        flagged = [step.step for step in steps if step.first_in_clip]
        assert flagged == sorted(first_steps.values()), name


def test_tiny_steps_referenced_scales(tiny_runs, manifest):
    for name, run in tiny_runs.items():
        steps = _tiny_steps(run, manifest["args_tiny"])
        last_reader = {}
        for reference_step in run["steps"]:
            for ref_si in reference_step["ref_sids"]:
                last_reader[ref_si] = max(last_reader.get(ref_si, -1), reference_step["si"])
        for step in steps:
            assert step.referenced == (step.si in last_reader), (name, step.step)
            assert step.last_read_si == last_reader.get(step.si), (name, step.step)
            assert step.keep_kv == (step.si in last_reader and step.last_repetition), (name, step.step)


def test_max_repeat_times_keeps_real_sid(tiny_runs, manifest):
    run = next(iter(tiny_runs.values()))
    args_tiny = manifest["args_tiny"]
    full = _tiny_steps(run, args_tiny)
    capped_settings = dataclasses.replace(_tiny_settings(run, args_tiny), max_repeat_times=1)
    capped = schedules.build_steps(
        _as_scales(run["scale_schedule"]),
        capped_settings,
        run["first_full_spatial_size_scale_index"],
        _tiny_context(run, args_tiny),
    )

    first_repetitions = [step for step in full if step.repeat_idx == 0]
    assert len(capped) == len(run["scale_schedule"])
    assert [step.real_sid for step in capped] == [step.real_sid for step in first_repetitions]
    assert [step.repeat_times for step in capped] == [step.repeat_times for step in first_repetitions]
    assert all(step.last_repetition for step in capped)
    assert [step.step for step in capped] == list(range(len(capped)))


# ----------------------------------------------------------------------------------------
# Interactive mode
# ----------------------------------------------------------------------------------------


def _interact_args(manifest, run):
    args = dict(manifest["args_tiny"])
    args.update(run["args_changed_from_args_tiny"])
    return args


def _interact_settings(manifest, run):
    args = _interact_args(manifest, run)
    return schedules.ScheduleSettings(
        pn=args["pn"],
        image_scale_repetition=tuple(run["image_scale_repetition"]),
        video_scale_repetition=tuple(run["video_scale_repetition"]),
        semantic_scales=run["semantic_scales"],
        detail_scale_min_tokens=args["detail_scale_min_tokens"],
        tau_image=run["tau"],
        tau_video=run["tau"],
        guidance="cfg" if run["use_cfg"] else "apg",
        guidance_scale=run["cfg"],
        apg_norm_threshold=args["apg_norm_threshold"],
        max_repeat_times=args["max_repeat_times"],
        codebook_rule="scale_index",
        frames_inner_clip=run["frames_inner_clip"],
        context_frames=args["context_frames"],
    )


def _interact_context(manifest, run):
    args = _interact_args(manifest, run)
    return schedules.scale_pack_info(
        _as_scales(run["scale_schedule"]),
        run["first_full_spatial_size_scale_index"],
        frames_inner_clip=run["frames_inner_clip"],
        context_frames=args["context_frames"],
        context_interval=args["context_interval"],
        context_from_largest_no=args["context_from_largest_no"],
    )


def test_interact_clip_schedule(interact_run):
    with_pyramid = _as_scales(interact_run["scale_schedule_with_image_pyramid"])
    first_full = interact_run["first_full_spatial_size_scale_index"]
    clip_frames = interact_run["frames_inner_clip"]
    sizes = [scale[1:] for scale in with_pyramid[: first_full + 1]]

    assert schedules.first_full_spatial_size_scale_index(with_pyramid) == first_full
    assert schedules.build_schedule(sizes, 1 + clip_frames, clip_frames) == with_pyramid
    assert schedules.clip_schedule(sizes, clip_frames) == _as_scales(interact_run["scale_schedule"])


def test_interact_context_info(manifest, interact_run):
    info = _interact_context(manifest, interact_run)
    assert _as_json(info) == interact_run["context_info"]


def test_interact_steps_match_segments(manifest, interact_run):
    steps = schedules.build_steps(
        _as_scales(interact_run["scale_schedule"]),
        _interact_settings(manifest, interact_run),
        interact_run["first_full_spatial_size_scale_index"],
        _interact_context(manifest, interact_run),
    )
    assert len(interact_run["segments"]) >= 2
    for segment in interact_run["segments"]:
        _assert_steps_equal(steps, segment["steps"], f"segment {segment['segment']}")


def test_interact_tau_list(manifest, interact_run):
    settings = _interact_settings(manifest, interact_run)
    schedule = _as_scales(interact_run["scale_schedule"])
    first_full = interact_run["first_full_spatial_size_scale_index"]
    taus = schedules.scale_temperatures(len(schedule), first_full, settings)
    assert taus == interact_run["tau_list"][: len(schedule)]


def test_interact_steps_kv_length(manifest, interact_run):
    steps = schedules.build_steps(
        _as_scales(interact_run["scale_schedule"]),
        _interact_settings(manifest, interact_run),
        interact_run["first_full_spatial_size_scale_index"],
        _interact_context(manifest, interact_run),
    )
    for segment in interact_run["segments"]:
        condition_tokens = sum(condition["L"] for condition in segment["conditions"])
        for step, reference_step in zip(steps, segment["steps"]):
            kv_length = segment["L_text"] + condition_tokens + step.L
            label = (segment["segment"], step.step)
            assert set(reference_step["attn_kv_len_per_layer"]) == {kv_length}, label


def test_interactive_plan_is_one_clip(schedules_json):
    settings = schedules.PRESETS["interact_480p"]
    config = [c for c in schedules_json["configs"].values() if c["pn"] == settings.pn][0]
    first_full = config["first_full_spatial_size_scale_index"]
    expected_clip = _as_scales(config["scale_schedule"])[first_full + 1 : 2 * (first_full + 1)]
    script = schedules_json["script_settings"]["tools/infer_interact_480p.py"]

    plan = schedules.plan_interactive_clip(config["h_div_w_template"])
    assert plan.schedule == expected_clip
    assert plan.first_full_spatial_size_scale_index == first_full
    assert len(plan.steps) == sum(script["video_scale_repetition"])
    assert plan.steps[0].real_sid == 0
    assert all(step.ref_sids == () for step in plan.steps)
    assert {(step.frame_start, step.frame_end) for step in plan.steps} == {(0, expected_clip[0][0])}


def test_interactive_plan_codebook_by_scale_index():
    plan = schedules.plan_interactive_clip(schedules.nearest_template(9 / 16))
    for step in plan.steps:
        assert (step.codebook == "detail") == (step.si >= plan.settings.semantic_scales)
        assert step.head == step.codebook


# ----------------------------------------------------------------------------------------
# Frame helpers and invalid input
# ----------------------------------------------------------------------------------------


def test_latent_frames_round_trip(schedules_json):
    for config in schedules_json["configs"].values():
        latent_count = schedules.latent_frames(config["video_frames"])
        assert latent_count == config["video_frames"] // 4 + 1
        assert schedules.video_frames_for(latent_count) == config["video_frames"]


def test_latent_frames_rejects_non_4k_plus_1():
    with pytest.raises(ValueError, match="video_frames=80"):
        schedules.latent_frames(80)


def test_invalid_video_frames_names_nearest():
    with pytest.raises(ValueError, match="video_frames=80") as error:
        schedules.scale_schedule(0.562, "0.40M", 80)
    message = str(error.value)
    assert "16m + 1" in message
    assert str(schedules.video_frames_for(schedules.latent_frames(65))) in message
    assert str(schedules.video_frames_for(schedules.latent_frames(81))) in message


@pytest.mark.parametrize("video_frames", [0, -1, 82, 160, 2.5, True])
def test_invalid_video_frames_raise(video_frames):
    with pytest.raises(ValueError, match="video_frames"):
        schedules.scale_schedule(0.562, "0.40M", video_frames)


def test_table_rejects_partial_clips():
    with pytest.raises(ValueError, match="video_frames=17"):
        schedules.dynamic_resolution_table(17)


def test_unknown_template_lists_valid():
    with pytest.raises(ValueError, match="0.57") as error:
        schedules.scale_schedule(0.57, "0.40M", 81)
    for template in schedules.TEMPLATES:
        assert repr(template) in str(error.value)


def test_unknown_pn_lists_valid():
    with pytest.raises(ValueError, match="1M") as error:
        schedules.scale_schedule(0.562, "1M", 81)
    for pn in schedules.PN_SCALE_COUNTS:
        assert pn in str(error.value)


@pytest.mark.parametrize("ratio", [0, -1.0, float("nan"), float("inf"), "0.5"])
def test_nearest_template_rejects_invalid(ratio):
    with pytest.raises(ValueError, match="aspect ratio"):
        schedules.nearest_template(ratio)


def test_head_codebook_disagreement_names_scale():
    settings = schedules.PRESETS["720p"]
    schedule = schedules.scale_schedule(0.562, settings.pn, 81)
    # Lower the codebook threshold so that the last semantic-head scale gets the detail codebook.
    last_semantic = schedule[settings.semantic_scales - 1]
    lowered = dataclasses.replace(settings, detail_scale_min_tokens=last_semantic[1] * last_semantic[2])
    first_full = schedules.first_full_spatial_size_scale_index(schedule)
    info = schedules.scale_pack_info(schedule, first_full)

    with pytest.raises(ValueError, match=f"scale {settings.semantic_scales - 1} "):
        schedules.build_steps(schedule, lowered, first_full, info)


def test_repetition_length_mismatch_raises():
    schedule = schedules.scale_schedule(0.562, schedules.PRESETS["720p"].pn, 81)
    first_full = schedules.first_full_spatial_size_scale_index(schedule)
    info = schedules.scale_pack_info(schedule, first_full)
    with pytest.raises(ValueError, match="repetition lists"):
        schedules.build_steps(schedule, schedules.PRESETS["480p"], first_full, info)


def test_wrong_first_full_index_raises():
    schedule = schedules.scale_schedule(0.562, "0.40M", 81)
    first_full = schedules.first_full_spatial_size_scale_index(schedule)
    info = schedules.scale_pack_info(schedule, first_full)
    with pytest.raises(ValueError, match="first_full_spatial_size_scale_index"):
        schedules.build_steps(schedule, schedules.PRESETS["480p"], first_full - 1, info)


def test_missing_context_info_raises():
    schedule = schedules.scale_schedule(0.562, "0.40M", 81)
    first_full = schedules.first_full_spatial_size_scale_index(schedule)
    info = schedules.scale_pack_info(schedule, first_full)
    del info[len(schedule) - 1]
    with pytest.raises(ValueError, match="context_info"):
        schedules.build_steps(schedule, schedules.PRESETS["480p"], first_full, info)


def test_invalid_settings_raise():
    settings = schedules.PRESETS["480p"]
    with pytest.raises(ValueError, match="guidance"):
        dataclasses.replace(settings, guidance="pag")
    with pytest.raises(ValueError, match="codebook_rule"):
        dataclasses.replace(settings, codebook_rule="bits")
    with pytest.raises(ValueError, match="pn"):
        dataclasses.replace(settings, pn="2M")
    with pytest.raises(ValueError, match="video_scale_repetition"):
        dataclasses.replace(settings, video_scale_repetition=(3,))


def test_unknown_plan_resolution_raises():
    with pytest.raises(ValueError, match="1080p"):
        schedules.plan_schedule("1080p", 81)
