"""Scale schedules of InfinityStar: resolution templates, clips, attention context, per-step plan.

Pure Python (no torch, no numpy). The rules follow the reference code of
FoundationVision/InfinityStar at commit 0446330:

- ``infinity/schedules/dynamic_resolution.py``: resolution templates and the
  ``infinity_elegant_clip20frames_v2`` tables (also used by ``infinity_star_interact``);
- ``infinity/schedules/infinity_elegant.py:get_scale_pack_info``: which earlier scale each
  scale attends to and its latent frame range;
- ``Infinity.ar_infer_infinity_elegant`` / ``ar_infer_infinity_star_interact``: the order of
  the visual forwards (repetitions, global step counter, head, codebook, temperature);
- ``tools/infer_video_720p.py``, ``tools/infer_video_480p.py``, ``tools/infer_interact_480p.py``:
  the script settings in ``PRESETS``.

A schedule is a list of (t, h, w) latent sizes, one per scale. Clip 0 is the image pyramid
(t = 1); every later clip repeats the same spatial pyramid with t latent frames.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

logger = logging.getLogger(__name__)

Scale = tuple[int, int, int]  # (t, h, w) in latent units
SpatialSize = tuple[int, int]  # (h, w) in latent units

# Side lengths s of the base pyramid: each scale has about s*s tokens per frame.
BASE_SIDE_LENGTHS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 40, 60)
# Landscape (and square) h/w ratios. The portrait templates are their transposes.
BASE_ASPECT_RATIOS = (1.0, 100 / 116, 3 / 4, 2 / 3, 9 / 16, 1 / 2, 2 / 5, 1 / 3)
# Number of base scales per clip for each `pn` (the first n side lengths).
PN_SCALE_COUNTS = {"0.06M": 11, "0.25M": 13, "0.40M": 14, "0.90M": 15}

VAE_SPATIAL_STRIDE = 16  # pixels per latent cell (VAE /8 then 2x2 patchify)
TEMPORAL_COMPRESSION = 4  # video frames per latent frame, after the first frame
# Schedules exist for every 4 latent frames (1 s at 16 fps), i.e. 16m + 1 video frames.
SCHEDULE_VIDEO_FRAME_STEP = 16
FRAMES_INNER_CLIP = 20  # latent frames per video clip in the released schedules

SEMANTIC_BITS = 16  # semantic_scale_dim: bit labels per token of a semantic scale
DETAIL_BITS = 64  # detail_scale_dim: bit labels per token of a detail scale
BITS_BY_KIND = {"semantic": SEMANTIC_BITS, "detail": DETAIL_BITS}
# Reference module names, as recorded in state dicts and reference logs.
HEAD_MODULE = {"semantic": "semantic_head2", "detail": "head"}
LFQ_MODULE = {"semantic": "lfq_semantic", "detail": "lfq_detail"}

CODEBOOK_RULES = ("tokens", "scale_index")
GUIDANCE_KINDS = ("apg", "cfg")


# ----------------------------------------------------------------------------------------
# Resolution templates
# ----------------------------------------------------------------------------------------


def _base_spatial_sizes(h_div_w: float) -> list[SpatialSize]:
    """Compute the (h, w) pyramid of one aspect ratio, one entry per base side length."""
    sizes = []
    for side in BASE_SIDE_LENGTHS:
        # Same float operations as the reference. round() rounds half to even, like np.round.
        width_float = math.sqrt(side * side / h_div_w)
        height_float = width_float * h_div_w
        sizes.append((int(round(height_float)), int(round(width_float))))
    return sizes


def _template_key(ratio: float) -> float:
    """Truncate a ratio to three decimals, as the reference keys its templates."""
    return int(ratio * 1000) / 1000


def _build_template_sizes() -> dict[float, list[SpatialSize]]:
    """Build {template: full (h, w) pyramid} in the reference's dict order.

    The key is h/w of the largest scale truncated to three decimals. Each non-square ratio
    is followed by its transpose under the inverse key.
    """
    templates: dict[float, list[SpatialSize]] = {}
    for ratio in BASE_ASPECT_RATIOS:
        sizes = _base_spatial_sizes(ratio)
        largest_h, largest_w = sizes[-1]
        templates[_template_key(largest_h / largest_w)] = sizes
        if ratio != 1.0:
            templates[_template_key(largest_w / largest_h)] = [(w, h) for h, w in sizes]
    return templates


_TEMPLATE_SIZES = _build_template_sizes()
TEMPLATES: tuple[float, ...] = tuple(_TEMPLATE_SIZES)  # h/w templates in the reference dict order


def _check_template(template: float | str) -> float:
    """Return the template as a float, or raise ValueError listing the valid ones."""
    try:
        value = float(template)
    except (TypeError, ValueError):
        value = None
    if value not in _TEMPLATE_SIZES:
        raise ValueError(
            f"unknown h/w template {template!r}: use one of {list(TEMPLATES)}, "
            "or nearest_template(h / w) to pick one for an aspect ratio"
        )
    return value


def _check_pn(pn: str) -> int:
    """Return the number of scales per clip of `pn`, or raise ValueError listing the valid ones."""
    if pn not in PN_SCALE_COUNTS:
        raise ValueError(f"unknown pn {pn!r}: use one of {list(PN_SCALE_COUNTS)}")
    return PN_SCALE_COUNTS[pn]


def nearest_template(h_div_w: float) -> float:
    """Return the template nearest to the ratio h/w (the first one in dict order on a tie)."""
    if not (isinstance(h_div_w, (int, float)) and math.isfinite(h_div_w) and h_div_w > 0):
        raise ValueError(f"invalid aspect ratio h/w = {h_div_w!r}: expected a finite number > 0")
    return min(TEMPLATES, key=lambda template: abs(h_div_w - template))


def template_sizes(template: float | str, pn: str) -> list[SpatialSize]:
    """Return the (h, w) latent sizes of one clip's pyramid for a template and `pn`."""
    template_value = _check_template(template)
    scale_count = _check_pn(pn)
    return list(_TEMPLATE_SIZES[template_value][:scale_count])


