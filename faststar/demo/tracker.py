"""A simple tracker that judges whether a decoded demo video matches its caption.

The demo backgrounds are constant along each pixel row (black, gray, or a vertical
gradient), and the shape covers less than half of any row. So the background of a frame
is the per-row median colour, and the shape is every pixel far from it. The tracker
returns the shape's centroid and area per frame and its mean colour. ``judge_colour``
names the nearest grammar colour and ``judge_motion`` the motion the path shows.
"""

import logging
from dataclasses import dataclass

import torch

from .data import COLOURS, DIRECTIONS

logger = logging.getLogger(__name__)

MASK_THRESHOLD = 0.3  # summed |RGB - background| in [0, 1] units above which a pixel is the shape
MIN_AREA = 4  # pixels; fewer means the frame shows no shape
END_FRAMES = 3  # frames averaged at each end of the clip to measure displacement and growth
MIN_TRAVEL = 8.0  # pixels of centroid displacement that count as a linear motion
MIN_BOUNCE = 8.0  # pixels of vertical range (without net displacement) that count as bouncing
MIN_GROWTH = 1.8  # area ratio last / first frames that counts as growing


@dataclass(frozen=True)
class Track:
    """Per-frame centroid (x, y) [F, 2] (NaN where no shape), area [F] and mean colour RGB [3] in [0, 1]."""

    centroids: torch.Tensor
    areas: torch.Tensor
    colour: torch.Tensor

    @property
    def found(self) -> bool:
        return bool((self.areas >= MIN_AREA).sum() >= self.areas.numel() // 2)


def shape_masks(video: torch.Tensor) -> torch.Tensor:
    """Boolean masks [F, H, W] of the shape in a video [3, F, H, W] in [-1, 1]."""
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video [3, F, H, W], got shape {tuple(video.shape)}")
    image = (video.float().clamp(-1, 1) + 1) / 2
    background = image.median(dim=-1, keepdim=True).values  # [3, F, H, 1]
    return (image - background).abs().sum(0) > MASK_THRESHOLD


def track(video: torch.Tensor) -> Track:
    """Track the shape of a video [3, F, H, W] in [-1, 1]."""
    masks = shape_masks(video)
    frames, height, width = masks.shape
    ys = torch.arange(height, dtype=torch.float32).view(1, height, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, width)

    weights = masks.float()
    areas = weights.sum((1, 2))  # [F]
    safe = areas.clamp(min=1)
    cx = (weights * xs).sum((1, 2)) / safe
    cy = (weights * ys).sum((1, 2)) / safe
    centroids = torch.stack([cx, cy], dim=1)
    centroids[areas < MIN_AREA] = float("nan")

    image = (video.float().clamp(-1, 1) + 1) / 2  # [3, F, H, W]
    pixels = image.permute(1, 2, 3, 0)[masks]  # [N, 3]
    colour = pixels.mean(0) if pixels.numel() else torch.full((3,), float("nan"))
    return Track(centroids, areas, colour)


def judge_colour(found: Track) -> str | None:
    """Return the grammar colour nearest the shape's mean colour, or None when no shape was found."""
    if not found.found or torch.isnan(found.colour).any():
        return None
    palette = torch.tensor(list(COLOURS.values()))
    distances = (palette - found.colour).norm(dim=1)
    return list(COLOURS)[int(distances.argmin())]


def _end_means(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the valid rows of the first and of the last END_FRAMES frames."""
    return values[:END_FRAMES].nanmean(0), values[-END_FRAMES:].nanmean(0)


def judge_motion(found: Track) -> str | None:
    """Classify the motion of the shape's path in grammar words, or return None when no shape was found.

    Growth is checked first, then a net displacement, whose dominant axis and sign give the
    direction, then a vertical range without net displacement (bouncing). A shape that does
    none of these is called spinning, because that is the only motion that keeps centre and size.
    """
    if not found.found:
        return None
    start_area, end_area = _end_means(found.areas)
    if end_area > MIN_GROWTH * start_area.clamp(min=1):
        return "growing"

    start, end = _end_means(found.centroids)
    if torch.isnan(start).any() or torch.isnan(end).any():
        return None
    dx, dy = (end - start).tolist()
    if max(abs(dx), abs(dy)) >= MIN_TRAVEL:
        direction = (int(dx > 0) * 2 - 1, 0) if abs(dx) >= abs(dy) else (0, int(dy > 0) * 2 - 1)
        return next(motion for motion, vector in DIRECTIONS.items() if vector == direction)

    ys = found.centroids[:, 1]
    ys = ys[~torch.isnan(ys)]
    if ys.numel() and float(ys.max() - ys.min()) >= MIN_BOUNCE:
        return "bouncing"
    return "spinning"
