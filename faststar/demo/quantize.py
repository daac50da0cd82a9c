"""Multi-scale BSQ of a code latent along the demo schedule, for training.

The pyramid loop builds each clip's canvas as a sum of upsampled per-scale codes. Training
builds the same canvas from an encoded latent: every step quantises what the canvas still
lacks (``codes.encode_bits``, the ground-truth bit path of image-to-video) and adds its
codes. The VAE trains through this bottleneck with a straight-through estimator, and the
transformer takes its inputs and bit labels from it.

Bitwise self-correction: with ``flip_prob`` > 0 a random fraction of each step's bits is
flipped before its codes join the canvas. Later steps quantise the residual of that
corrupted canvas, so their labels teach the transformer to repair earlier mistakes.
"""

import logging
from dataclasses import dataclass, replace

import torch

from ..codes import bits_to_codes, downsample_canvas, encode_bits, flatten_tokens, upsample_codes
from ..schedules import Step, build_schedule, build_steps, first_full_spatial_size_scale_index, scale_pack_info
from ..schedules import template_sizes
from .preset import DEMO_PRESET

logger = logging.getLogger(__name__)


def demo_steps(latent_frames: int, side: int | None = None) -> list[Step]:
    """Build the demo schedule's steps for ``latent_frames`` latent frames (5 for 17 video frames).

    ``side`` (latent cells) other than the demo's 8 builds a crop pyramid for VAE training:
    every square template size up to ``side``, two semantic scales, then detail scales.
    """
    preset = DEMO_PRESET
    sizes = template_sizes(preset.default_template, preset.settings.pn)
    chosen = [sizes[i] for i in preset.scale_subset]
    settings = preset.settings
    if side is not None and side != chosen[-1][0]:
        chosen = [size for size in sizes if size[0] <= side]
        count = len(chosen)
        if count < 3 or chosen[-1] != (side, side):
            raise ValueError(f"no crop pyramid ends at {side}x{side} latent cells; use a side of 3 or more")
        settings = replace(settings, image_scale_repetition=(2, 2) + (1,) * (count - 2),
                           video_scale_repetition=(2,) + (1,) * (count - 1), semantic_scales=2,
                           detail_scale_min_tokens=chosen[2][0] * chosen[2][1])

    schedule = build_schedule(chosen, latent_frames, preset.frames_inner_clip)
    first_full = first_full_spatial_size_scale_index(schedule)
    context = scale_pack_info(schedule, first_full, frames_inner_clip=preset.frames_inner_clip)
    return build_steps(schedule, settings, first_full, context)


@dataclass
class StepTargets:
    """The input and the bit labels of one step, for a batch of B videos."""

    step: Step
    input_codes: torch.Tensor  # [B, L, 64]: the canvas pooled to the step's grid, flattened
    labels: torch.Tensor  # [B, L, bits] int64: the bits that best close the residual


@dataclass
class Quantized:
    """The summed-code latent [B, 64, T, H, W] and, when requested, every step's targets."""

    codes: torch.Tensor
    targets: list[StepTargets]


def flip_bits(bits: torch.Tensor, flip_prob: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Flip each bit [B, t, h, w, d] with its sample's probability ``flip_prob`` [B]."""
    noise = torch.rand(bits.shape, generator=generator, device=bits.device)
    flip = noise < flip_prob.view(-1, 1, 1, 1, 1)
    return torch.where(flip, 1 - bits, bits)


def quantize_latent(
    latent: torch.Tensor,
    steps: list[Step],
    flip_prob: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    keep_targets: bool = False,
) -> Quantized:
    """Quantise ``latent`` [B, 64, T, H, W] step by step, clip by clip, into summed codes.

    No gradient flows through the result; ``straight_through`` adds it back for the VAE.
    """
    clips = []
    targets = []
    canvas = target = None
    with torch.no_grad():
        for step in steps:
            if step.first_in_clip:
                target = latent[:, :, step.frame_start:step.frame_end].float()
                canvas = torch.zeros_like(target)
                clips.append(canvas)

            labels, codes = encode_bits(target - canvas, step.thw, step.bits)
            if keep_targets:
                grid = downsample_canvas(canvas, step.thw)
                inputs = torch.stack([flatten_tokens(grid[i:i + 1]) for i in range(grid.shape[0])])
                targets.append(StepTargets(step, inputs, labels.flatten(1, 3).long()))
            if flip_prob is not None:
                codes = bits_to_codes(flip_bits(labels, flip_prob, generator))
            canvas += upsample_codes(codes, (target.shape[1], *step.canvas_thw))
    return Quantized(torch.cat(clips, dim=2), targets)


def straight_through(latent: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Forward the quantized codes, backward the identity to ``latent``."""
    return latent + (quantized - latent).detach()