def template_pixels(template: float | str, pn: str) -> tuple[int, int]:
    """Return the output video size (height, width) in pixels for a template and `pn`."""
    height, width = template_sizes(template, pn)[-1]
    return height * VAE_SPATIAL_STRIDE, width * VAE_SPATIAL_STRIDE


# ----------------------------------------------------------------------------------------
# Frame counts
# ----------------------------------------------------------------------------------------


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"invalid {name}={value!r}: expected an integer >= 1")
    return value


def latent_frames(video_frames: int) -> int:
    """Return the latent frame count of a video: the first frame plus one per 4 frames.

    The causal VAE maps 4k + 1 video frames to k + 1 latent frames; other counts are rejected.
    """
    _check_positive_int(video_frames, "video_frames")
    if (video_frames - 1) % TEMPORAL_COMPRESSION != 0:
        lower = video_frames - (video_frames - 1) % TEMPORAL_COMPRESSION
        raise ValueError(
            f"invalid video_frames={video_frames}: the VAE needs 4k + 1 frames; "
            f"nearest valid counts: {lower}, {lower + TEMPORAL_COMPRESSION}"
        )
    return video_frames // TEMPORAL_COMPRESSION + 1


def video_frames_for(latent_frame_count: int) -> int:
    """Return the video frame count that decodes from `latent_frame_count` latent frames."""
    _check_positive_int(latent_frame_count, "latent_frame_count")
    return (latent_frame_count - 1) * TEMPORAL_COMPRESSION + 1


