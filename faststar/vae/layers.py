"""Building blocks of the InfinityStar video VAE: causal convolutions, norms, DC resampling.

Attribute names follow the reference modules, so the reference state dict keys load as
they are (for example ``conv.conv.weight`` inside a causal convolution of a DC block).

Causal-convolution state between temporal batches lives in a ``ConvCache``, a dict from
each causal convolution module to the last input frames it saw. The caller creates an
empty dict for the first batch of a video and passes the same dict to every later batch.
"""

import logging
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

ConvCache = dict

# A causal convolution whose padded input contains more than this many elements per sample
# runs in time slices. The reference VAE splits at the same size (2 GiB at 2 bytes per
# element). Slicing lowers peak memory and changes the result only by float rounding.
MAX_CONV_INPUT_ELEMENTS = 2**30


def swish(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x), written out as in the reference DC blocks (``F.silu`` rounds differently)."""
    return x * torch.sigmoid(x)


class CausalConv3d(nn.Module):
    """3D convolution that is causal in time, stride 1.

    Kernel k: the input gets k - 1 frames in front, copies of its first frame for the
    first batch of a video, else the last k - 1 (padded) input frames of the previous
    batch from the cache. Height and width get k // 2 zeros on each side.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.time_pad = kernel_size - 1
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size, padding=(0, kernel_size // 2, kernel_size // 2)
        )

    def forward(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        if self.time_pad:
            x = self._prepend_history(x, cache)
        return self._convolve(x)

    def _prepend_history(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        history = cache.get(self)
        if history is None:
            history = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
        padded = torch.cat([history.to(x.dtype), x], dim=2)

        # clone() so the cache does not keep the whole padded input alive.
        cache[self] = padded[:, :, -self.time_pad:].clone()
        return padded

    def _convolve(self, padded: torch.Tensor) -> torch.Tensor:
        num_parts = padded[0].numel() // MAX_CONV_INPUT_ELEMENTS + 1
        out_frames = padded.shape[2] - self.time_pad
        if num_parts == 1 or out_frames < 2:
            return self.conv(padded)

        # Each slice of output frames needs its own input frames plus time_pad before them.
        step = -(-out_frames // num_parts)
        pieces = []
        for start in range(0, out_frames, step):
            stop = min(start + step, out_frames)
            pieces.append(self.conv(padded[:, :, start: stop + self.time_pad]))
        return torch.cat(pieces, dim=2)


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels: ``F.normalize(x, dim=1) * sqrt(C) * gamma``, no eps, no bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = channels**0.5
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


def resize_condition(condition: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Nearest-resize the latent ``condition`` [B, C, t, h, w] to ``size`` (T, H, W).

    When T is odd and above 1 the first frame is resized on its own and the rest to T - 1
    frames, which matches the first latent frame to the first video frame.
    """
    frames = size[0]
    if frames > 1 and frames % 2 == 1:
        first = F.interpolate(condition[:, :, :1], size=(1, *size[1:]))
        rest = F.interpolate(condition[:, :, 1:], size=(frames - 1, *size[1:]))
        return torch.cat([first, rest], dim=2)
    return F.interpolate(condition, size=tuple(size))


class SpatialNorm3D(nn.Module):
    """Decoder norm conditioned on the latent: ``rms(f) * conv_y(zq) + conv_b(zq)``.

    ``zq`` is the 16-channel decoder input of the current batch, resized to ``f`` by
    ``resize_condition``. conv_y and conv_b are 1x1x1 causal convolutions.
    """

    def __init__(self, channels: int, condition_channels: int):
        super().__init__()
        self.norm_layer = ChannelRMSNorm(channels)
        self.conv_y = CausalConv3d(condition_channels, channels, kernel_size=1)
        self.conv_b = CausalConv3d(condition_channels, channels, kernel_size=1)

    def forward(self, f: torch.Tensor, zq: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        zq = resize_condition(zq, f.shape[2:])
        gain = self.conv_y(zq, cache)
        shift = self.conv_b(zq, cache)
        return self.norm_layer(f) * gain + shift


class ResnetBlock3D(nn.Module):
    """norm1, SiLU, conv1, norm2, SiLU, conv2, plus the input (width unchanged).

    With ``condition_channels`` set (decoder), both norms are ``SpatialNorm3D`` and
    ``forward`` needs the latent ``zq``. Otherwise (encoder) they are ``ChannelRMSNorm``.
    """

    def __init__(self, channels: int, condition_channels: Optional[int] = None):
        super().__init__()
        if condition_channels is None:
            self.norm1 = ChannelRMSNorm(channels)
            self.norm2 = ChannelRMSNorm(channels)
        else:
            self.norm1 = SpatialNorm3D(channels, condition_channels)
            self.norm2 = SpatialNorm3D(channels, condition_channels)
        self.conv1 = CausalConv3d(channels, channels, kernel_size=3)
        self.conv2 = CausalConv3d(channels, channels, kernel_size=3)

    def forward(
        self, x: torch.Tensor, cache: ConvCache, zq: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        hidden = self._norm(self.norm1, x, zq, cache)
        hidden = self.conv1(F.silu(hidden), cache)

        hidden = self._norm(self.norm2, hidden, zq, cache)
        hidden = self.conv2(F.silu(hidden), cache)

        return hidden + x

    @staticmethod
    def _norm(norm: nn.Module, x: torch.Tensor, zq: Optional[torch.Tensor], cache: ConvCache):
        if isinstance(norm, SpatialNorm3D):
            return norm(x, zq, cache)
        return norm(x)


def space_to_depth(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, 4C, T, H/2, W/2], channel order (ph, pw, c)."""
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // factor, factor, w // factor, factor)
    x = x.permute(0, 4, 6, 1, 2, 3, 5)  # [B, ph, pw, C, T, H/2, W/2]
    return x.reshape(b, factor * factor * c, t, h // factor, w // factor)


def depth_to_space(x: torch.Tensor, out_channels: int, time_factor: int, factor: int = 2):
    """[B, (pt ph pw c), T, H, W] -> [B, c, T*pt, 2H, 2W], channel order (pt, ph, pw, c)."""
    b, _, t, h, w = x.shape
    x = x.view(b, time_factor, factor, factor, out_channels, t, h, w)
    x = x.permute(0, 4, 5, 1, 6, 2, 7, 3)  # [B, c, T, pt, H, ph, W, pw]
    return x.reshape(b, out_channels, t * time_factor, h * factor, w * factor)


def average_time_pairs(x: torch.Tensor, time_factor: int) -> torch.Tensor:
    """Average each run of ``time_factor`` frames, keeping an odd first frame on its own.

    [B, C, T, H, W] -> [B, C, 1 + (T-1)/pt, H, W] for odd T, [B, C, T/pt, H, W] for even T.
    """
    frames = x.shape[2]
    if frames % 2 == 1:
        first, rest = x[:, :, :1], x[:, :, 1:]
    else:
        first, rest = None, x
    if rest.shape[2] == 0:
        return first

    b, c, t, h, w = rest.shape
    rest = rest.reshape(b, c, t // time_factor, time_factor, h, w).mean(dim=3)
    return rest if first is None else torch.cat([first, rest], dim=2)


class DCDownBlock3d(nn.Module):
    """Encoder downsampler: space-to-depth 2x2 and, with ``time_factor`` > 1, time pairs averaged.

    Main path: RMS norm, swish, causal conv to out/4 channels, space-to-depth.
    Shortcut: space-to-depth of the input, averaged over groups of ``out_channels``
    channels. Both average their time pairs after the (odd) first frame.
    """

    def __init__(self, in_channels: int, out_channels: int, time_factor: int):
        super().__init__()
        self.out_channels = out_channels
        self.time_factor = time_factor
        self.norm = ChannelRMSNorm(in_channels)
        self.conv = CausalConv3d(in_channels, out_channels // 4, kernel_size=3)

    def forward(self, hidden: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        x = self.conv(swish(self.norm(hidden)), cache)
        x = average_time_pairs(space_to_depth(x), self.time_factor)  # [B, out, T', H/2, W/2]

        shortcut = average_time_pairs(space_to_depth(hidden), self.time_factor)
        b, channels, t, h, w = shortcut.shape
        groups = channels // self.out_channels
        shortcut = shortcut.view(b, groups, self.out_channels, t, h, w).mean(dim=1)
        return x + shortcut


class DCUpBlock3d(nn.Module):
    """Decoder upsampler: depth-to-space 2x2 and, with ``time_factor`` > 1, time x pt.

    Main path: RMS norm, swish, causal conv to out * 4 * pt channels, depth-to-space.
    Shortcut: the input tiled along channels to the same count, depth-to-space.
    For an odd-length batch (or ``split_first``) the first pt output frames of both paths
    are averaged into one, so the first latent frame yields a single video frame.
    """

    def __init__(self, in_channels: int, out_channels: int, time_factor: int):
        super().__init__()
        self.out_channels = out_channels
        self.time_factor = time_factor
        conv_channels = out_channels * 4 * time_factor
        if conv_channels % in_channels:
            raise ValueError(
                f"DC upsampler {in_channels}->{out_channels} channels (time x{time_factor}) "
                f"is invalid: {conv_channels} conv channels are not a multiple of {in_channels}"
            )
        self.repeats = conv_channels // in_channels
        self.norm = ChannelRMSNorm(in_channels)
        self.conv = CausalConv3d(in_channels, conv_channels, kernel_size=3)

    def forward(self, hidden: torch.Tensor, cache: ConvCache, split_first: bool) -> torch.Tensor:
        merge_first = self.time_factor > 1 and (hidden.shape[2] % 2 == 1 or split_first)

        x = self.conv(swish(self.norm(hidden)), cache)
        x = depth_to_space(x, self.out_channels, self.time_factor)
        shortcut = depth_to_space(
            hidden.repeat(1, self.repeats, 1, 1, 1), self.out_channels, self.time_factor
        )

        if merge_first:
            x = self._merge_first_frames(x)
            shortcut = self._merge_first_frames(shortcut)
        return x + shortcut

    def _merge_first_frames(self, x: torch.Tensor) -> torch.Tensor:
        first = x[:, :, : self.time_factor].mean(dim=2, keepdim=True)
        return torch.cat([first, x[:, :, self.time_factor:]], dim=2)


class Slot(nn.Module):
    """Holds one resampling block as ``.conv``, reproducing the reference key nesting.

    The reference wraps each DC block in a CogVideoX{Down,Up}sample3D module, so the keys
    read ``downsamplers.0.conv.norm.gamma`` and ``downsamplers.0.conv.conv.conv.weight``.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv = block

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.conv(*args, **kwargs)
