"""The STAR sampler node: text, image or video in, the generated codes and run statistics out."""

import logging
import time

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..faststar import estimate, pipeline, pruning, schedules
from ..faststar.model import TransformerConfig
from . import patching, previews
from .types import (
    CHECKPOINT_INFO_KEY,
    PRUNING_OPTIONS_KEY,
    FastStarStats,
    GeneratedCodes,
    InfinityStarCodes,
    InfinityStarModel,
    InfinityStarVAE,
)

logger = logging.getLogger(__name__)

CATEGORY = "InfinityStar"
RESOLUTION_CHOICES = ("auto", "720p", "480p")
AUTO = "auto"
# Architecture of the released InfinityStar 8B model, whose 720p and 480p weights share it.
RELEASED_ARCHITECTURE = TransformerConfig()
# Seeds go to torch.Generator.manual_seed, which takes 64-bit values.
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def aspect_label(template: float) -> str:
    """Combo label of an h/w template, e.g. '0.562 (16:9 landscape)'."""
    if template == 1.0:
        return "1.000 (1:1 square)"
    ratio = 1 / template if template < 1 else template
    shape = "landscape" if template < 1 else "portrait"
    long_side, short_side = _nearest_fraction(ratio)
    pair = f"{long_side}:{short_side}" if template < 1 else f"{short_side}:{long_side}"
    return f"{template:.3f} ({pair} {shape})"


def _nearest_fraction(ratio: float) -> tuple[int, int]:
    # Width:height pairs of the reference's base aspect ratios (h/w = 1, 100/116, 3/4, ...).
    pairs = ((1, 1), (29, 25), (4, 3), (3, 2), (16, 9), (2, 1), (5, 2), (3, 1))
    return min(pairs, key=lambda pair: abs(pair[0] / pair[1] - ratio))


ASPECT_CHOICES = {AUTO: None, **{aspect_label(t): t for t in sorted(schedules.TEMPLATES)}}


