"""Sizes and schedule of the demo model.

The demo works on 17-frame 64x64 videos. Its VAE has the released VAE's architecture with
narrow widths and one spatial resampling block fewer: /8 in space instead of /16, /4 in
time as released. A video therefore becomes 5 latent frames of 8x8 tokens with 64 code
channels, so the pyramid still has several scales (1, 2, 4, 6, 8 tokens a side) and the
last scales have enough tokens for FastSTAR to prune.

The schedule follows the released rules: an image pyramid (t = 1), then clips of 2 latent
frames that repeat the spatial pyramid, semantic scales (16 bits) first and detail scales
(64 bits) once a scale has ``detail_scale_min_tokens`` tokens.
"""

from dataclasses import replace

from ..model import TransformerConfig
from ..pipeline import MODEL_PRESETS, ModelPreset
from ..schedules import PRESETS
from ..vae import VAEConfig

PRESET_NAME = "demo"
VIDEO_FRAMES = 17
SPATIAL_COMPRESSION = 8  # pixels per latent cell, see VAE_CONFIG
TEMPLATE = 1.0  # square videos
SCALE_SUBSET = (0, 1, 3, 5, 7)  # side lengths 1, 2, 4, 6, 8 of the 1.0 template pyramid

VAE_CONFIG = VAEConfig(
    block_out_channels=(8, 16, 32),
    layers_per_block=1,
    spatial_compression_list=(2, 2),
    temporal_compression_list=(2, 2),
)

TEXT_CHANNELS = 64
TEXT_TOKENS = 12  # every prompt is padded to this many tokens

TRANSFORMER_CONFIG = TransformerConfig(
    embed_dim=96,
    depth=2,
    num_heads=4,
    num_kv_heads=2,
    mlp_hidden=256,
    text_channels=TEXT_CHANNELS,
    text_maxlen=TEXT_TOKENS,
    block_chunks=2,
)


def _demo_settings():
    return replace(
        PRESETS["720p"],
        pn="0.06M",
        image_scale_repetition=(2, 2, 2, 1, 1),
        video_scale_repetition=(2, 2, 1, 1, 1),
        semantic_scales=3,
        detail_scale_min_tokens=36,
        tau_image=1.0,
        tau_video=0.4,
        guidance="cfg",
        guidance_scale=3.0,
        frames_inner_clip=2,
        video_frames=(VIDEO_FRAMES,),
        h_div_w=TEMPLATE,
    )


DEMO_PRESET = ModelPreset(
    PRESET_NAME,
    _demo_settings(),
    scale_subset=SCALE_SUBSET,
    frames_inner_clip=2,
    video_frames=(VIDEO_FRAMES,),
    default_template=TEMPLATE,
    pixels_per_latent=SPATIAL_COMPRESSION,
    transformer_config=TRANSFORMER_CONFIG,
)


def register_demo_preset() -> None:
    """Make ``generate(settings.preset='demo')`` find the demo schedule.

    ``faststar.pipeline.model_preset`` calls this on first use of the name, because this
    package imports the pipeline and the pipeline cannot import it at load time.
    """
    MODEL_PRESETS.setdefault(PRESET_NAME, DEMO_PRESET)
