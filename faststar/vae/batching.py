"""Temporal batching of the VAE: which frames each causal pass processes.

The reference VAE never runs a whole video at once. It decodes latent frames in batches of
2 and encodes video frames in batches of 8, carrying the causal-convolution cache from one
batch to the next. The first batch absorbs the odd frame, so every later batch is full.
The batching changes the numbers (the first frame of a batch is resampled on its own when
the batch length is odd), so a faithful port has to batch the same way.
"""

from dataclasses import dataclass

LATENT_FRAMES_PER_BATCH = 2


@dataclass(frozen=True)
class FrameBatch:
    """Frames [start, stop) of one causal pass.

    ``split_first`` makes the temporal upsamplers merge the first upsampled frames of the
    batch into one, as they do for odd-length batches. The decoder sets it for the
    4-frame first batch of an even-length latent.
    """

    start: int
    stop: int
    split_first: bool = False


def plan_decode_batches(latent_frames: int, temporal_compression: int = 4) -> list[FrameBatch]:
    """Split ``latent_frames`` latent frames into the reference decoder's batches.

    T odd: [0:3] (or [0:1] when T = 1), then pairs, so 21 frames decode as
    [0:3], [3:5], ..., [19:21]. T even and >= 4: [0:4] with ``split_first``, then pairs.
    T = 2 raises ValueError because the reference has no plan for it (it crashes).
    ``temporal_compression`` only sizes the video frame counts in the error message.
    """
    validate_latent_frames(latent_frames, temporal_compression)

    if latent_frames % 2 == 1:
        first = FrameBatch(0, min(3, latent_frames))
    else:
        first = FrameBatch(0, 4, split_first=True)

    batches = [first]
    for start in range(first.stop, latent_frames, LATENT_FRAMES_PER_BATCH):
        batches.append(FrameBatch(start, start + LATENT_FRAMES_PER_BATCH))
    return batches


def validate_latent_frames(latent_frames: int, temporal_compression: int = 4) -> None:
    """Raise ValueError unless the decoder can decode ``latent_frames`` latent frames."""
    def video_frames(count: int) -> int:
        return 1 + temporal_compression * (count - 1)

    if latent_frames == 2:
        raise ValueError(
            f"2 latent frames ({video_frames(2)} video frames) cannot be decoded: the "
            "reference decoder batches an even frame count as a first batch of 4 plus pairs, "
            "so it has no batch for 2 frames and crashes. Use 1 latent frame (1 video frame) "
            f"or 3 or more ({video_frames(3)}, {video_frames(4)}, {video_frames(5)}, ... "
            f"video frames). The released schedules use 21 ({video_frames(21)} frames) "
            f"or 41 ({video_frames(41)} frames)"
        )
    if latent_frames < 1:
        raise ValueError(
            f"latent_frames={latent_frames} is invalid: decoding needs at least 1 latent frame"
        )


def plan_encode_batches(video_frames: int, frames_per_batch: int = 8) -> list[FrameBatch]:
    """Split ``video_frames`` frames into the reference encoder's batches.

    With r = F mod 8, the first batch is [0 : 8 + r] and batch i >= 1 is
    [8i + r : 8(i+1) + r]. F = 17 gives [0:9], [9:17], F = 81 gives ten batches and
    F = 1 one batch.
    """
    validate_video_frames(video_frames, frames_per_batch)

    remainder = video_frames % frames_per_batch
    num_batches = max(video_frames // frames_per_batch, 1)
    batches = [FrameBatch(0, min(frames_per_batch + remainder, video_frames))]
    for index in range(1, num_batches):
        start = frames_per_batch * index + remainder
        batches.append(FrameBatch(start, start + frames_per_batch))
    return batches


def validate_video_frames(video_frames: int, frames_per_batch: int = 8) -> None:
    """Raise ValueError unless the encoder takes ``video_frames`` frames (1, 8k or 8k+1)."""
    if video_frames == 1 or (video_frames > 1 and video_frames % frames_per_batch in (0, 1)):
        return
    below = video_frames - (video_frames - 1) % frames_per_batch
    raise ValueError(
        f"the video has {video_frames} frames, but the VAE encoder takes 1, "
        f"{frames_per_batch}k or {frames_per_batch}k+1 frames (for example 1, "
        f"{frames_per_batch + 1}, {2 * frames_per_batch + 1}, 81). Trim the clip to "
        f"{max(below, 1)} frames or pad it"
    )
