"""Inputs that condition a generation on existing frames.

- Ground-truth bit labels (image-to-video and video continuation): the latent of the given
  frames is quantised scale by scale exactly as the loop would build it, and the loop is
  teacher-forced with those bits.
- Interactive conditions (long-video mode): the previous segment's latent enters as two
  extra cached key sets, a pooled "semantic" one and a full-size "detail" one.
"""

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .codes import encode_bits, upsample_codes
from .rope import TEXT_MAXLEN
from .sampler import Condition
from .schedules import Step

# Scale-axis positions of the interactive conditions, after the text positions.
SEMANTIC_CONDITION_SID = 800
DETAIL_CONDITION_SID = 801


def encode_gt_bits(latent: torch.Tensor, steps: Sequence[Step], leak_scales: int) -> list[torch.Tensor | None]:
    """Encode the bit labels that rebuild ``latent`` [1, 64, T, H, W] over the steps of the first scales.

    Returns one entry per step: uint8 bits [1, t, h, w, d] for steps with si < leak_scales,
    None for the others. Each repetition encodes what the earlier ones left; every clip
    starts from a zero canvas.
    """
    bits: list[torch.Tensor | None] = []
    canvas = None
    for step in steps:
        if step.si >= leak_scales:
            bits.append(None)
            continue

        if step.first_in_clip:
            target = latent[:, :, step.frame_start:step.frame_end].float()
            canvas = torch.zeros_like(target)
        if tuple(target.shape[2:]) != tuple(step.canvas_thw):
            raise ValueError(
                f"conditioning latent of clip {step.clip} is {tuple(target.shape[2:])}, "
                f"the schedule needs {tuple(step.canvas_thw)}: encode the frames at the generation size"
            )

        labels, codes = encode_bits(target - canvas, step.thw, step.bits)
        canvas = canvas + upsample_codes(codes, (target.shape[1], *step.canvas_thw))
        bits.append(labels)
    return bits


@dataclass(frozen=True)
class InteractiveConditionSpec:
    """Source sizes and frames of the interactive conditions in the previous segment's latent."""

    semantic_hw: tuple[int, int]  # pooled size of the semantic condition
    detail_frame_inds: tuple[int, ...] = (18, 19)  # frames of the former latent without its frame 0


def interactive_conditions(
    former: torch.Tensor, first_frame: torch.Tensor, spec: InteractiveConditionSpec
) -> list[Condition]:
    """Build the semantic and detail conditions from the former latent [1, 64, F, H, W].

    The semantic condition pools frames 1.. of ``former`` to ``spec.semantic_hw``; the
    detail condition is ``first_frame`` [1, 64, 1, H, W] followed by the chosen former
    frames at full size. Frame positions count from the former latent's frame 0.
    """
    tail = former[:, :, 1:]  # [1, 64, F-1, H, W]
    frame_count = tail.shape[2]
    for index in spec.detail_frame_inds:
        if not 0 <= index < frame_count:
            raise ValueError(f"detail frame index {index} is outside the {frame_count} former frames")

    semantic = F.interpolate(tail, size=(frame_count, *spec.semantic_hw), mode="area")
    detail = torch.cat([first_frame, tail[:, :, list(spec.detail_frame_inds)]], dim=2)

    return [
        Condition("semantic_condition", semantic, range(1, frame_count + 1),
                  TEXT_MAXLEN + SEMANTIC_CONDITION_SID),
        Condition("detail_condition", detail, [0] + [i + 1 for i in spec.detail_frame_inds],
                  TEXT_MAXLEN + DETAIL_CONDITION_SID),
    ]


def next_former(former: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Return the next segment's former latent: the last F frames of former[1:] + generated."""
    frames = former.shape[2]
    return torch.cat([former[:, :, 1:], generated], dim=2)[:, :, -frames:]
