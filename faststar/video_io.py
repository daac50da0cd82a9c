"""Writing frames to video files with PyAV: mp4 (H.264), webm (VP9) and animated webp.

Files are written to a temporary name beside the target and renamed at the end, so a
failed or cancelled write never leaves a partial file under the requested name, and an
existing file is never overwritten.
"""

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFormat:
    """A container and codec PyAV writes."""

    extension: str
    container: str
    codec: str
    pixel_format: str
    options: dict


VIDEO_FORMATS = {
    "mp4": VideoFormat("mp4", "mp4", "libx264", "yuv420p", {"crf": "17", "preset": "medium"}),
    "webm": VideoFormat("webm", "webm", "libvpx-vp9", "yuv420p", {"crf": "20", "b": "0"}),
    "webp": VideoFormat("webp", "webp", "libwebp", "yuv420p", {"lossless": "0", "quality": "90", "loop": "0"}),
}


def to_uint8(frames) -> np.ndarray:
    """Convert frames [F, H, W, 3] to uint8; float input is taken as 0..1 and rounded."""
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"frames must be [F, H, W, 3] with F >= 1, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if not np.isfinite(array).all():
        raise ValueError("frames contain NaN or infinite values; the decoder output is invalid")
    return (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def check_even_size(height: int, width: int) -> None:
    if height % 2 or width % 2:
        raise ValueError(
            f"frame size {width}x{height} is odd; H.264 and VP9 with yuv420p need even sizes: "
            "crop or pad one pixel"
        )


def unused_path(directory: Path, prefix: str, extension: str) -> Path:
    """Return the first ``prefix_00001.ext``-style name in ``directory`` that does not exist."""
    index = 1
    while True:
        candidate = directory / f"{prefix}_{index:05d}.{extension}"
        if not candidate.exists():
            return candidate
        index += 1


def write_video(
    frames,
    path: str | os.PathLike,
    fps: float = 16.0,
    format: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Encode frames [F, H, W, 3] to ``path`` and return it; never overwrites an existing file.

    The format comes from ``format`` or the file extension (mp4, webm, webp). Metadata
    entries (for example a ComfyUI workflow as JSON) are stored in the container.
    """
    path = Path(path)
    spec = video_format(path, format)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps={fps} is invalid: use a frame rate > 0 (InfinityStar videos are 16 fps)")

    pixels = to_uint8(frames)
    check_even_size(pixels.shape[1], pixels.shape[2])
    check_output_path(path)

    temporary = _reserve_temporary(path.parent, spec.extension)
    try:
        _encode(pixels, temporary, spec, fps, metadata or {})
        if os.path.lexists(path):
            raise FileExistsError(f"{path} appeared while encoding; the new video was not saved")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.info("wrote %d frames (%dx%d) to %s", len(pixels), pixels.shape[2], pixels.shape[1], path)
    return path


def video_format(path: Path, format: str | None = None) -> VideoFormat:
    """Return the format named by ``format`` or by the file extension; both must agree."""
    extension = path.suffix.lstrip(".").lower()
    kind = (format or extension).lower()
    if kind not in VIDEO_FORMATS:
        raise ValueError(f"unsupported video format {kind or path.name!r}; use a name ending in "
                         f"{', '.join('.' + k for k in sorted(VIDEO_FORMATS))}")
    if format and extension and extension != kind:
        raise ValueError(f"format {format!r} does not match the file extension of {path.name}")
    return VIDEO_FORMATS[kind]


def check_output_path(path: Path) -> None:
    """Reject an existing target (a dangling link too) and a missing or unwritable folder."""
    if os.path.lexists(path):
        raise FileExistsError(f"{path} already exists; choose another name (files are never overwritten)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    try:
        handle, probe = tempfile.mkstemp(prefix=".probe-", dir=path.parent)
    except OSError as error:
        raise PermissionError(f"cannot write to output folder {path.parent}: {error.strerror}") from error
    os.close(handle)
    os.unlink(probe)


def _reserve_temporary(folder: Path, extension: str) -> str:
    """Create an empty hidden file in ``folder`` with the permissions the umask gives new files.

    mkstemp creates files readable by the owner only, which would hide the video from
    other users of a shared ComfyUI output folder.
    """
    handle, temporary = tempfile.mkstemp(prefix=".partial-", suffix=f".{extension}", dir=folder)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return temporary


def _encode(pixels: np.ndarray, target: str, spec: VideoFormat, fps: float, metadata: dict[str, str]) -> None:
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(target, mode="w", format=spec.container) as container:
        for key, value in metadata.items():
            container.metadata[key] = value
        stream = container.add_stream(spec.codec, rate=rate)
        stream.width, stream.height = pixels.shape[2], pixels.shape[1]
        stream.pix_fmt = spec.pixel_format
        stream.options = dict(spec.options)

        for frame in pixels:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a video file to uint8 frames [F, H, W, 3] and its frame rate."""
    if Path(path).suffix.lower() == ".webp":
        return _read_animated_webp(path)

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 16)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError(f"{path} contains no video frames")
    return np.stack(frames), fps


def _read_animated_webp(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """FFmpeg cannot decode animated WebP, so Pillow reads it."""
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
        duration_ms = image.info.get("duration") or 62.5
    return np.stack(frames), 1000.0 / duration_ms
