"""One call from text features (and optional frames) to the final code latent.

``generate`` picks the schedule of a preset (the released 720p / 480p scripts, or the
small models this project ships and tests with), builds ground-truth bits for
image-to-video and video continuation, and runs the pyramid loop.
"""

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from .conditioning import encode_gt_bits
from .model import TransformerConfig
from .sampler import Guidance, LoopResult, PyramidLoop, StepRecord, TokenPruner
from .schedules import (
    PRESETS,
    ScheduleSettings,
    SchedulePlan,
    build_schedule,
    build_steps,
    check_video_frames,
    first_full_spatial_size_scale_index,
    latent_frames,
    nearest_template,
    plan_schedule,
    scale_pack_info,
    template_sizes,
)

logger = logging.getLogger(__name__)

VAE_STRIDE = 16  # pixels per latent cell


@dataclass(frozen=True)
class ModelPreset:
    """The schedule family a checkpoint was trained for.

    ``scale_subset`` picks relative scales of the template pyramid (None keeps all of the
    ``pn`` pyramid); ``frames_inner_clip`` is the latent frames per video clip.
    """

    name: str
    settings: ScheduleSettings
    scale_subset: tuple[int, ...] | None = None
    frames_inner_clip: int = 20
    video_frames: tuple[int, ...] = (1, 81)
    default_template: float = 0.562
    pixels_per_latent: int = VAE_STRIDE  # spatial compression of the preset's VAE
    # Small models are recognised by their architecture; the released 8B checkpoints share
    # one architecture for 720p and 480p, so their files name the resolution instead.
    transformer_config: TransformerConfig | None = None


def _tiny_preset() -> ModelPreset:
    """Build the preset of the reference fixtures' tiny models: 5 scales, clips of 2 latent frames."""
    settings = replace(
        PRESETS["720p"],
        pn="0.06M",
        image_scale_repetition=(3, 3, 2, 2, 1),
        video_scale_repetition=(3, 3, 2, 1, 1),
        semantic_scales=3,
        detail_scale_min_tokens=20,
        frames_inner_clip=2,
    )
    config = TransformerConfig(embed_dim=128, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=256,
                               text_channels=32, block_chunks=2)
    return ModelPreset("tiny", settings, scale_subset=(0, 1, 3, 4, 7), frames_inner_clip=2,
                       video_frames=(1, 17), transformer_config=config)


MODEL_PRESETS: dict[str, ModelPreset] = {
    "720p": ModelPreset("720p", PRESETS["720p"], video_frames=(1, 81)),
    "480p": ModelPreset("480p", PRESETS["480p"], video_frames=(1, 81, 161)),
    "tiny": _tiny_preset(),
}


@dataclass(frozen=True)
class GenerationSettings:
    """User choices for one generation; None means the preset's value."""

    preset: str = "720p"
    video_frames: int = 81
    template: float | None = None
    seed: int = 41
    guidance: str | None = None
    guidance_scale: float | None = None
    tau_image: float | None = None
    tau_video: float | None = None
    generator_device: str | None = None
    skip_unneeded_forwards: bool = True


@dataclass
class StepStat:
    """Timing and token count of one visual step."""

    step: int
    si: int
    clip: int
    rel_si: int
    repeat_idx: int
    thw: tuple[int, int, int]
    tokens: int
    kept: int
    seconds: float
    forwarded: bool


@dataclass
class GenerationResult:
    """The code latent [1, 64, T, H, W] of the video and how it was made."""

    codes: torch.Tensor
    plan: SchedulePlan
    stats: list[StepStat] = field(default_factory=list)
    seconds: float = 0.0
    records: list[StepRecord] = field(default_factory=list)


def model_preset(name: str) -> ModelPreset:
    if name == "demo" and name not in MODEL_PRESETS:
        from .demo.preset import register_demo_preset  # the demo package imports this module

        register_demo_preset()
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
    return MODEL_PRESETS[name]


def preset_for_checkpoint(config: TransformerConfig, resolution: str | None = None) -> str | None:
    """Name the preset a loaded transformer runs with, or return None when its files do not name one.

    A small model is recognised by its architecture first, whatever its file names contain.
    ``resolution`` is what the checkpoint loader read from file names or metadata
    ('720p' or '480p' for the released model).
    """
    model_preset("demo")  # registers the demo preset
    for preset in MODEL_PRESETS.values():
        if preset.transformer_config is not None and preset.transformer_config == config:
            return preset.name
    if resolution in MODEL_PRESETS:
        return resolution
    return None


def schedule_settings(settings: GenerationSettings) -> ScheduleSettings:
    """Return the preset's script settings with the user's overrides applied."""
    base = model_preset(settings.preset).settings
    overrides = {
        "guidance": settings.guidance,
        "guidance_scale": settings.guidance_scale,
        "tau_image": settings.tau_image,
        "tau_video": settings.tau_video,
    }
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def check_sampling(settings: GenerationSettings) -> None:
    """Reject seeds, temperatures and guidance scales the sampler cannot use."""
    if not 0 <= settings.seed < 2**63:
        raise ValueError(f"seed={settings.seed} is out of range: use an integer in [0, 2**63)")
    for name in ("tau_image", "tau_video"):
        value = getattr(settings, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value} is invalid: temperatures must be finite and > 0")
    scale = settings.guidance_scale
    if scale is not None and not (math.isfinite(scale) and scale >= 1):
        raise ValueError(f"guidance_scale={scale} is invalid: use a finite value >= 1 (1 turns guidance off)")