class STARSampler(io.ComfyNode):
    """Run the InfinityStar spacetime pyramid, dense or with FastSTAR pruning."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfinityStarSampler",
            display_name="STAR Sampler (InfinityStar)",
            category=CATEGORY,
            description=(
                "Generates a video (or an image, with 1 frame) scale by scale, coarse to fine. Text-to-video "
                "by default; connect an image for image-to-video or frames for video continuation (both "
                "need the VAE). Runs FastSTAR when the model comes through the FastSTAR node. Shows "
                "progress per step, stops within one step on Cancel, and returns the codes for "
                "InfinityStar Decode plus the run statistics."
            ),
            inputs=[
                InfinityStarModel.Input("model", tooltip="The model, from the loader or the FastSTAR node."),
                io.Conditioning.Input("positive", tooltip="The prompt features from InfinityStar Text Encode."),
                io.Combo.Input(
                    "resolution", options=list(RESOLUTION_CHOICES), default=AUTO,
                    tooltip="Schedule of the released model: 720p (720x1280 at 16:9) or 480p (480x848). It must "
                            "match the checkpoint; auto takes the checkpoint's own. Small models (the demo "
                            "model, test models) always run their own schedule and ignore this.",
                ),
                io.Combo.Input(
                    "aspect_ratio", options=list(ASPECT_CHOICES), default=AUTO,
                    tooltip="Height/width template of the video. auto: the template nearest the input image "
                            "or video, else 16:9 landscape as in the reference scripts.",
                ),
                io.Int.Input(
                    "frames", default=81, min=1, max=161, step=16,
                    tooltip="Video length at 16 fps: 1 (image only), 81 (5 s) or, with the 480p model, "
                            "161 (10 s). The demo model takes 17, the test models 1 or 17.",
                ),
                io.Int.Input(
                    "seed", default=41, min=0, max=MAX_SEED, control_after_generate=True,
                    tooltip="Seed of the bit sampler; the same seed and settings give the same video.",
                ),
                io.Combo.Input(
                    "guidance", options=list(schedules.GUIDANCE_KINDS), default="apg",
                    tooltip="apg: adaptive projected guidance, as the released scripts use. cfg: plain "
                            "classifier-free guidance.",
                ),
                io.Float.Input(
                    "guidance_scale", default=34.0, min=1.0, max=100.0, step=0.5,
                    tooltip="Guidance strength; the scripts use 34 with APG. Plain CFG needs much lower "
                            "values (the interactive script uses 3).",
                ),
                io.Float.Input(
                    "tau_image", default=1.0, min=0.05, max=2.0, step=0.05,
                    tooltip="Sampling temperature of the first (image) clip; lower is more deterministic.",
                ),
                io.Float.Input(
                    "tau_video", default=0.4, min=0.05, max=2.0, step=0.05,
                    tooltip="Sampling temperature of the video clips; the scripts use 0.4.",
                ),
                io.Conditioning.Input(
                    "negative", optional=True,
                    tooltip="Optional negative prompt features. Without it the model's learned "
                            "unconditional embedding is used, as in the reference.",
                ),
                InfinityStarVAE.Input(
                    "vae", optional=True,
                    tooltip="The VAE; needed for image-to-video and continuation, and for the live preview.",
                ),
                io.Image.Input(
                    "image", optional=True,
                    tooltip="One image to start the video from (image-to-video). Resized and center-cropped "
                            "to the video size; its aspect must be nearest the chosen template.",
                ),
                io.Image.Input(
                    "video", optional=True,
                    tooltip="Frames to continue (video continuation, 480p 10 s): they must cover whole clips, "
                            "e.g. 81 frames for 161 in total; the rest is generated.",
                ),
            ],
            outputs=[
                InfinityStarCodes.Output("codes", tooltip="The generated codes; decode them with InfinityStar Decode."),
                FastStarStats.Output("stats", tooltip="Run statistics: time, tokens refined, estimated speedup."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, resolution, aspect_ratio, frames, seed, guidance, guidance_scale,
                tau_image, tau_video, negative=None, vae=None, image=None, video=None) -> io.NodeOutput:
        started = time.perf_counter()
        info = model.get_attachment(CHECKPOINT_INFO_KEY)
        if image is not None and video is not None:
            raise ValueError("both image and video are connected: connect the image for image-to-video "
                             "or the frames for continuation, not both")
        preset = resolve_preset(resolution, info)
        pixels_per_latent = pipeline.model_preset(preset).pixels_per_latent
        if image is not None:
            _check_input_frames(image, "image", pixels_per_latent)
        if video is not None:
            _check_input_frames(video, "video", pixels_per_latent)

        text = conditioning_features(positive, info.config.text_channels, "positive")
        negative_text = None if negative is None else conditioning_features(negative, info.config.text_channels, "negative")
        template = resolve_template(aspect_ratio, image if image is not None else video)
        settings = pipeline.GenerationSettings(
            preset=preset, video_frames=frames, template=template, seed=seed, guidance=guidance,
            guidance_scale=guidance_scale, tau_image=tau_image, tau_video=tau_video,
        )
        plan = pipeline.plan_generation(settings)  # raises for frame counts the model lacks
        image_input, video_input = conditioning_frames(settings, plan, image, video)

        config = model.model_options.get("transformer_options", {}).get(PRUNING_OPTIONS_KEY)
        pruner = pruning.FastStarPruner(config) if config is not None and config.active else None
        result = _run(model, vae, text, negative_text, settings, plan, image_input, video_input, pruner,
                      cls.hidden.unique_id)

        elapsed = time.perf_counter() - started
        summary = estimate.run_summary(result, pruner, info.config, elapsed, text_tokens=text.shape[0])
        logger.info("STAR sampler: %s", estimate.format_summary(summary).replace("\n", "; "))
        codes = GeneratedCodes(
            codes=result.codes.to(mm.intermediate_device()), settings=settings, stats=summary, elapsed_s=elapsed,
            extra={"pruning_stats": None if pruner is None else pruner.stats},
        )
        return io.NodeOutput(codes, summary, ui={"faststar_stats": [summary]})


def _run(model, vae, text, negative_text, settings, plan, image, video, pruner, node_id):
    """Load the models, run the engine with progress, previews and cancel, and translate OOM."""
    patchers = [model] if vae is None else [model, vae]
    patching.load_to_device(*patchers)
    progress = comfy.utils.ProgressBar(len(plan.steps), node_id=node_id)
    preview = previews.CanvasPreview(None if vae is None else vae.model)

    def on_step(record) -> None:
        if pruner is not None:
            pruner.observe(record)
        progress.update_absolute(record.step.step + 1, len(plan.steps), preview.frame_for(record))
        mm.throw_exception_if_processing_interrupted()

    try:
        return pipeline.generate(
            model.model, text, settings, vae=None if vae is None else vae.model, image=image, video=video,
            pruner=pruner, callback=on_step, negative_features=negative_text,
        )
    except (torch.OutOfMemoryError, MemoryError) as error:
        raise _out_of_memory(error, settings, plan) from error


def _out_of_memory(error: BaseException, settings, plan) -> BaseException:
    height, width = pipeline.pixel_size(settings, plan)
    message = (
        f"out of memory generating {settings.video_frames} frames at {settings.preset} ({width}x{height}): "
        f"{error}. Try the 480p model, fewer frames, bf16 or fp16 weights in the model loader, the FastSTAR "
        "'fast' preset, or free other models first (ComfyUI's Unload Models, or start it with --lowvram)"
    )
    return type(error)(message)


def conditioning_features(conditioning, channels: int, name: str) -> torch.Tensor:
    """Return the text features [L, C] of the first CONDITIONING entry, without padding rows."""
    if not conditioning:
        raise ValueError(f"{name} CONDITIONING is empty: connect InfinityStar Text Encode")
    features, extras = conditioning[0][0], conditioning[0][1]
    if features.ndim != 3 or features.shape[0] != 1:
        raise ValueError(f"{name} features must be [1, L, C], got shape {tuple(features.shape)}")
    if features.shape[-1] != channels:
        raise ValueError(
            f"{name} features have {features.shape[-1]} channels but the model expects {channels}: encode "
            "the prompt with InfinityStar Text Encode and the model's own Flan-T5 encoder"
        )

    rows = features[0]
    mask = extras.get("attention_mask") if isinstance(extras, dict) else None
    if mask is not None:
        rows = rows[mask.reshape(-1).bool().to(rows.device)]
    if rows.shape[0] == 0:
        raise ValueError(f"{name} features have no tokens: the prompt encoded to an empty sequence")
    return rows.float()


def resolve_preset(resolution: str, info) -> str:
    """Return the engine preset to run a checkpoint with.

    A small model runs the preset its architecture names, whatever the widget is set to.
    The released 8B model runs the chosen resolution, which must agree with the one its
    files name. With auto it runs the files' resolution.
    """
    if resolution not in RESOLUTION_CHOICES:
        raise ValueError(f"resolution {resolution!r} is invalid: use one of {list(RESOLUTION_CHOICES)}")
    small = pipeline.preset_for_checkpoint(info.config)
    if small is not None:
        if resolution != AUTO:
            logger.info("STAR sampler: %s runs its own %r schedule and ignores resolution %s, which applies to "
                        "the released model only", info.source.name, small, resolution)
        return small
    if info.config != RELEASED_ARCHITECTURE:
        raise ValueError(
            f"{info.source} contains a transformer of a size no schedule preset fits (embed_dim "
            f"{info.config.embed_dim}, depth {info.config.depth}, text_channels {info.config.text_channels}): "
            "load the released InfinityStar 8B weights (720p or 480p) or the 'demo (bundled)' model"
        )
    return _released_preset(resolution, info)


def _released_preset(resolution: str, info) -> str:
    """Return 720p or 480p for the released model: the widget's choice, checked against its files."""
    native = pipeline.preset_for_checkpoint(info.config, info.resolution)
    if resolution == AUTO:
        if native is None:
            raise ValueError(
                f"cannot tell whether {info.source} contains the 720p or the 480p weights: choose the resolution "
                "in the sampler or in Load InfinityStar Model"
            )
        return native
    if native is not None and native != resolution:
        raise ValueError(
            f"resolution {resolution} does not match the checkpoint {info.source.name}, which contains the "
            f"{native} model: choose {native} (or auto), or load the {resolution} weights"
        )
    return resolution


