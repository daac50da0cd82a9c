"""Encoder and decoder stacks of the InfinityStar video VAE.

Both work on one temporal batch per call and keep the causal state in the ``ConvCache``
passed in, so a video runs as a sequence of calls sharing one cache (see ``batching``).
Shapes below use the released widths [96, 192, 384, 384, 384].
"""

import logging
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import VAEConfig
from .layers import (
    CausalConv3d,
    ChannelRMSNorm,
    ConvCache,
    DCDownBlock3d,
    DCUpBlock3d,
    ResnetBlock3D,
    Slot,
    SpatialNorm3D,
)

logger = logging.getLogger(__name__)

MID_BLOCK_LAYERS = 2


class DownBlock3D(nn.Module):
    """``layers`` resnets at the input width, then an optional DC downsampler to the output width."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, time_factor: Optional[int]):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock3D(in_channels) for _ in range(layers))
        self.downsamplers = None
        if time_factor is not None:
            self.downsamplers = nn.ModuleList([Slot(DCDownBlock3d(in_channels, out_channels, time_factor))])

    def forward(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x, cache)
        return x


class MidBlock3D(nn.Module):
    """Two resnets at the bottleneck width, conditioned on the latent in the decoder."""

    def __init__(self, channels: int, condition_channels: Optional[int] = None):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(channels, condition_channels) for _ in range(MID_BLOCK_LAYERS)
        )

    def forward(
        self, x: torch.Tensor, cache: ConvCache, zq: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache, zq)
        return x


class UpBlock3D(nn.Module):
    """``layers`` latent-conditioned resnets, then an optional DC upsampler to the output width."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layers: int,
        condition_channels: int,
        time_factor: Optional[int],
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels, condition_channels) for _ in range(layers)
        )
        self.upsamplers = None
        if time_factor is not None:
            self.upsamplers = nn.ModuleList([Slot(DCUpBlock3d(in_channels, out_channels, time_factor))])

    def forward(
        self, x: torch.Tensor, zq: torch.Tensor, cache: ConvCache, split_first: bool
    ) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache, zq)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, cache, split_first)
        return x


class Encoder3D(nn.Module):
    """Video [B, 3, F, H, W] -> mean ‖ logvar [B, 32, T, H/8, W/8] for one temporal batch."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = config.block_out_channels
        self.conv_in = CausalConv3d(config.in_channels, widths[0], kernel_size=3)

        blocks = []
        for index in range(config.num_blocks):
            has_downsampler, time_factor = config.encoder_block_resampling(index)
            blocks.append(
                DownBlock3D(
                    widths[index],
                    widths[index + 1],
                    config.layers_per_block,
                    time_factor if has_downsampler else None,
                )
            )
        self.down_blocks = nn.ModuleList(blocks)

        self.mid_block = MidBlock3D(widths[-1])
        self.norm_out = ChannelRMSNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], 2 * config.latent_channels, kernel_size=3)

    def forward(self, video: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        hidden = self.conv_in(video, cache)

        for block in self.down_blocks:
            hidden = block(hidden, cache)
        hidden = self.mid_block(hidden, cache)

        hidden = F.silu(self.norm_out(hidden))
        return self.conv_out(hidden, cache)


class Decoder3D(nn.Module):
    """Latent [B, 16, T, h, w] -> video [B, 3, 1 + 4(T-1), 8h, 8w] for one temporal batch.

    Every norm after ``conv_in`` is a ``SpatialNorm3D`` conditioned on this batch's latent.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = config.block_out_channels[::-1]
        latent = config.latent_channels
        self.conv_in = CausalConv3d(latent, widths[0], kernel_size=3)
        self.mid_block = MidBlock3D(widths[0], condition_channels=latent)

        blocks = []
        for index in range(config.num_blocks):
            has_upsampler, time_factor = config.decoder_block_resampling(index)
            blocks.append(
                UpBlock3D(
                    widths[index],
                    widths[index + 1],
                    config.layers_per_block + 1,
                    latent,
                    time_factor if has_upsampler else None,
                )
            )
        self.up_blocks = nn.ModuleList(blocks)

        self.norm_out = SpatialNorm3D(widths[-1], latent)
        self.conv_out = CausalConv3d(widths[-1], config.out_channels, kernel_size=3)

    def forward(self, latent: torch.Tensor, cache: ConvCache, split_first: bool = False) -> torch.Tensor:
        hidden = self.conv_in(latent, cache)
        hidden = self.mid_block(hidden, cache, latent)

        for block in self.up_blocks:
            hidden = block(hidden, latent, cache, split_first)

        hidden = F.silu(self.norm_out(hidden, latent, cache))
        return self.conv_out(hidden, cache)
