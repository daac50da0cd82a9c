"""Architecture settings of the InfinityStar video VAE and their inference from a state dict.

The released VAE (``infinitystar_videovae.pth`` -> ``['vae']``) is a CogVideoX-style causal
3D autoencoder with depth-to-space ("DC") resampling blocks, RMS norms and a 16-channel
latent at /8 space and /4 time. Patchifying 2x2 turns that latent into the 64-channel
working latent at /16 that the transformer predicts.
"""

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

EXPECTED_FILE = (
    "the 'vae' entry of infinitystar_videovae.pth (torch.load(path)['vae']), or a "
    "safetensors file with the same keys"
)

# Every DC up/down block resamples space by 2. The spatial compression list only decides
# which blocks resample, so its entries must be 2.
SPATIAL_FACTOR = 2

# Pixel-(un)shuffle factor between the /8 VAE latent and the /16 working latent.
PATCH_SIZE = 2


@dataclass(frozen=True)
class VAEConfig:
    """Widths and compression factors of the video VAE.

    ``block_out_channels`` lists the encoder widths from the image side to the latent side:
    the encoder has ``len(block_out_channels) - 1`` down blocks and the decoder mirrors them.
    The compression lists follow the encoder order, as in the reference constructor.
    """

    block_out_channels: tuple[int, ...] = (96, 192, 384, 384, 384)
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    layers_per_block: int = 2
    spatial_compression_list: tuple[int, ...] = (2, 2, 2)
    temporal_compression_list: tuple[int, ...] = (2, 2)
    codebook_dim: int = 64
    semantic_scale_dim: int = 16
    detail_scale_dim: int = 64

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        object.__setattr__(self, "spatial_compression_list", tuple(self.spatial_compression_list))
        object.__setattr__(self, "temporal_compression_list", tuple(self.temporal_compression_list))
        self._validate()

    def _validate(self) -> None:
        widths = self.block_out_channels
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(
                f"block_out_channels={widths} is invalid: it needs at least two positive widths"
            )

        for index, width in enumerate(widths[1:], start=1):
            if width % SPATIAL_FACTOR**2:
                raise ValueError(
                    f"block_out_channels[{index}]={width} is invalid: a down block output "
                    f"width must be a multiple of {SPATIAL_FACTOR**2}"
                )

        if any(factor != SPATIAL_FACTOR for factor in self.spatial_compression_list):
            raise ValueError(
                f"spatial_compression_list={self.spatial_compression_list} is invalid: "
                f"the DC resampling blocks only support a factor of {SPATIAL_FACTOR}"
            )
        if any(factor < 2 for factor in self.temporal_compression_list):
            raise ValueError(
                f"temporal_compression_list={self.temporal_compression_list} is invalid: "
                "every temporal factor must be at least 2"
            )
        if len(self.temporal_compression_list) > len(self.spatial_compression_list):
            raise ValueError(
                f"temporal_compression_list={self.temporal_compression_list} is longer than "
                f"spatial_compression_list={self.spatial_compression_list}. Every block that "
                "compresses time also compresses space, so list it in both"
            )
        if len(self.spatial_compression_list) > self.num_blocks:
            raise ValueError(
                f"spatial_compression_list={self.spatial_compression_list} has more entries "
                f"than the {self.num_blocks} blocks that block_out_channels={widths} defines"
            )

        self._validate_constant_width_blocks()

        if self.codebook_dim != self.latent_channels * PATCH_SIZE**2:
            raise ValueError(
                f"codebook_dim={self.codebook_dim} must equal latent_channels * "
                f"{PATCH_SIZE**2} = {self.latent_channels * PATCH_SIZE**2}, the channel "
                "count of the patchified latent"
            )

    def _validate_constant_width_blocks(self) -> None:
        """Raise ValueError where a block without a resampler would have to change width."""
        widths = self.block_out_channels
        for index in range(self.num_blocks):
            encoder_resamples, _ = self.encoder_block_resampling(index)
            if not encoder_resamples and widths[index] != widths[index + 1]:
                raise ValueError(
                    f"block_out_channels={widths} is invalid: encoder block {index} has no "
                    f"downsampler, so it cannot change the width {widths[index]} -> "
                    f"{widths[index + 1]}"
                )

            decoder_resamples, _ = self.decoder_block_resampling(index)
            upper, lower = widths[self.num_blocks - index], widths[self.num_blocks - index - 1]
            if not decoder_resamples and upper != lower:
                raise ValueError(
                    f"block_out_channels={widths} is invalid: decoder block {index} has no "
                    f"upsampler, so it cannot change the width {upper} -> {lower}"
                )

    @property
    def num_blocks(self) -> int:
        """Number of encoder down blocks, equal to the number of decoder up blocks."""
        return len(self.block_out_channels) - 1

    @property
    def temporal_compression(self) -> int:
        """Video frames per latent frame after the first (4 in the released VAE)."""
        return math.prod(self.temporal_compression_list)

    @property
    def spatial_compression(self) -> int:
        """Pixels per working-latent cell along height and width (16 in the released VAE)."""
        return SPATIAL_FACTOR ** len(self.spatial_compression_list) * PATCH_SIZE

    @property
    def sample_frames_per_batch(self) -> int:
        """Video frames per encoder batch: twice the temporal compression (8 when released)."""
        return 2 * self.temporal_compression

    def encoder_block_resampling(self, index: int) -> tuple[bool, int]:
        """Return (has_downsampler, temporal_factor) of encoder down block ``index``."""
        spatial = index < len(self.spatial_compression_list)
        temporal = index < len(self.temporal_compression_list)
        factor = self.temporal_compression_list[index] if temporal else 1
        return spatial or temporal, factor

    def decoder_block_resampling(self, index: int) -> tuple[bool, int]:
        """Return (has_upsampler, temporal_factor) of decoder up block ``index``.

        The last ``len(list)`` up blocks resample. The reference picks the temporal factor
        of the k-th of them as ``list[-k]``: list[0], then list[-1], list[-2], ... This
        order is kept even though it mirrors the encoder only when the factors are equal.
        """
        temporal_offset = index - (self.num_blocks - len(self.temporal_compression_list))
        spatial_offset = index - (self.num_blocks - len(self.spatial_compression_list))
        factor = self.temporal_compression_list[-temporal_offset] if temporal_offset >= 0 else 1
        return spatial_offset >= 0 or temporal_offset >= 0, factor

    def num_video_frames(self, latent_frames: int) -> int:
        """Return the decoded frame count of ``latent_frames`` latent frames (1 + 4(T-1))."""
        return 1 + self.temporal_compression * (latent_frames - 1)

    def num_latent_frames(self, video_frames: int) -> int:
        """Return the latent frame count of an encoded video of 1, 8k or 8k+1 frames."""
        batch = self.sample_frames_per_batch
        if video_frames % batch == 0:
            return video_frames // self.temporal_compression
        return 1 + (video_frames - 1) // self.temporal_compression

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "VAEConfig":
        """Infer the configuration from the tensor shapes of a reference VAE state dict.

        Works for the tiny fixture VAE ([4, 8, 16, 16, 16]) and the released one
        ([96, 192, 384, 384, 384]). Raises ValueError when a key the inference needs is
        missing or the shapes contradict each other. Full key checking happens when the
        weights are loaded (``InfinityStarVAE.from_state_dict``).
        """
        reject_wrapped_checkpoint(state_dict)

        num_blocks = _count_indices(state_dict, r"encoder\.down_blocks\.(\d+)\.")
        if num_blocks == 0:
            _raise_missing(state_dict, "encoder.down_blocks.0.resnets.0.conv1.conv.weight")

        widths = [_shape(state_dict, f"encoder.down_blocks.{i}.resnets.0.conv1.conv.weight")[0]
                  for i in range(num_blocks)]
        widths.append(_shape(state_dict, "encoder.mid_block.resnets.0.conv1.conv.weight")[0])
        layers_per_block = _count_indices(state_dict, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")

        in_channels = _shape(state_dict, "encoder.conv_in.conv.weight")[1]
        out_channels = _shape(state_dict, "decoder.conv_out.conv.weight")[0]
        latent_channels = _shape(state_dict, "decoder.conv_in.conv.weight")[1]
        codebook_dim = _shape(state_dict, "proj_up.weight")[1]
        semantic_dim = _shape(state_dict, "quantizer.lfq_semantic.mask")[0]
        detail_dim = _shape(state_dict, "quantizer.lfq_detail.mask")[0]

        spatial, temporal, upsampler_factors = _infer_compression_lists(state_dict, widths)

        config = cls(
            block_out_channels=tuple(widths),
            in_channels=in_channels,
            out_channels=out_channels,
            latent_channels=latent_channels,
            layers_per_block=layers_per_block,
            spatial_compression_list=spatial,
            temporal_compression_list=temporal,
            codebook_dim=codebook_dim,
            semantic_scale_dim=semantic_dim,
            detail_scale_dim=detail_dim,
        )
        _check_decoder_resampling(config, upsampler_factors)
        logger.debug("inferred VAE config %s", config)
        return config


def reject_wrapped_checkpoint(state_dict: Mapping) -> None:
    """Raise ValueError for a whole training checkpoint given in place of its 'vae' entry."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"expected a state dict (a mapping of names to tensors), got "
            f"{type(state_dict).__name__}. Pass {EXPECTED_FILE}"
        )
    nested = [key for key in ("vae", "ema") if isinstance(state_dict.get(key), Mapping)]
    if nested:
        raise ValueError(
            f"this is a whole checkpoint with the entries {sorted(state_dict)[:6]}, not a "
            f"VAE state dict. Pass checkpoint['vae'] ({EXPECTED_FILE})"
        )


def _infer_compression_lists(
    state_dict: Mapping[str, torch.Tensor], widths: list[int]
) -> tuple[tuple[int, ...], tuple[int, ...], list]:
    """Read the compression lists off the decoder upsamplers.

    Returns the spatial and temporal lists and, per up block, the temporal factor of its
    upsampler (None where it has none).

    An upsampler convolution of up block i has out_width * 4 * temporal_factor output
    channels. The resampling blocks are the last ones and the temporal factors appear in
    the order list[0], list[-1], list[-2], ... (see ``VAEConfig.decoder_block_resampling``).
    """
    reversed_widths = widths[::-1]
    num_blocks = len(widths) - 1
    factors = []
    for index in range(num_blocks):
        key = f"decoder.up_blocks.{index}.upsamplers.0.conv.conv.conv.weight"
        if key not in state_dict:
            factors.append(None)
            continue
        per_frame = reversed_widths[index + 1] * SPATIAL_FACTOR**2
        conv_out = _shape(state_dict, key)[0]
        if conv_out % per_frame:
            raise ValueError(
                f"{key} has {conv_out} output channels, not a multiple of {per_frame} "
                f"(= 4 x the block width {reversed_widths[index + 1]}), so the state dict "
                f"does not match this VAE architecture. Expected {EXPECTED_FILE}"
            )
        factors.append(conv_out // per_frame)

    resampling = [factor for factor in factors if factor is not None]
    temporal_blocks = [factor for factor in resampling if factor > 1]
    temporal = temporal_blocks[:1] + temporal_blocks[1:][::-1]
    spatial = [SPATIAL_FACTOR] * len(resampling)
    return tuple(spatial), tuple(temporal), factors


def _check_decoder_resampling(config: VAEConfig, factors: list) -> None:
    """Raise ValueError unless ``config`` rebuilds the upsampler layout read from the weights."""
    rebuilt = [config.decoder_block_resampling(index) for index in range(config.num_blocks)]
    found = [(factor is not None, factor or 1) for factor in factors]
    if rebuilt != found:
        raise ValueError(
            "the decoder upsamplers (has upsampler, temporal factor) per up block are "
            f"{found}, but this VAE expects the resampling blocks last, with the temporal ones "
            f"after the spatial-only ones. Expected {EXPECTED_FILE}"
        )


def _count_indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> int:
    """Return 1 + the largest index captured by ``pattern`` at the start of a key, or 0."""
    regex = re.compile(pattern)
    indices = [int(match.group(1)) for key in state_dict if (match := regex.match(key))]
    return max(indices) + 1 if indices else 0


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        _raise_missing(state_dict, key)
    return tuple(state_dict[key].shape)


def _raise_missing(state_dict: Mapping[str, torch.Tensor], key: str) -> None:
    sample = sorted(state_dict)[:3]
    raise ValueError(
        f"not an InfinityStar video VAE state dict: key {key!r} is missing "
        f"({len(state_dict)} keys given, for example {sample}). Expected {EXPECTED_FILE}"
    )
