"""Socket types of the pack and the objects that travel on them.

Core types are reused where the object really is what core nodes expect: frames are
IMAGE, text features are CONDITIONING, the saved clip is VIDEO. The transformer, the
VAE, the text encoder and the generated codes are not core objects (a core MODEL must
wrap a ``comfy.model_base.BaseModel``), so they get types of their own, prefixed so
that nothing clashes with core or other packs.
"""

from dataclasses import dataclass, field
from typing import Any

from comfy_api.latest import io

# A comfy.model_patcher.ModelPatcher whose .model is the InfinityStar transformer.
InfinityStarModel = io.Custom("INFINITYSTAR_MODEL")
# A ModelPatcher around the InfinityStar video VAE.
InfinityStarVAE = io.Custom("INFINITYSTAR_VAE")
# A LoadedTextEncoder: the Flan-T5 encoder (or the demo model's encoder) plus its patcher.
InfinityStarTextEncoder = io.Custom("INFINITYSTAR_TEXT_ENCODER")
# A GeneratedCodes: the latent codes of one generation, ready to decode.
InfinityStarCodes = io.Custom("INFINITYSTAR_CODES")
# A dict of run statistics (see GeneratedCodes.stats_summary).
FastStarStats = io.Custom("FASTSTAR_STATS")

# Keys under which the pack stores its data on a ModelPatcher.
CHECKPOINT_INFO_KEY = "infinitystar_checkpoint_info"
PRUNING_OPTIONS_KEY = "faststar"

# Frames per second of every InfinityStar video (the reference scripts write 16 fps).
VIDEO_FPS = 16.0


@dataclass
class LoadedTextEncoder:
    """The engine's text encoder and the ModelPatcher that moves its weights.

    ``encoder.encode(prompt)`` returns the features [L, C] of one prompt.
    """

    encoder: Any
    patcher: Any
    path: str
    decorate: bool = True  # the released model expects the reference's prompt decoration; the demo does not


@dataclass
class GeneratedCodes:
    """Latent codes of one generation and what is needed to decode and report them."""

    codes: Any  # torch.Tensor [1, 64, T, h, w], the summed codes of every clip
    settings: Any  # the engine's GenerationSettings the run used
    stats: Any  # the engine's run statistics
    elapsed_s: float
    fps: float = VIDEO_FPS
    extra: dict = field(default_factory=dict)