def plan_generation(settings: GenerationSettings) -> SchedulePlan:
    """Schedule, context and steps of a generation; rejects frame counts the preset lacks."""
    preset = model_preset(settings.preset)
    check_sampling(settings)
    if settings.video_frames not in preset.video_frames:
        raise ValueError(
            f"video_frames={settings.video_frames} is not supported by the {preset.name} model; "
            f"use one of {list(preset.video_frames)}"
        )
    check_video_frames(settings.video_frames)

    template = settings.template if settings.template is not None else preset.default_template
    template = nearest_template(template)
    script = schedule_settings(settings)
    if preset.scale_subset is None:
        return plan_schedule(preset.name, settings.video_frames, template, script)
    return _plan_subset(preset, script, template, settings.video_frames)


def _plan_subset(preset: ModelPreset, script: ScheduleSettings, template: float, video_frames: int) -> SchedulePlan:
    sizes = template_sizes(template, script.pn)
    chosen = [sizes[i] for i in preset.scale_subset]
    schedule = build_schedule(chosen, latent_frames(video_frames), preset.frames_inner_clip)
    first_full = first_full_spatial_size_scale_index(schedule)
    context = scale_pack_info(schedule, first_full, frames_inner_clip=preset.frames_inner_clip)
    steps = build_steps(schedule, script, first_full, context)
    return SchedulePlan(schedule, script, first_full, context, steps)


def check_text_features(text_features: torch.Tensor, text_channels: int) -> None:
    """Reject prompt features that are not finite [L, text_channels] rows."""
    if text_features.dim() != 2 or text_features.shape[1] != text_channels or text_features.shape[0] == 0:
        raise ValueError(
            f"text features have shape {tuple(text_features.shape)}; the model needs [L, {text_channels}] "
            f"with L >= 1: use the text encoder this checkpoint was trained with"
        )
    if not torch.isfinite(text_features).all():
        raise ValueError("text features contain NaN or infinite values: check the text encoder's dtype and weights")


def check_frames_tensor(frames: torch.Tensor, what: str) -> None:
    """Reject conditioning frames that are not finite float [1, 3, F, H, W] in -1..1."""
    if frames.dim() != 5 or frames.shape[0] != 1 or frames.shape[1] != 3:
        layout = "[1, 3, H, W]" if what == "the input image" else "[1, 3, F, H, W]"
        raise ValueError(f"{what} has shape {tuple(frames.shape)}; expected {layout} (batch 1, RGB channels first)")
    if not frames.is_floating_point() or not torch.isfinite(frames).all():
        raise ValueError(f"{what} must be a finite float tensor, got dtype {frames.dtype} or NaN/inf values")
    low, high = float(frames.min()), float(frames.max())
    if low < -1.001 or high > 1.001:
        raise ValueError(f"{what} has values in [{low:.3g}, {high:.3g}]; scale the pixels to -1..1 first")


def pixel_size(settings: GenerationSettings, plan: SchedulePlan | None = None) -> tuple[int, int]:
    """Height and width in pixels of the frames a generation makes (and I2V/V2V inputs need)."""
    plan = plan or plan_generation(settings)
    stride = model_preset(settings.preset).pixels_per_latent
    _, h, w = plan.schedule[-1]
    return h * stride, w * stride


def check_frames_size(frames: torch.Tensor, settings: GenerationSettings, plan: SchedulePlan, what: str) -> None:
    """Reject conditioning frames [1, 3, F, H, W] whose size differs from the generation's."""
    expected = pixel_size(settings, plan)
    if tuple(frames.shape[-2:]) != expected:
        raise ValueError(
            f"{what} is {frames.shape[-2]}x{frames.shape[-1]} pixels but this resolution and aspect ratio "
            f"generate {expected[0]}x{expected[1]}: resize and crop it to that size first"
        )


def leaked_scales(plan: SchedulePlan, latent_frame_count: int) -> int:
    """Number of scales whose clips lie inside the first ``latent_frame_count`` latent frames."""
    covered = {s.si for s in plan.steps if s.frame_end <= latent_frame_count}
    return len(covered)


