"""Live previews of the coarse-to-fine code canvas while the sampler runs.

A preview is the VAE decode of the first latent frame of the current clip's canvas, so it
needs the VAE. Decoding costs time, so a preview is made only at the last repetition of a
scale and at most once per PREVIEW_INTERVAL_S. It is also made only when a progress-bar
hook is installed: the server installs one, in-process use has none.
"""

import logging
import time

import comfy.utils
import torch
from PIL import Image

from ..faststar.vae import video_to_frames

logger = logging.getLogger(__name__)

PREVIEW_INTERVAL_S = 3.0
PREVIEW_MAX_SIZE = 512


class CanvasPreview:
    """Decodes preview images for step records; one per sampler run."""

    def __init__(self, vae):
        self.vae = vae
        self.last_time = -float("inf")

    def frame_for(self, record):
        """Return a ("JPEG", PIL image, max size) preview for ProgressBar, or None for no preview now."""
        if self.vae is None or comfy.utils.PROGRESS_BAR_HOOK is None:
            return None
        if not record.step.last_repetition or time.monotonic() - self.last_time < PREVIEW_INTERVAL_S:
            return None

        self.last_time = time.monotonic()
        first_frame = record.canvas[:, :, :1]  # [1, 64, 1, H, W]
        with torch.inference_mode():
            video = self.vae.decode(first_frame.to(self.vae_device()))  # [1, 3, 1, sH, sW], s pixels per latent
        pixels = video_to_frames(video)[0]  # [sH, sW, 3] in 0..1
        array = (pixels * 255).round().to(device="cpu", dtype=torch.uint8).numpy()
        return "JPEG", Image.fromarray(array), PREVIEW_MAX_SIZE

    def vae_device(self) -> torch.device:
        return next(self.vae.parameters()).device
