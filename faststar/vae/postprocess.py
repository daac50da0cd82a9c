"""Turn decoded video into frames for display or saving."""

import torch


def video_to_frames(video: torch.Tensor, *, reference_postprocess: bool = False) -> torch.Tensor:
    """Map decoded video [B, 3, F, H, W] in [-1, 1] to float32 frames [B*F, H, W, 3] in [0, 1].

    Default: ``((x + 1) / 2).clamp(0, 1)``, the videos of the batch one after another.

    ``reference_postprocess=True`` adds the two quirks of the InfinityStar scripts:

    - uint8 truncation: values become ``floor(255 * x) / 255`` (the reference casts
      ``x * 255`` to uint8, which truncates instead of rounding).
    - frame 0 of each video is overwritten by frame 1 (the reference's temporal
      "smoothing"). A single-frame video keeps its frame. The reference's assignment
      raises a RuntimeError there (checked with torch 2.13), since frame 1 is missing.
    """
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video must be [B, 3, F, H, W], got shape {list(video.shape)}")

    frames = ((video.float() + 1) / 2).clamp(0, 1)
    if reference_postprocess:
        frames = truncate_to_uint8_levels(frames)
        frames = repeat_second_frame(frames)

    batch, _, count, height, width = frames.shape
    return frames.permute(0, 2, 3, 4, 1).reshape(batch * count, height, width, 3)


def truncate_to_uint8_levels(frames: torch.Tensor) -> torch.Tensor:
    """Quantize values in [0, 1] to k / 255 by truncation, as a cast of ``x * 255`` to uint8 does."""
    return (frames * 255).to(torch.uint8).float() / 255


def repeat_second_frame(video: torch.Tensor) -> torch.Tensor:
    """Return a copy of [B, C, F, H, W] with frame 1 written over frame 0 when F > 1."""
    if video.shape[2] < 2:
        return video
    return torch.cat([video[:, :, 1:2], video[:, :, 1:]], dim=2)