def teacher_bits_for(vae, settings: GenerationSettings, plan: SchedulePlan, image: torch.Tensor | None, video: torch.Tensor | None,
                     device) -> list | None:
    """Ground-truth bits for image-to-video ([1, 3, H, W]) or continuation ([1, 3, F, H, W])."""
    if image is None and video is None:
        return None
    if image is not None and video is not None:
        raise ValueError("give either an input image (image-to-video) or an input video (continuation), not both")
    if vae is None:
        raise ValueError("image-to-video and video continuation need the VAE to encode the input frames")
    what = "the input image" if video is None else "the input video"
    if image is not None and image.dim() != 4:
        raise ValueError(f"the input image has shape {tuple(image.shape)}; expected [1, 3, H, W]")
    frames = image[:, :, None] if video is None else video
    check_frames_tensor(frames, what)
    check_frames_size(frames, settings, plan, what)

    with torch.inference_mode():
        latent = vae.encode_raw_features(frames.to(device=device, dtype=torch.float32))
    leak = leaked_scales(plan, latent.shape[2])
    if leak == 0 or (video is not None and leak == len(plan.schedule)):
        raise ValueError(
            f"the input video gives {latent.shape[2]} latent frames, which must cover whole clips of the "
            f"{plan.steps[-1].frame_end}-frame schedule and leave at least one clip to generate"
        )
    logger.info("teacher-forcing %d of %d scales from the input frames", leak, len(plan.schedule))
    return encode_gt_bits(latent, plan.steps, leak)


def generate(
    model,
    text_features: torch.Tensor,
    settings: GenerationSettings,
    *,
    vae=None,
    image: torch.Tensor | None = None,
    video: torch.Tensor | None = None,
    pruner: TokenPruner | None = None,
    callback: Callable[[StepRecord], None] | None = None,
    negative_features: torch.Tensor | None = None,
    keep_records: bool = False,
) -> GenerationResult:
    """Generate the code latent of a video (or an image when video_frames == 1).

    ``image`` ([1, 3, H, W] in -1..1) makes it image-to-video and ``video``
    ([1, 3, F, H, W]) a continuation of those frames; both need ``vae``. ``callback``
    runs after every step and may raise to cancel the run.
    """
    started = time.perf_counter()
    plan = plan_generation(settings)
    check_text_features(text_features, model.config.text_channels)
    device = model.word_embed.weight.device
    teacher = teacher_bits_for(vae, settings, plan, image, video, device)

    generator = seeded_generator(settings.generator_device or device.type, settings.seed)
    full_hw = plan.schedule[-1][1:]
    guidance = Guidance(plan.settings.guidance, plan.settings.apg_norm_threshold)

    stats: list[StepStat] = []

    def on_step(record: StepRecord) -> None:
        step = record.step
        stats.append(StepStat(step.step, step.si, step.clip, step.rel_si, step.repeat_idx, step.thw,
                              step.L, record.kept, record.seconds, record.forwarded))
        if callback is not None:
            callback(record)

    loop = PyramidLoop(model, plan.steps, full_hw, guidance, generator, teacher_bits=teacher, pruner=pruner,
                       callback=on_step, skip_unneeded_forwards=settings.skip_unneeded_forwards,
                       keep_records=keep_records)
    result: LoopResult = loop.run(text_features, negative_features)

    seconds = time.perf_counter() - started
    logger.info("generated %s codes in %.1f s", tuple(result.codes.shape), seconds)
    return GenerationResult(result.codes, plan, stats, seconds, result.records)


def seeded_generator(device: str, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``; the sampler draws every bit from it."""
    try:
        return torch.Generator(device=device).manual_seed(seed)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"cannot create a random generator on device {device!r} ({error}); "
                         "use 'cpu' or an available 'cuda' device") from error


def step_count(settings: GenerationSettings) -> int:
    """Visual steps of a generation, for progress bars."""
    return len(plan_generation(settings).steps)


def supported_frames(preset: str) -> Sequence[int]:
    return model_preset(preset).video_frames


def generate_segment(
    model,
    text_features: torch.Tensor,
    former: torch.Tensor,
    first_frame: torch.Tensor,
    plan: SchedulePlan,
    spec,
    *,
    seed: int = 0,
    pruner: TokenPruner | None = None,
    callback: Callable[[StepRecord], None] | None = None,
    keep_records: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, LoopResult]:
    """Generate one segment of the interactive long-video mode.

    ``former`` [1, 64, F, H, W] is the latent of the story so far (its last F frames), and
    ``first_frame`` [1, 64, 1, H, W] is the story's first latent frame. ``plan`` is a
    one-clip schedule (``plan_interactive_clip``) and ``spec`` an ``InteractiveConditionSpec``.
    The generator is seeded anew for every segment, as the reference does. Returns the new
    clip's codes, the former latent for the next segment and the loop result.
    """
    from .conditioning import interactive_conditions, next_former

    check_text_features(text_features, model.config.text_channels)
    device = model.word_embed.weight.device
    conditions = interactive_conditions(former.to(device), first_frame.to(device), spec)
    generator = seeded_generator(device.type, seed)
    guidance = Guidance(plan.settings.guidance, plan.settings.apg_norm_threshold)

    loop = PyramidLoop(model, plan.steps, plan.schedule[-1][1:], guidance, generator, pruner=pruner,
                       callback=callback, conditions=conditions, keep_records=keep_records)
    result = loop.run(text_features)
    return result.codes, next_former(former.to(device), result.codes), result
