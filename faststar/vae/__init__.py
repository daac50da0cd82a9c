"""InfinityStar video VAE: a PyTorch port of the reference ``AutoencoderKLCogVideoX``.

``InfinityStarVAE.from_state_dict(sd)`` builds the VAE that a reference state dict
describes (the tiny test fixture or the released ``infinitystar_videovae.pth['vae']``)
and loads it with strict key checking. ``decode`` turns 64-channel codes into video,
``encode_raw_features`` turns video into codes for image/video conditioning, and
``video_to_frames`` makes frames out of decoded video.
"""

from .batching import FrameBatch, plan_decode_batches, plan_encode_batches
from .config import VAEConfig
from .model import InfinityStarVAE, patchify, unpatchify, validate_state_dict
from .postprocess import video_to_frames

__all__ = [
    "FrameBatch",
    "InfinityStarVAE",
    "VAEConfig",
    "patchify",
    "plan_decode_batches",
    "plan_encode_batches",
    "unpatchify",
    "validate_state_dict",
    "video_to_frames",
]
