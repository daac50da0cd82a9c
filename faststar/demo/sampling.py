"""Prompt to video with the demo model, dense or with FastSTAR."""

import logging
import time
from dataclasses import dataclass

import torch

from ..pipeline import GenerationSettings, generate
from ..pruning import DEFAULT_PRESET, FastStarPruner, PruningConfig, preset
from .preset import VIDEO_FRAMES
from .weights import DemoModel

logger = logging.getLogger(__name__)


@dataclass
class DemoVideo:
    """A decoded video [3, F, H, W] in [-1, 1] and the seconds the transformer and the VAE took."""

    video: torch.Tensor
    transformer_seconds: float
    decode_seconds: float
    kept_fraction: float  # tokens forwarded / tokens of the schedule (1.0 when dense)


def generate_video(demo: DemoModel, prompt: str, seed: int, pruning: "PruningConfig | str | None" = DEFAULT_PRESET,
                   settings: GenerationSettings | None = None) -> DemoVideo:
    """Generate and decode one demo video.

    ``pruning`` is a FastSTAR plan or the name of a preset; None runs dense.
    """
    settings = settings or GenerationSettings(preset=demo.preset, video_frames=VIDEO_FRAMES, seed=seed)
    features = demo.text_encoder.encode(prompt)
    pruner = None
    if pruning is not None:
        pruner = FastStarPruner(preset(pruning) if isinstance(pruning, str) else pruning)

    result = generate(demo.transformer, features, settings, pruner=pruner)
    tokens = sum(stat.tokens for stat in result.stats if stat.forwarded)
    kept = sum(stat.kept for stat in result.stats if stat.forwarded)

    started = time.perf_counter()
    video = demo.vae.decode(result.codes)[0].clamp(-1, 1)
    decode_seconds = time.perf_counter() - started
    return DemoVideo(video, result.seconds, decode_seconds, kept / max(tokens, 1))
