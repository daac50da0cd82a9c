"""Four-axis rotary position embedding (scale, frame, height, width) of InfinityStar.

The head dimension is split into 4 axes of F = head_dim / 8 frequencies each. Rotation
pair i (elements 2i and 2i+1 of a head, adjacent interleaving) belongs to axis i // F and
turns by the angle ``position[axis] * inv_freq[i % F]``.
"""

import torch

# Text tokens take scale positions 0 .. L_text-1, so visual scale positions start after
# the longest prompt the model was built for (the reference's `text_maxlen`).
TEXT_MAXLEN = 512

NUM_AXES = 4


def inverse_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Return the F per-axis inverse frequencies theta^(-j/F), float32 [F]."""
    if head_dim % 8 != 0:
        raise ValueError(f"head_dim={head_dim} is not a multiple of 8, which 4-axis RoPE needs")

    freqs_per_axis = head_dim // 8
    exponents = torch.arange(freqs_per_axis, dtype=torch.int64).float() / freqs_per_axis
    return 1.0 / (theta ** exponents)


def text_positions(length: int) -> torch.Tensor:
    """Return the positions of ``length`` text tokens: (n, 0, 0, 0), int64 [L, 4]."""
    positions = torch.zeros(length, NUM_AXES, dtype=torch.int64)
    positions[:, 0] = torch.arange(length)
    return positions


def grid_rows(size: int, full_size: int) -> torch.Tensor:
    """Map grid indices 0..size-1 onto the final grid: round(i * full/size), half to even."""
    return (torch.arange(size) * (full_size / size)).round().long()


def visual_positions(
    thw: tuple[int, int, int],
    full_hw: tuple[int, int],
    frames: torch.Tensor | range,
    scale_position: int,
) -> torch.Tensor:
    """Return the RoPE positions of one scale's tokens in (t, h, w) order, int64 [t*h*w, 4].

    ``frames`` lists the absolute latent-frame index of each of the t frames;
    ``scale_position`` is the scale-axis position (512 + global repetition counter for
    visual steps). Heights and widths are normalised to the final grid ``full_hw``.
    """
    t, h, w = thw
    frames = torch.as_tensor(list(frames), dtype=torch.int64)
    if frames.numel() != t:
        raise ValueError(f"{frames.numel()} frame positions given for a scale with t={t}")

    rows = grid_rows(h, full_hw[0])
    cols = grid_rows(w, full_hw[1])
    frame_grid, row_grid, col_grid = torch.meshgrid(frames, rows, cols, indexing="ij")

    positions = torch.empty(t * h * w, NUM_AXES, dtype=torch.int64)
    positions[:, 0] = scale_position
    positions[:, 1] = frame_grid.reshape(-1)
    positions[:, 2] = row_grid.reshape(-1)
    positions[:, 3] = col_grid.reshape(-1)
    return positions


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Return cos and sin of every rotation pair, float32 [2, L, 4*F] for positions [L, 4]."""
    # angles[l, a, j] = positions[l, a] * inv_freq[j]; axis-major order matches pair i = a*F + j.
    angles = positions.float()[:, :, None] * inv_freq[None, None, :]
    angles = angles.reshape(positions.shape[0], -1)
    return torch.stack([angles.cos(), angles.sin()])


def apply_rope(x: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
    """Rotate q or k [B, H, L, D] by cos/sin [2, L, D/2]; computed in float32, returned in x's dtype."""
    cos, sin = cos_sin[0], cos_sin[1]
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    even, odd = pairs[..., 0], pairs[..., 1]

    rotated_even = even * cos - odd * sin
    rotated_odd = odd * cos + even * sin
    rotated = torch.stack([rotated_even, rotated_odd], dim=-1)
    return rotated.reshape(x.shape).to(x.dtype)
