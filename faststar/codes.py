"""Bit labels, BSQ codes and the per-clip code canvas ("summed codes").

The canvas of a clip is [B, 64, T, H, W]. A scale's model input is the canvas area-pooled
to the scale's (t, h, w). A scale's codes are trilinearly stretched back to the canvas size
and added. Both resizes run on the tensor permuted to [B, T, C, h, w], so the channel axis
is resized together with height and width (16 semantic bits become 64 channels).
"""

import torch
import torch.nn.functional as F


def bits_to_codes(bits: torch.Tensor) -> torch.Tensor:
    """Turn bit labels [B, t, h, w, d] into l2-normalised codes (2b-1)/sqrt(d), [B, d, t, h, w]."""
    d = bits.shape[-1]
    codes = (bits.float() * 2 - 1) / d**0.5
    return codes.permute(0, 4, 1, 2, 3)


def codes_to_bits(codes: torch.Tensor) -> torch.Tensor:
    """BSQ quantisation of codes [B, d, t, h, w]: bit = (x > 0), as uint8 [B, t, h, w, d]."""
    return (codes > 0).to(torch.uint8).permute(0, 2, 3, 4, 1)


def resize_with_channels(x: torch.Tensor, size: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """Resize [B, C, T, h, w] to [B, C1, T, H, W] with ``size`` = (C1, T, H, W).

    T must not change: it acts as a batch axis while (C, h, w) are interpolated.
    """
    channels, frames, height, width = size
    if x.shape[2] != frames:
        raise ValueError(f"cannot resize {x.shape[2]} frames to {frames}: time is not resampled")
    if tuple(x.shape[1:]) == tuple(size):
        return x

    moved = x.permute(0, 2, 1, 3, 4)  # [B, T, C, h, w]
    resized = F.interpolate(moved, size=(channels, height, width), mode=mode)
    return resized.permute(0, 2, 1, 3, 4)


def upsample_codes(codes: torch.Tensor, canvas_shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Stretch codes [B, d, t, h, w] to the canvas (64, T, H, W) with channel-axis trilinear."""
    return resize_with_channels(codes, canvas_shape, "trilinear")


def downsample_canvas(canvas: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
    """Area-pool the canvas [B, 64, T, H, W] to a scale grid [B, 64, t, h, w] (a new tensor)."""
    if tuple(canvas.shape[2:]) == tuple(thw):
        return canvas.clone()
    return F.interpolate(canvas, size=thw, mode="area")


def flatten_tokens(x: torch.Tensor) -> torch.Tensor:
    """Flatten a grid [1, C, t, h, w] to tokens [t*h*w, C] in (t, h, w) order."""
    return x[0].flatten(1).transpose(0, 1)


def encode_bits(
    residual: torch.Tensor, thw: tuple[int, int, int], bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise what the canvas still lacks at one scale (the ground-truth path of I2V/V2V).

    ``residual`` is target - canvas, [B, 64, T, H, W]. It is area-pooled to (bits, t, h, w)
    (semantic scales average groups of 4 channels), l2-normalised and thresholded.
    Returns bit labels [B, t, h, w, bits] and their codes [B, bits, t, h, w].
    """
    pooled = resize_with_channels(residual, (bits, *thw), "area")
    normed = F.normalize(pooled, dim=1)
    labels = codes_to_bits(normed)
    return labels, bits_to_codes(labels)
