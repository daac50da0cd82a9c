"""Video quality metrics against a reference video: PSNR and SSIM, per frame and mean.

Videos are [T, H, W, C] (the ComfyUI IMAGE layout) or [T, H, W]; uint8 videos use a data
range of 255, float videos the range given (1.0 by default, for values in [0, 1]).
PSNR and SSIM are computed per frame over all channels and averaged over frames;
``video_psnr`` pools the squared error of all frames instead.
"""

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


@dataclass(frozen=True)
class VideoScores:
    """Per-frame values and their mean over frames."""

    per_frame: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.per_frame) / len(self.per_frame)


def _prepare(video: torch.Tensor, reference: torch.Tensor, data_range: float | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Check shapes and return float64 [T, C, H, W] copies and the data range."""
    if video.shape != reference.shape:
        raise ValueError(f"video shape {tuple(video.shape)} differs from reference shape {tuple(reference.shape)}")
    if video.dim() not in (3, 4) or video.shape[0] == 0:
        raise ValueError(f"expected a video [T, H, W, C] or [T, H, W] with T >= 1, got shape {tuple(video.shape)}")

    if data_range is None:
        data_range = 255.0 if video.dtype == torch.uint8 else 1.0
    if data_range <= 0:
        raise ValueError(f"invalid data_range={data_range}: use the value span of the pixels (1.0 or 255)")

    def to_frames(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)

    return to_frames(video), to_frames(reference), float(data_range)


def psnr(video: torch.Tensor, reference: torch.Tensor, data_range: float | None = None) -> VideoScores:
    """Peak signal-to-noise ratio per frame, in dB: 10 log10(range^2 / MSE); inf for equal frames."""
    video, reference, data_range = _prepare(video, reference, data_range)
    mse = (video - reference).pow(2).flatten(1).mean(dim=1)  # [T]
    values = tuple(math.inf if m == 0 else 10 * math.log10(data_range**2 / m) for m in mse.tolist())
    return VideoScores(values)


def video_psnr(video: torch.Tensor, reference: torch.Tensor, data_range: float | None = None) -> float:
    """PSNR of the whole video, from the MSE over all frames, in dB.

    Unlike the mean of per-frame PSNR it stays finite when only some frames are equal,
    such as an unpruned first frame.
    """
    video, reference, data_range = _prepare(video, reference, data_range)
    mse = float((video - reference).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian, float64 [size]."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-(coords**2) / (2 * sigma**2))
    return weights / weights.sum()


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter over H and W of [N, C, H, W], 'valid' borders."""
    frames, channels, height, width = x.shape
    size = window.numel()
    # Channels go into the batch: a one-channel convolution, much faster in float64 than groups=C.
    flat = x.reshape(frames * channels, 1, height, width)
    flat = F.conv2d(flat, window.view(1, 1, 1, size))
    flat = F.conv2d(flat, window.view(1, 1, size, 1))
    return flat.view(frames, channels, *flat.shape[2:])


def ssim(video: torch.Tensor, reference: torch.Tensor, data_range: float | None = None) -> VideoScores:
    """Structural similarity per frame (Wang et al. 2004), mean over channels and positions.

    Gaussian window 11 x 11 with sigma 1.5, K1 = 0.01, K2 = 0.03, only positions where the
    window fits. Frames smaller than 11 pixels use the largest odd window that fits.
    """
    video, reference, data_range = _prepare(video, reference, data_range)
    size = min(SSIM_WINDOW, video.shape[2], video.shape[3])
    size -= 1 - size % 2
    if size < SSIM_WINDOW:
        logger.debug("frames of %s pixels: SSIM window shrunk to %d", tuple(video.shape[2:]), size)
    window = gaussian_window(size, SSIM_SIGMA)

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _filter(video, window), _filter(reference, window)
    var_x = _filter(video * video, window) - mu_x**2
    var_y = _filter(reference * reference, window) - mu_y**2
    cov = _filter(video * reference, window) - mu_x * mu_y

    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    per_frame = (numerator / denominator).flatten(1).mean(dim=1)
    return VideoScores(tuple(per_frame.tolist()))
