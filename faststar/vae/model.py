"""InfinityStar video VAE: decode 64-channel codes to video, encode video to raw features.

Re-implements ``wan_bsq_vae.AutoencoderKLCogVideoX`` as built by the InfinityStar loader
(``load_vae_bsq_wan_absorb_patchify.video_vae_model``), inference paths only. Module and
parameter names match the reference, so its state dict loads with strict key checking.
"""

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batching import (
    FrameBatch,
    plan_decode_batches,
    plan_encode_batches,
    validate_latent_frames,
    validate_video_frames,
)
from .coders import Decoder3D, Encoder3D
from .config import EXPECTED_FILE, PATCH_SIZE, VAEConfig, reject_wrapped_checkpoint

logger = logging.getLogger(__name__)

# Clamp of the posterior log-variance before sampling, as in the reference
# DiagonalGaussianDistribution.
LOGVAR_RANGE = (-30.0, 20.0)

# Called after each decoded latent batch with (batches_done, batches_total).
DecodeProgress = Callable[[int, int], None]

# How many names of each kind a state-dict mismatch error lists before giving a count.
LISTED_KEYS = 3


def patchify(x: torch.Tensor) -> torch.Tensor:
    """Pixel-unshuffle 2x2: [B, C, T, H, W] -> [B, 4C, T, H/2, W/2], channel c*4 + 2*dy + dx."""
    return F.pixel_unshuffle(x.transpose(1, 2), PATCH_SIZE).transpose(1, 2)


def unpatchify(x: torch.Tensor) -> torch.Tensor:
    """Pixel-shuffle 2x2: [B, 4C, T, h, w] -> [B, C, T, 2h, 2w], inverse of ``patchify``."""
    return F.pixel_shuffle(x.transpose(1, 2), PATCH_SIZE).transpose(1, 2)