def _nearest_valid_counts(value: int, step: int) -> list[int]:
    """Return the valid counts of the form step*m + 1 just below and above `value`."""
    below = ((value - 1) // step) * step + 1
    return [count for count in (below, below + step) if count >= 1] or [1]


def check_video_frames(video_frames: int) -> int:
    """Validate a schedule frame count (16m + 1) and return its latent frame count."""
    if isinstance(video_frames, bool) or not isinstance(video_frames, int):
        raise ValueError(f"invalid video_frames={video_frames!r}: expected an integer 16m + 1")
    if video_frames < 1 or (video_frames - 1) % SCHEDULE_VIDEO_FRAME_STEP != 0:
        nearest = _nearest_valid_counts(video_frames, SCHEDULE_VIDEO_FRAME_STEP)
        raise ValueError(
            f"invalid video_frames={video_frames}: InfinityStar schedules need 16m + 1 frames "
            f"(1, 17, 33, ..., 81, ..., 161); nearest valid counts: {nearest}"
        )
    return latent_frames(video_frames)


# ----------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------


def _check_spatial_sizes(spatial_sizes: Iterable[Sequence[int]]) -> list[SpatialSize]:
    sizes = [tuple(size) for size in spatial_sizes]
    if not sizes:
        raise ValueError("spatial_sizes is empty: give at least one (h, w) size")
    for size in sizes:
        if len(size) != 2 or not all(isinstance(n, int) and n >= 1 for n in size):
            raise ValueError(f"invalid spatial size {size!r}: expected (h, w) integers >= 1")
    if sizes.index(sizes[-1]) != len(sizes) - 1:
        raise ValueError(
            f"the largest size {sizes[-1]} appears more than once in {sizes}: the last (h, w) closes a "
            "clip, so it must appear once per clip"
        )
    return sizes


def build_schedule(
    spatial_sizes: Iterable[Sequence[int]],
    latent_frame_count: int,
    frames_inner_clip: int = FRAMES_INNER_CLIP,
) -> list[Scale]:
    """Build a schedule: an image pyramid (t = 1), then one pyramid per video clip.

    The latent frames after the first are cut into clips of `frames_inner_clip` frames; the
    last clip takes the remainder. ``spatial_sizes`` is one clip's (h, w) list, smallest first.
    """
    sizes = _check_spatial_sizes(spatial_sizes)
    _check_positive_int(latent_frame_count, "latent_frame_count")
    _check_positive_int(frames_inner_clip, "frames_inner_clip")

    schedule: list[Scale] = [(1, h, w) for h, w in sizes]
    video_latent_frames = latent_frame_count - 1
    clip_count = math.ceil(video_latent_frames / frames_inner_clip)
    for clip in range(clip_count):
        clip_frames = min(frames_inner_clip, video_latent_frames - clip * frames_inner_clip)
        schedule.extend((clip_frames, h, w) for h, w in sizes)
    return schedule


def scale_schedule(
    template: float | str,
    pn: str,
    video_frames: int,
    frames_inner_clip: int = FRAMES_INNER_CLIP,
) -> list[Scale]:
    """Return the schedule of a template, `pn` and video length (16m + 1 frames).

    Equals ``pt2scale_schedule[video_frames // 4 + 1]`` of the reference table when
    `frames_inner_clip` is 20.
    """
    sizes = template_sizes(template, pn)
    return build_schedule(sizes, check_video_frames(video_frames), frames_inner_clip)


def clip_schedule(spatial_sizes: Iterable[Sequence[int]], clip_frames: int) -> list[Scale]:
    """Return the scales of one video clip: every (h, w) with t = `clip_frames`."""
    sizes = _check_spatial_sizes(spatial_sizes)
    _check_positive_int(clip_frames, "clip_frames")
    return [(clip_frames, h, w) for h, w in sizes]


def interactive_clip_schedule(
    template: float | str, pn: str = "0.40M", frames_inner_clip: int = FRAMES_INNER_CLIP
) -> list[Scale]:
    """Return the scales the interactive mode generates per segment: one clip, no image pyramid.

    The reference takes the 21-latent-frame schedule and drops its image pyramid, which
    leaves the clip's pyramid with t = 20 (14 scales at 0.40M).
    """
    return clip_schedule(template_sizes(template, pn), frames_inner_clip)


def _check_table_video_frames(video_frames: int) -> int:
    """Validate a table frame count; the reference asserts whole 20-frame clips here."""
    latent_count = check_video_frames(video_frames)
    if (latent_count - 1) % FRAMES_INNER_CLIP != 0:
        step = FRAMES_INNER_CLIP * TEMPORAL_COMPRESSION
        raise ValueError(
            f"invalid video_frames={video_frames} for a resolution table: the reference builds "
            f"tables only for whole 20-latent-frame clips (80m + 1 frames); nearest valid counts: "
            f"{_nearest_valid_counts(video_frames, step)}. Use scale_schedule() for other lengths"
        )
    return latent_count


def _template_table(sizes: list[SpatialSize], latent_count: int) -> dict:
    """Build one template/pn entry of the resolution table."""
    frame_step = SCHEDULE_VIDEO_FRAME_STEP // TEMPORAL_COMPRESSION
    pt2scale_schedule = {1: [(1, h, w) for h, w in sizes]}
    for pt in range(1 + frame_step, latent_count + 1, frame_step):
        pt2scale_schedule[pt] = build_schedule(sizes, pt, FRAMES_INNER_CLIP)
    height, width = sizes[-1]
    return {
        "pixel": (height * VAE_SPATIAL_STRIDE, width * VAE_SPATIAL_STRIDE),
        "scales_in_one_clip": len(sizes),
        "max_video_scales": len(pt2scale_schedule[latent_count]),
        "pt2scale_schedule": pt2scale_schedule,
    }


def dynamic_resolution_table(video_frames: int) -> dict:
    """Compute the reference's ``infinity_elegant_clip20frames_v2`` table for a video length.

    Returns ``{"h_div_w_templates_in_dict_order": [...], "templates": {repr(template): {pn:
    {"pixel", "scales_in_one_clip", "max_video_scales", "pt2scale_schedule"}}}}`` where
    ``pt2scale_schedule`` maps each latent frame count pt = 1, 5, 9, ... up to the video's
    to its schedule. Keys are ints and sizes tuples; a JSON round trip gives the string-keyed
    form the reference dumps. `video_frames` must be 80m + 1 (1, 81, 161, ...).
    """
    latent_count = _check_table_video_frames(video_frames)
    templates = {}
    for template, full_sizes in _TEMPLATE_SIZES.items():
        templates[repr(template)] = {
            pn: _template_table(full_sizes[:scale_count], latent_count)
            for pn, scale_count in PN_SCALE_COUNTS.items()
        }
    return {"h_div_w_templates_in_dict_order": list(TEMPLATES), "templates": templates}


def first_full_spatial_size_scale_index(schedule: Sequence[Sequence[int]]) -> int:
    """Return the first scale index whose (h, w) is the schedule's final (h, w)."""
    if not schedule:
        raise ValueError("the schedule is empty")
    final_size = tuple(schedule[-1][1:])
    return next(si for si, scale in enumerate(schedule) if tuple(scale[1:]) == final_size)


def _as_schedule(schedule: Iterable[Sequence[int]]) -> list[Scale]:
    scales = [tuple(scale) for scale in schedule]
    for scale in scales:
        if len(scale) != 3 or not all(isinstance(n, int) and n >= 1 for n in scale):
            raise ValueError(f"invalid scale {scale!r}: expected (t, h, w) integers >= 1")
    if not scales:
        raise ValueError("the schedule is empty")
    return scales


def check_schedule(schedule: Iterable[Sequence[int]], first_full_index: int) -> list[Scale]:
    """Validate the clip structure of a schedule and return it as a list of tuples.

    Every clip has ``first_full_index + 1`` scales with the same (h, w) pyramid and one t, and
    only the last scale of a clip has the final (h, w).
    """
    scales = _as_schedule(schedule)
    computed = first_full_spatial_size_scale_index(scales)
    if first_full_index != computed:
        raise ValueError(
            f"first_full_spatial_size_scale_index={first_full_index} does not match the "
            f"schedule: its first scale with the final (h, w) {scales[-1][1:]} is {computed}"
        )
    scales_per_clip = first_full_index + 1
    if len(scales) % scales_per_clip != 0:
        raise ValueError(
            f"schedule of {len(scales)} scales is not a whole number of clips of "
            f"{scales_per_clip} scales"
        )
    pyramid = [scale[1:] for scale in scales[:scales_per_clip]]
    for start in range(0, len(scales), scales_per_clip):
        clip = scales[start : start + scales_per_clip]
        if [scale[1:] for scale in clip] != pyramid or len({scale[0] for scale in clip}) != 1:
            raise ValueError(
                f"clip starting at scale {start} is {clip}: expected the (h, w) pyramid "
                f"{pyramid} with one frame count t"
            )
    return scales


# ----------------------------------------------------------------------------------------
# Attention context (get_scale_pack_info)
# ----------------------------------------------------------------------------------------


def _clip_frame_range(
    schedule: list[Scale], clip: int, scales_per_clip: int, frames_inner_clip: int
) -> tuple[int, int]:
    """Return the latent frame range [start, end) of a clip, by the reference formula."""
    clip_frames = schedule[scales_per_clip * (clip + 1) - 1][0]
    if clip == 0:
        return 0, clip_frames
    start = schedule[0][0] + (clip - 1) * frames_inner_clip
    return start, start + clip_frames


def _reference_pairs(
    clip_ids: list[int], scales_per_clip: int, context_interval: int, context_from_largest_no: int
) -> list[list[int]]:
    """Attach to each referenced clip the inner scale index it contributes."""
    return [
        [clip_id, max(0, scales_per_clip - context_from_largest_no - context_interval * i)]
        for i, clip_id in enumerate(clip_ids)
    ]


def scale_pack_info(
    schedule: Iterable[Sequence[int]],
    first_full_spatial_size_scale_index: int,
    frames_inner_clip: int = FRAMES_INNER_CLIP,
    context_frames: int = 10000,
    context_interval: int = 2,
    context_from_largest_no: int = 1,
) -> dict[int, dict]:
    """Compute, per scale index, its clip, latent frame range and the earlier scales it attends to.

    Mirrors ``get_scale_pack_info``. Each value has ``clipid``, ``frame_ss``, ``frame_ee``,
    ``left_ref``/``right_ref`` ([clip, inner scale] pairs, clip -1 meaning none) and, with
    ``context_from_largest_no > 0``, ``left_ref_sids``, ``right_ref_sids`` and ``ref_sids``
    (the last scale of the previous clip for clips >= 1). With ``context_from_largest_no <= 0``
    ``ref_sids`` is every earlier scale, as in the reference.
    """
    scales = _as_schedule(schedule)
    scales_per_clip = first_full_spatial_size_scale_index + 1
    total_clips = len(scales) // scales_per_clip
    context_clips = context_frames // frames_inner_clip
    info: dict[int, dict] = {}

    for si, scale in enumerate(scales):
        clip = si // scales_per_clip
        frame_start, frame_end = _clip_frame_range(scales, clip, scales_per_clip, frames_inner_clip)
        if clip > 0 and context_clips < total_clips - 1 and scale[0] != frames_inner_clip:
            raise ValueError(
                f"scale {si} has t={scale[0]} but a limited context ({context_clips} clips) "
                f"needs every video clip to have frames_inner_clip={frames_inner_clip} frames"
            )
        if si <= first_full_spatial_size_scale_index:
            left_clips = [-1]
        else:
            left_clips = [clip - 1][:context_clips]
        info[si] = {"clipid": clip, "frame_ss": frame_start, "frame_ee": frame_end}
        if context_from_largest_no > 0:
            pair_args = (scales_per_clip, context_interval, context_from_largest_no)
            info[si]["left_ref"] = _reference_pairs(left_clips, *pair_args)
            info[si]["right_ref"] = _reference_pairs([-1], *pair_args)
        else:
            info[si]["left_ref"], info[si]["right_ref"] = left_clips, [-1]

    for si, entry in info.items():
        if context_from_largest_no > 0:
            entry["left_ref_sids"] = [
                ref_clip * scales_per_clip + inner for ref_clip, inner in entry["left_ref"] if ref_clip != -1
            ]
            # The reference never fills right_ref (its clip is always -1).
            entry["right_ref_sids"] = []
            entry["ref_sids"] = entry["left_ref_sids"] + entry["right_ref_sids"]
        else:
            entry["ref_sids"] = list(range(si))
    return info


# ----------------------------------------------------------------------------------------
# Script settings
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleSettings:
    """Per-model generation settings of a reference inference script.

    Repetition lists are indexed by the scale index within a clip: image_scale_repetition for
    clip 0, video_scale_repetition for later clips. The temperature is tau_image for the scales
    of clip 0 and tau_video after. ``guidance_scale`` is the CFG/APG weight of every scale.
    """

    pn: str
    image_scale_repetition: tuple[int, ...]
    video_scale_repetition: tuple[int, ...]
    semantic_scales: int  # head: semantic_head2 for scale-in-clip index < semantic_scales
    detail_scale_min_tokens: int  # codebook 'tokens' rule: detail if h*w >= this
    tau_image: float
    tau_video: float
    guidance: str  # 'apg' or 'cfg'
    guidance_scale: float
    apg_norm_threshold: float
    max_repeat_times: int  # repetitions run per scale are capped here
    codebook_rule: str = "tokens"  # 'tokens' (h*w threshold) or 'scale_index' (si >= semantic_scales)
    video_frames: tuple[int, ...] = (81,)  # frame counts the released script generates
    h_div_w: float | None = 0.571  # aspect ratio the script requests (None: from the input video)
    dynamic_scale_schedule: str = "infinity_elegant_clip20frames_v2"
    frames_inner_clip: int = FRAMES_INNER_CLIP
    context_frames: int = 10000
    context_interval: int = 2
    context_from_largest_no: int = 1
    i2v_gt_leak: int | None = None  # teacher-forced scales for I2V (None: len(schedule) // 2)
    v2v_gt_leak: int | None = None  # teacher-forced scales for V2V (None: V2V not supported)
    seed: int = 41

    def __post_init__(self):
        _check_pn(self.pn)
        if self.guidance not in GUIDANCE_KINDS:
            raise ValueError(f"invalid guidance {self.guidance!r}: use one of {GUIDANCE_KINDS}")
        if self.codebook_rule not in CODEBOOK_RULES:
            raise ValueError(f"invalid codebook_rule {self.codebook_rule!r}: use one of {CODEBOOK_RULES}")
        if len(self.image_scale_repetition) != len(self.video_scale_repetition):
            raise ValueError(
                f"image_scale_repetition has {len(self.image_scale_repetition)} entries and "
                f"video_scale_repetition {len(self.video_scale_repetition)}: give one per scale of a clip"
            )
        for count in self.image_scale_repetition + self.video_scale_repetition:
            _check_positive_int(count, "scale repetition")
        _check_positive_int(self.max_repeat_times, "max_repeat_times")

    def i2v_gt_leak_for(self, schedule: Sequence[Scale]) -> int:
        """Return the number of teacher-forced scales for image-to-video on `schedule`."""
        return len(schedule) // 2 if self.i2v_gt_leak is None else self.i2v_gt_leak


_REPEAT_3 = (3,) * 12

PRESETS: dict[str, ScheduleSettings] = {
    # tools/infer_video_720p.py
    "720p": ScheduleSettings(
        pn="0.90M",
        image_scale_repetition=(3,) * 15,
        video_scale_repetition=_REPEAT_3 + (2, 1, 1),
        semantic_scales=12,
        detail_scale_min_tokens=750,
        tau_image=1.0,
        tau_video=0.4,
        guidance="apg",
        guidance_scale=34,
        apg_norm_threshold=0.05,
        max_repeat_times=10000,
        video_frames=(81,),
    ),
    # tools/infer_video_480p.py (5 s and 10 s)
    "480p": ScheduleSettings(
        pn="0.40M",
        image_scale_repetition=(3,) * 14,
        video_scale_repetition=_REPEAT_3 + (2, 1),
        semantic_scales=11,
        detail_scale_min_tokens=350,
        tau_image=1.0,
        tau_video=0.4,
        guidance="apg",
        guidance_scale=34,
        apg_norm_threshold=0.05,
        max_repeat_times=10000,
        video_frames=(81, 161),
        i2v_gt_leak=14,
        v2v_gt_leak=28,
    ),
    # tools/infer_interact_480p.py: one 20-frame clip per segment, no image pyramid.
    "interact_480p": ScheduleSettings(
        pn="0.40M",
        image_scale_repetition=_REPEAT_3 + (2, 1),
        video_scale_repetition=_REPEAT_3 + (2, 1),
        semantic_scales=11,
        detail_scale_min_tokens=350,
        tau_image=0.5,
        tau_video=0.5,
        guidance="cfg",
        guidance_scale=3,
        apg_norm_threshold=0.05,
        max_repeat_times=1000,
        codebook_rule="scale_index",
        video_frames=(161,),
        h_div_w=None,
        dynamic_scale_schedule="infinity_star_interact",
        context_frames=1000,
        seed=0,
    ),
}


def _check_preset(name: str) -> ScheduleSettings:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use one of {list(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------------------
# Per-step plan
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One visual forward: one repetition of one scale.

    ``real_sid`` is the RoPE scale position (minus the 512 text rows). ``ref_sids`` lists the
    scales whose cached K/V this step attends to, and ``ref_steps`` the steps that cached
    them. ``canvas_thw`` is the size of the clip's running code canvas; ``frame_start`` and
    ``frame_end`` its latent frame range.
    """

    step: int
    si: int
    clip: int
    rel_si: int  # scale index within the clip
    repeat_idx: int
    repeat_times: int  # configured repetitions (real_sid advances by this even when capped)
    real_sid: int
    thw: Scale
    L: int  # tokens: t * h * w
    head: str  # 'semantic' (semantic_head2) or 'detail' (head)
    codebook: str  # 'semantic' (lfq_semantic) or 'detail' (lfq_detail)
    bits: int  # bit labels per token
    tau: float
    cfg: float  # guidance scale
    ref_sids: tuple[int, ...]
    ref_steps: tuple[int, ...]
    frame_start: int
    frame_end: int
    canvas_thw: Scale
    last_repetition: bool  # this step stores the scale's K/V
    first_in_clip: bool  # the input is a zero canvas (word_embed bias only)
    referenced: bool  # a later scale attends to this scale's K/V
    last_read_si: int | None  # the last scale that attends to this one

    @property
    def keep_kv(self) -> bool:
        """True when this step's K/V must be kept for a later scale."""
        return self.last_repetition and self.referenced

    @property
    def head_module(self) -> str:
        return HEAD_MODULE[self.head]

    @property
    def lfq_module(self) -> str:
        return LFQ_MODULE[self.codebook]


def _head_kind(rel_si: int, settings: ScheduleSettings) -> str:
    return "semantic" if rel_si < settings.semantic_scales else "detail"


def _codebook_kind(si: int, scale: Scale, settings: ScheduleSettings, codebook_rule: str) -> str:
    if codebook_rule == "tokens":
        is_detail = scale[1] * scale[2] >= settings.detail_scale_min_tokens
    elif codebook_rule == "scale_index":
        is_detail = si >= settings.semantic_scales
    else:
        raise ValueError(f"invalid codebook_rule {codebook_rule!r}: use one of {CODEBOOK_RULES}")
    return "detail" if is_detail else "semantic"


def _check_head_matches_codebook(si: int, scale: Scale, head: str, codebook: str) -> None:
    if BITS_BY_KIND[head] != BITS_BY_KIND[codebook]:
        raise ValueError(
            f"scale {si} {scale}: the {head} head predicts {BITS_BY_KIND[head]} bits but the "
            f"{codebook} codebook needs {BITS_BY_KIND[codebook]}; adjust semantic_scales or "
            "detail_scale_min_tokens so both rules agree"
        )


def scale_temperatures(
    scale_count: int, first_full_spatial_size_scale_index: int, settings: ScheduleSettings
) -> list[float]:
    """Return tau per scale: tau_image up to the first full-size scale, tau_video after."""
    tower_split_index = first_full_spatial_size_scale_index + 1
    return [settings.tau_image if si < tower_split_index else settings.tau_video for si in range(scale_count)]


def _readers_by_scale(context_info: dict[int, dict]) -> dict[int, list[int]]:
    """Map each referenced scale to the scales that attend to it."""
    readers: dict[int, list[int]] = {}
    for si in sorted(context_info):
        for ref_si in context_info[si]["ref_sids"]:
            readers.setdefault(ref_si, []).append(si)
    return readers


def _check_context_info(context_info: dict, scale_count: int) -> dict[int, dict]:
    info = {int(si): entry for si, entry in context_info.items()}
    missing = sorted(set(range(scale_count)) - set(info))
    if missing:
        raise ValueError(f"context_info has no entry for scales {missing}: build it with scale_pack_info()")

    for si in range(scale_count):
        later_refs = [ref_si for ref_si in info[si]["ref_sids"] if not 0 <= ref_si < si]
        if later_refs:
            raise ValueError(
                f"context_info of scale {si} references scales {later_refs}: a scale can only "
                "attend to earlier scales; build context_info with scale_pack_info()"
            )
    return info


def _check_repetition_lengths(settings: ScheduleSettings, scales_per_clip: int) -> None:
    if len(settings.image_scale_repetition) != scales_per_clip:
        raise ValueError(
            f"the repetition lists have {len(settings.image_scale_repetition)} entries but a "
            f"clip of this schedule has {scales_per_clip} scales"
        )


def _clip_canvas(scales: list[Scale], clip: int, scales_per_clip: int, first_full_index: int) -> Scale:
    """Return the canvas size of a clip: its first full-size scale for clip 0, else its last scale."""
    # NOTE: the reference sizes every video clip's canvas by the schedule's final scale. The
    # two differ only when the last clip is shorter than the others (e.g. 97 frames).
    if clip == 0:
        return scales[first_full_index]
    return scales[(clip + 1) * scales_per_clip - 1]


@dataclass(frozen=True)
class _ScalePlan:
    """Settings that all repetitions of one scale share."""

    si: int
    clip: int
    rel_si: int
    scale: Scale
    repeat_times: int
    run_times: int
    head: str
    codebook: str
    tau: float
    canvas: Scale
    ref_sids: tuple[int, ...]
    ref_steps: tuple[int, ...]
    frame_range: tuple[int, int]
    readers: tuple[int, ...]


def _scale_steps(plan: _ScalePlan, first_step: int, first_real_sid: int, cfg: float) -> list[Step]:
    """Expand one scale into its repetitions."""
    t, h, w = plan.scale
    return [
        Step(
            step=first_step + repeat_idx,
            si=plan.si,
            clip=plan.clip,
            rel_si=plan.rel_si,
            repeat_idx=repeat_idx,
            repeat_times=plan.repeat_times,
            real_sid=first_real_sid + repeat_idx,
            thw=plan.scale,
            L=t * h * w,
            head=plan.head,
            codebook=plan.codebook,
            bits=BITS_BY_KIND[plan.head],
            tau=plan.tau,
            cfg=cfg,
            ref_sids=plan.ref_sids,
            ref_steps=plan.ref_steps,
            frame_start=plan.frame_range[0],
            frame_end=plan.frame_range[1],
            canvas_thw=plan.canvas,
            last_repetition=repeat_idx == plan.run_times - 1,
            first_in_clip=plan.rel_si == 0 and repeat_idx == 0,
            referenced=bool(plan.readers),
            last_read_si=max(plan.readers) if plan.readers else None,
        )
        for repeat_idx in range(plan.run_times)
    ]


def build_steps(
    schedule: Iterable[Sequence[int]],
    settings: ScheduleSettings,
    first_full_spatial_size_scale_index: int,
    context_info: dict,
    codebook_rule: str | None = None,
) -> list[Step]:
    """List every visual forward of a generation, in order.

    Clip 0 uses image_scale_repetition, later clips video_scale_repetition. Each scale runs
    min(repetitions, max_repeat_times) steps while the global counter real_sid advances by
    the full repetition count, as the reference loop does. ``codebook_rule`` defaults to
    ``settings.codebook_rule``.
    """
    first_full = first_full_spatial_size_scale_index
    scales = check_schedule(schedule, first_full)
    scales_per_clip = first_full + 1
    _check_repetition_lengths(settings, scales_per_clip)
    info = _check_context_info(context_info, len(scales))
    rule = settings.codebook_rule if codebook_rule is None else codebook_rule
    taus = scale_temperatures(len(scales), first_full, settings)
    readers = _readers_by_scale(info)

    steps: list[Step] = []
    last_step_of_scale: dict[int, int] = {}
    cumulative_repeats = 0
    for si, scale in enumerate(scales):
        clip, rel_si = divmod(si, scales_per_clip)
        repetitions = settings.image_scale_repetition if clip == 0 else settings.video_scale_repetition
        head = _head_kind(rel_si, settings)
        codebook = _codebook_kind(si, scale, settings, rule)
        _check_head_matches_codebook(si, scale, head, codebook)
        ref_sids = tuple(info[si]["ref_sids"])

        scale_plan = _ScalePlan(
            si=si,
            clip=clip,
            rel_si=rel_si,
            scale=scale,
            repeat_times=repetitions[rel_si],
            run_times=min(repetitions[rel_si], settings.max_repeat_times),
            head=head,
            codebook=codebook,
            tau=taus[si],
            canvas=_clip_canvas(scales, clip, scales_per_clip, first_full),
            ref_sids=ref_sids,
            ref_steps=tuple(last_step_of_scale[ref_si] for ref_si in ref_sids),
            frame_range=(info[si]["frame_ss"], info[si]["frame_ee"]),
            readers=tuple(readers.get(si, ())),
        )
        steps.extend(_scale_steps(scale_plan, len(steps), cumulative_repeats, settings.guidance_scale))

        last_step_of_scale[si] = len(steps) - 1
        cumulative_repeats += scale_plan.repeat_times
    return steps


# ----------------------------------------------------------------------------------------
# Plans for the released models
# ----------------------------------------------------------------------------------------


class SchedulePlan(NamedTuple):
    """Everything the sampler needs to run one generation (unpacks as a 5-tuple)."""

    schedule: list[Scale]
    settings: ScheduleSettings
    first_full_spatial_size_scale_index: int
    context_info: dict[int, dict]
    steps: list[Step]

    @property
    def tower_split_index(self) -> int:
        return self.first_full_spatial_size_scale_index + 1

    @property
    def tau_list(self) -> list[float]:
        """Temperature per scale index, as the reference's tau_list."""
        return scale_temperatures(len(self.schedule), self.first_full_spatial_size_scale_index, self.settings)

    @property
    def cfg_list(self) -> list[float]:
        """Guidance scale per scale index, as the reference's cfg_list."""
        return [self.settings.guidance_scale] * len(self.schedule)


def _plan(schedule: list[Scale], settings: ScheduleSettings, first_full_index: int) -> SchedulePlan:
    context_info = scale_pack_info(
        schedule,
        first_full_index,
        frames_inner_clip=settings.frames_inner_clip,
        context_frames=settings.context_frames,
        context_interval=settings.context_interval,
        context_from_largest_no=settings.context_from_largest_no,
    )
    steps = build_steps(schedule, settings, first_full_index, context_info)
    return SchedulePlan(schedule, settings, first_full_index, context_info, steps)


def plan_schedule(
    resolution: str,
    video_frames: int,
    template: float | str | None = None,
    settings: ScheduleSettings | None = None,
) -> SchedulePlan:
    """Plan a text/image-to-video generation with the '720p' or '480p' script settings.

    `template` defaults to the one nearest the script's aspect ratio (0.571 gives 0.562);
    `settings` overrides the preset.
    """
    if resolution not in ("720p", "480p"):
        raise ValueError(
            f"unknown resolution {resolution!r}: use '720p' or '480p' "
            "(plan_interactive_clip() plans the interactive model)"
        )
    settings = settings or PRESETS[resolution]
    if video_frames not in settings.video_frames:
        logger.warning(
            "video_frames=%s: the released %s script generates %s frames only; the model's RoPE "
            "frame table must cover %s latent frames",
            video_frames, resolution, list(settings.video_frames), video_frames // TEMPORAL_COMPRESSION + 1,
        )
    template_value = nearest_template(settings.h_div_w) if template is None else template
    schedule = scale_schedule(template_value, settings.pn, video_frames, settings.frames_inner_clip)
    return _plan(schedule, settings, first_full_spatial_size_scale_index(schedule))


def plan_interactive_clip(
    template: float | str, settings: ScheduleSettings | None = None
) -> SchedulePlan:
    """Plan one segment of the interactive mode: the scales of one clip, no image pyramid.

    `template` is chosen by the caller from the input video (``nearest_template(h / w)``).
    ``real_sid`` restarts at 0 and the clip's frame range is [0, frames_inner_clip).
    """
    settings = settings or _check_preset("interact_480p")
    schedule = interactive_clip_schedule(template, settings.pn, settings.frames_inner_clip)
    return _plan(schedule, settings, first_full_spatial_size_scale_index(schedule))