def resolve_template(aspect_ratio: str, frames: torch.Tensor | None) -> float | None:
    """Return the h/w template to use, or None to let the engine take the preset's default."""
    if aspect_ratio not in ASPECT_CHOICES:
        raise ValueError(f"aspect_ratio {aspect_ratio!r} is invalid: use one of {list(ASPECT_CHOICES)}")
    chosen = ASPECT_CHOICES[aspect_ratio]
    if frames is None:
        return chosen

    height, width = frames.shape[1], frames.shape[2]
    nearest = schedules.nearest_template(height / width)
    if chosen is not None and nearest != chosen:
        raise ValueError(
            f"the input is {width}x{height} (h/w {height / width:.3f}), nearest the template "
            f"{aspect_label(nearest)}, not the chosen {aspect_ratio}: set aspect_ratio to auto or "
            f"{aspect_label(nearest)}, or crop the input to h/w {chosen:.3f}"
        )
    return nearest


def conditioning_frames(settings, plan, image, video):
    """Resize the IMAGE inputs to the video size; return (image [1,3,H,W], video [1,3,F,H,W]) in -1..1."""
    if image is None and video is None:
        return None, None

    size = pipeline.pixel_size(settings, plan)
    if image is not None:
        if image.shape[0] != 1:
            raise ValueError(
                f"image-to-video takes one image, got a batch of {image.shape[0]}: pick one with "
                "ImageFromBatch, or connect the batch to 'video' for continuation"
            )
        if settings.video_frames == 1:
            raise ValueError("image-to-video with frames=1 would only re-encode the image: use a video length "
                             "(81 frames for the released model, 17 for the demo model)")
        return _fit(image, size)[:, :, 0], None

    return None, _fit(video, size)


def _check_input_frames(frames: torch.Tensor, name: str, pixels_per_latent: int) -> None:
    """Reject an input that is not an IMAGE batch or is smaller than one latent cell on a side."""
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"{name} must be an IMAGE [N, H, W, 3], got shape {tuple(frames.shape)}")
    height, width = frames.shape[1], frames.shape[2]
    if min(height, width) < pixels_per_latent:
        raise ValueError(
            f"{name} is {width}x{height} pixels, smaller than one {pixels_per_latent}-pixel latent cell on a side: "
            "give an image of at least a few hundred pixels on each side"
        )


def _fit(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """IMAGE [N, H, W, C] in 0..1 -> [1, 3, N, h, w] in -1..1, resized to cover and center-cropped."""
    height, width = size
    channels_first = frames[..., :3].movedim(-1, 1).float()  # [N, 3, H, W]
    resized = comfy.utils.common_upscale(channels_first, width, height, "lanczos", "center")
    video = resized.clamp(0, 1).movedim(0, 1)[None]  # [1, 3, N, h, w]
    return video * 2 - 1