def apply_over_channels(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Apply ``linear`` to the channel axis of [B, C, T, H, W]."""
    return linear(x.movedim(1, -1)).movedim(-1, 1)


class BitWeights(nn.Module):
    """The reference quantizer's ``mask`` buffer: int64 2**(d-1), ..., 2, 1.

    For d = 64 the first entry wraps to -2**63, as in the reference. Decoding bit labels
    does not use it. It exists so the reference state dict loads strictly.
    """

    def __init__(self, bits: int):
        super().__init__()
        exponents = torch.arange(bits - 1, -1, -1)
        self.register_buffer("mask", torch.ones(bits, dtype=torch.int64) << exponents)


class QuantizerBuffers(nn.Module):
    """Buffers of the reference ``MultiScaleBSQTP_AP`` quantizer (no learned parameters)."""

    def __init__(self, semantic_dim: int, detail_dim: int):
        super().__init__()
        self.lfq_semantic = BitWeights(semantic_dim)
        self.lfq_detail = BitWeights(detail_dim)


class InfinityStarVAE(nn.Module):
    """The InfinityStar video VAE with the reference module names.

    Inference uses ``encoder``, ``decoder``, ``proj_up`` (decode), ``proj_down`` (encode)
    and ``scale_learnable_parameters[0]``. ``proj_*_two``, the other three scale entries and
    the quantizer buffers (registered as both ``quantizer`` and ``quantize``, like the
    reference) are loaded but unused.

    Precision: float32 by default, which is what the parity tests check. The reference
    decodes under CUDA bf16 autocast with float32 weights. Pass
    ``autocast_dtype=torch.bfloat16`` to ``decode`` for that.
    """

    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder3D(config)
        self.decoder = Decoder3D(config)

        dim = config.codebook_dim
        self.proj_down = nn.Linear(dim, dim)
        self.proj_down_two = nn.Linear(dim, dim)
        self.proj_up = nn.Linear(dim, dim)
        self.proj_up_two = nn.Linear(dim, dim)
        self.scale_learnable_parameters = nn.Parameter(torch.ones(4))

        self.quantizer = QuantizerBuffers(config.semantic_scale_dim, config.detail_scale_dim)
        self.quantize = self.quantizer

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        device: Optional[torch.device] = None,
    ) -> "InfinityStarVAE":
        """Build the VAE that ``state_dict`` describes and load it strictly, in eval mode.

        Float tensors are converted to float32. Raises ValueError naming the missing,
        unexpected or mis-shaped keys when the state dict is not this VAE.
        """
        config = VAEConfig.from_state_dict(state_dict)
        with torch.device("meta"):
            model = cls(config)
        model.load_reference_state_dict(state_dict, assign=True)

        model.requires_grad_(False)
        model.eval()
        logger.info(
            "loaded InfinityStar VAE: block_out_channels=%s, %d tensors",
            config.block_out_channels, len(state_dict),
        )
        return model.to(device) if device is not None else model

    def load_reference_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], assign: bool = False
    ) -> None:
        """Load a reference state dict after checking every key and shape.

        ``assign=True`` adopts the given tensors (converted to float32 where floating)
        instead of copying into the existing parameters.
        """
        validate_state_dict(self, state_dict)
        converted = {
            key: value.float() if value.is_floating_point() else value
            for key, value in state_dict.items()
        }
        self.load_state_dict(converted, strict=True, assign=assign)

    # ------------------------------------------------------------------ decode

    def prepare_decoder_input(self, codes: torch.Tensor) -> torch.Tensor:
        """Turn codes [B, 64, T, h, w] into the decoder input [B, 16, T, 2h, 2w].

        Divides by ``scale_learnable_parameters[0]``, applies ``proj_up`` over channels and
        unpatchifies.
        """
        latent = codes / self.scale_learnable_parameters[0]
        latent = apply_over_channels(self.proj_up, latent)
        return unpatchify(latent)

    def iter_decode(
        self, codes: torch.Tensor, *, autocast_dtype: Optional[torch.dtype] = None
    ) -> Iterator[torch.Tensor]:
        """Decode codes [B, 64, T, h, w] batch by batch, yielding float32 video chunks.

        The chunks [B, 3, f, 16h, 16w] follow ``plan_decode_batches(T)``: 9 frames for the
        first 3 latent frames, 13 for a first batch of 4, then 8 per pair. Concatenated
        along time they form the full video of 1 + 4(T-1) frames in [-1, 1] (not clamped). The
        causal cache carries over between chunks, so memory stays that of one chunk.
        Stop iterating to cancel. Raises ValueError for invalid codes, at the call itself.
        """
        self._validate_codes(codes)
        plan = plan_decode_batches(codes.shape[2], self.config.temporal_compression)
        return self._decode_chunks(codes, plan, autocast_dtype)

    def decode(
        self,
        codes: torch.Tensor,
        *,
        autocast_dtype: Optional[torch.dtype] = None,
        chunk_callback: Optional[DecodeProgress] = None,
        output_device: Optional[torch.device] = None,
    ) -> torch.Tensor:
        """Decode codes [B, 64, T, h, w] to video [B, 3, 1 + 4(T-1), 16h, 16w], float32.

        Values are in about [-1, 1], before any clamping. ``chunk_callback(done, total)``
        runs after each latent batch, and an exception raised there cancels the decode.
        ``output_device`` moves each
        chunk there as it is decoded (for example the CPU, to keep accelerator memory at
        one chunk). T = 2 raises ValueError, see ``plan_decode_batches``.
        """
        self._validate_codes(codes)
        plan = plan_decode_batches(codes.shape[2], self.config.temporal_compression)

        chunks = []
        for index, chunk in enumerate(self._decode_chunks(codes, plan, autocast_dtype)):
            chunks.append(chunk if output_device is None else chunk.to(output_device))
            if chunk_callback is not None:
                chunk_callback(index + 1, len(plan))
        return torch.cat(chunks, dim=2)

    @torch.no_grad()
    def _decode_chunks(
        self, codes: torch.Tensor, plan: list[FrameBatch], autocast_dtype: Optional[torch.dtype]
    ) -> Iterator[torch.Tensor]:
        if autocast_dtype is None:
            codes = codes.to(self.proj_up.weight.dtype)
        with _autocast(codes.device, autocast_dtype):
            latent = self.prepare_decoder_input(codes)  # [B, 16, T, 2h, 2w]

        # NOTE: the whole batch B is decoded together, so memory grows with B. The reference
        # decodes one sample at a time (enable_slicing), which gives the same values.
        cache = {}
        for batch in plan:
            # Autocast is entered per batch and exited before the yield, so the caller's
            # code between chunks runs without it.
            with _autocast(codes.device, autocast_dtype):
                chunk = self.decoder(latent[:, :, batch.start:batch.stop], cache, batch.split_first)
            logger.debug("decoded latent frames [%d, %d)", batch.start, batch.stop)
            yield chunk.float()

    def _validate_codes(self, codes: torch.Tensor) -> None:
        expected = self.config.codebook_dim
        if codes.ndim != 5 or codes.shape[1] != expected:
            raise ValueError(
                f"codes must be [B, {expected}, T, h, w], got shape {list(codes.shape)}"
            )
        if not codes.is_floating_point():
            raise ValueError(f"codes must be a floating-point tensor, got {codes.dtype}")
        validate_latent_frames(codes.shape[2], self.config.temporal_compression)

    # ------------------------------------------------------------------ encode

    @torch.no_grad()
    def encode(
        self, video: torch.Tensor, *, autocast_dtype: Optional[torch.dtype] = None
    ) -> torch.Tensor:
        """Encode video [B, 3, F, H, W] in [-1, 1] to mean ‖ logvar [B, 32, T, H/8, W/8].

        F must be 1, 8k or 8k+1 and H, W multiples of 16 (ValueError otherwise). Runs
        ``plan_encode_batches(F)`` with the causal cache carried over. Returns float32.
        """
        self._validate_video(video)
        plan = plan_encode_batches(video.shape[2], self.config.sample_frames_per_batch)
        if autocast_dtype is None:
            video = video.to(self.proj_down.weight.dtype)

        cache = {}
        moments = []
        for batch in plan:
            with _autocast(video.device, autocast_dtype):
                moments.append(self.encoder(video[:, :, batch.start:batch.stop], cache).float())
        return torch.cat(moments, dim=2)

    @torch.no_grad()
    def encode_raw_features(
        self,
        video: torch.Tensor,
        sample: bool = False,
        generator: Optional[torch.Generator] = None,
        *,
        autocast_dtype: Optional[torch.dtype] = None,
    ) -> torch.Tensor:
        """Encode video [B, 3, F, H, W] to the working latent [B, 64, T, H/16, W/16].

        Patchifies the encoder output, takes the posterior mean (``sample=False``) or a
        sample ``mean + exp(logvar / 2) * noise``, applies ``proj_down`` over channels and
        multiplies by ``scale_learnable_parameters[0]``. The noise comes from ``generator``
        (drawn on the generator's device, then moved) or, without one, from the global RNG
        as in the reference, whose draw is unseeded.
        """
        if generator is not None and not sample:
            raise ValueError("generator is only used with sample=True. Pass sample=True or drop it")

        moments = patchify(self.encode(video, autocast_dtype=autocast_dtype))  # [B, 128, T, h, w]
        mean, logvar = moments.chunk(2, dim=1)

        features = mean
        if sample:
            features = mean + torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE)) * _standard_normal(
                mean, generator
            )

        features = apply_over_channels(self.proj_down, features)
        return features * self.scale_learnable_parameters[0]

    def _validate_video(self, video: torch.Tensor) -> None:
        channels = self.config.in_channels
        if video.ndim != 5 or video.shape[1] != channels:
            raise ValueError(
                f"video must be [B, {channels}, F, H, W] in [-1, 1], got shape {list(video.shape)}"
            )
        if not video.is_floating_point():
            raise ValueError(
                f"video must be a floating-point tensor in [-1, 1], got {video.dtype}"
            )
        validate_video_frames(video.shape[2], self.config.sample_frames_per_batch)

        multiple = self.config.spatial_compression
        height, width = video.shape[3:]
        if height % multiple or width % multiple or height == 0 or width == 0:
            raise ValueError(
                f"video size {height}x{width} (HxW) is invalid: height and width must be "
                f"positive multiples of {multiple}. Resize or crop to "
                f"{max(height // multiple, 1) * multiple}x{max(width // multiple, 1) * multiple}"
            )


def validate_state_dict(model: InfinityStarVAE, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise ValueError unless ``state_dict`` has exactly the keys and shapes of ``model``."""
    reject_wrapped_checkpoint(state_dict)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}

    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    misshaped = [
        f"{key} {list(state_dict[key].shape)} (expected {list(shape)})"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    ]

    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if names:
            listed = ", ".join(names[:LISTED_KEYS])
            more = f" and {len(names) - LISTED_KEYS} more" if len(names) > LISTED_KEYS else ""
            problems.append(f"{len(names)} {label} keys: {listed}{more}")
    if problems:
        raise ValueError(
            "state dict does not match the InfinityStar video VAE with block_out_channels="
            f"{list(model.config.block_out_channels)}: {'; '.join(problems)}. "
            f"Expected {EXPECTED_FILE}"
        )


def _standard_normal(like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn from ``generator`` when given."""
    device = generator.device if generator is not None else like.device
    noise = torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype)
    return noise.to(like.device)


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """torch.autocast on ``device`` with ``dtype``, or no context when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(
            f"autocast_dtype={dtype} is invalid: use torch.bfloat16, torch.float16 or None (float32)"
        )
    return torch.autocast(device_type=device.type, dtype=dtype)
