"""Writing frames to video files: mp4 (H.264) and webm (VP9) with PyAV, animated WebP with Pillow.

FFmpeg's WebP muxer drops container metadata, so Pillow writes the animated WebP and
stores the metadata as EXIF strings, where ComfyUI's frontend looks for an embedded
workflow. mp4 keeps custom metadata keys only with ``movflags=use_metadata_tags``.

A video is encoded to a hidden temporary file in the target folder. Its final name is
then reserved with an exclusive create (``O_CREAT | O_EXCL`` fails when the name exists,
a dangling link included), and the temporary file is moved onto that reservation. So an
existing file is never overwritten, even one created during the encode, and a failed or
cancelled write leaves no file behind. The file gets the permissions the umask gives new
files.
"""

import itertools
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np
from PIL import Image, ImageSequence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFormat:
    """A file format this module writes, and the range of its quality setting."""

    extension: str
    codec: str | None  # PyAV encoder; None when Pillow writes the file
    default_quality: int
    quality_range: tuple[int, int]
    quality_meaning: str  # for messages: what the quality number sets
    options: dict = field(default_factory=dict)  # further encoder options


VIDEO_FORMATS = {
    "mp4": VideoFormat("mp4", "libx264", 17, (0, 51), "CRF, lower is better", {"preset": "medium"}),
    # b=0 puts libvpx-vp9 in constant-quality mode, where the CRF alone sets the quality.
    "webm": VideoFormat("webm", "libvpx-vp9", 20, (0, 63), "CRF, lower is better", {"b": "0"}),
    "webp": VideoFormat("webp", None, 90, (0, 100), "quality, higher is better"),
}

# EXIF tags of the WebP metadata, as ComfyUI's own SaveAnimatedWEBP writes them: 0x0110 (Model)
# contains "prompt:<value>", and the other entries "<key>:<value>" go to 0x010F (Make) and the tags
# below it. ComfyUI's frontend (comfyui-frontend-package 1.27.10) reads every EXIF string of the form
# "<key>:<value>". Pillow 13 writes strings into the tags from 0x010F down to 0x010B only.
EXIF_PROMPT_TAG = 0x0110
EXIF_EXTRA_TAGS = tuple(range(0x010F, 0x010A, -1))
WEBP_PROMPT_KEY = "prompt"

MAX_WEBP_FRAME_RATE = 1000.0  # WebP frame durations are whole milliseconds


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


def check_fps(fps: float, spec: VideoFormat) -> None:
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps={fps} is invalid: use a frame rate > 0 (InfinityStar videos are 16 fps)")
    if spec.codec is None and fps > MAX_WEBP_FRAME_RATE:
        raise ValueError(f"fps={fps} is too high for WebP, whose frames last at least 1 ms: use at most "
                         f"{MAX_WEBP_FRAME_RATE:g}")


def check_quality(quality: int | None, spec: VideoFormat) -> int:
    """Return the quality to encode with: the format's default for None, else a checked integer."""
    if quality is None:
        return spec.default_quality
    low, high = spec.quality_range
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not low <= quality <= high:
        raise ValueError(f"quality={quality!r} is invalid for {spec.extension}: use an integer from {low} to "
                         f"{high} ({spec.quality_meaning})")
    return int(quality)


def check_metadata(metadata: dict[str, str] | None, spec: VideoFormat) -> dict[str, str]:
    """Return the metadata entries; keys and values must be strings, and WebP must fit its EXIF tags."""
    entries = dict(metadata or {})
    for key, value in entries.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise TypeError(f"metadata entry {key!r}: {type(value).__name__} is invalid; keys and values must be "
                            "non-empty strings (serialise objects to JSON first)")
    if spec.codec is not None:
        return entries

    colon_keys = [key for key in entries if ":" in key]
    if colon_keys:
        raise ValueError(f"metadata keys {colon_keys} contain ':', which separates key and value in WebP EXIF "
                         "strings: rename them")
    extra = len(entries) - (WEBP_PROMPT_KEY in entries)
    if extra > len(EXIF_EXTRA_TAGS):
        raise ValueError(f"{extra} metadata entries besides {WEBP_PROMPT_KEY!r} do not fit the "
                         f"{len(EXIF_EXTRA_TAGS)} EXIF tags of a WebP file: store fewer entries, or save mp4 or webm")
    return entries


def unused_path(directory: Path, prefix: str, extension: str) -> Path:
    """Return the first ``prefix_00001.ext``-style name in ``directory`` that does not exist."""
    index = 1
    while True:
        candidate = directory / f"{prefix}_{index:05d}.{extension}"
        if not candidate.exists():
            return candidate
        index += 1


def video_format(path: Path, format: str | None = None) -> VideoFormat:
    """Return the format named by ``format`` or by the file extension; both must agree."""
    path = Path(path)
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
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name in it, e.g. {path / 'video.mp4'}")
    if os.path.lexists(path):
        raise FileExistsError(f"{path} already exists; choose another name (files are never overwritten)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist; create it first")
    try:
        handle, probe = tempfile.mkstemp(prefix=".probe-", dir=path.parent)
    except OSError as error:
        raise PermissionError(f"cannot write to output folder {path.parent}: {error.strerror}") from error
    os.close(handle)
    os.unlink(probe)


def write_video(
    frames,
    path: str | os.PathLike,
    fps: float = 16.0,
    format: str | None = None,
    metadata: dict[str, str] | None = None,
    quality: int | None = None,
) -> Path:
    """Encode frames [F, H, W, 3] to ``path`` and return it; never overwrites an existing file.

    The format comes from ``format`` or the file extension (mp4, webm, webp). ``quality``
    is the CRF for mp4 (0-51) and webm (0-63), the quality (0-100) for webp; None takes the
    format's default. Metadata entries (for example a ComfyUI workflow as JSON) are stored
    in the container, or in EXIF strings for webp.
    """
    path = Path(path)
    check_output_path(path)
    video_format(path, format)
    return write_video_to_free_name(frames, [path], fps=fps, format=format, metadata=metadata, quality=quality)


def write_video_to_free_name(
    frames,
    candidates: Iterable[str | os.PathLike],
    fps: float = 16.0,
    format: str | None = None,
    metadata: dict[str, str] | None = None,
    quality: int | None = None,
) -> Path:
    """Encode frames [F, H, W, 3] once and save them under the first candidate path still free.

    The candidates must share one folder and the format's extension. A candidate is taken
    when it exists at the moment the encoded file is moved into place, so a file created
    during the encode is skipped, not overwritten. Raises FileExistsError when every
    candidate is taken. The other arguments are those of ``write_video``.
    """
    remaining = iter(candidates)
    first = next(remaining, None)
    if first is None:
        raise ValueError("no candidate file name given: pass at least one path")
    first = Path(first)
    spec = video_format(first, format)
    check_fps(fps, spec)
    quality = check_quality(quality, spec)
    entries = check_metadata(metadata, spec)
    pixels = to_uint8(frames)
    if spec.codec is not None:
        check_even_size(pixels.shape[1], pixels.shape[2])

    temporary = _reserve_temporary(first.parent, spec.extension)
    try:
        _encode(pixels, temporary, spec, fps, quality, entries)
        path = _claim_first_free(itertools.chain([first], remaining), first.parent, spec)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _move_onto(temporary, path)
    logger.info("wrote %d frames (%dx%d) to %s", len(pixels), pixels.shape[2], pixels.shape[1], path)
    return path


def _reserve_temporary(folder: Path, extension: str) -> str:
    """Create an empty hidden file in ``folder`` with the permissions the umask gives new files.

    mkstemp creates files readable by the owner only, which would hide the video from
    other users of a shared output folder.
    """
    handle, temporary = tempfile.mkstemp(prefix=".partial-", suffix=f".{extension}", dir=folder)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return temporary


def _claim_first_free(candidates: Iterable[Path], folder: Path, spec: VideoFormat) -> Path:
    """Create the first candidate that does not exist yet, empty, and return it."""
    tried = []
    for candidate in candidates:
        candidate = Path(candidate)
        if candidate.parent != folder or candidate.suffix.lstrip(".").lower() != spec.extension:
            raise ValueError(f"candidate {candidate} is not a .{spec.extension} file in {folder}: give names "
                             "in one folder with one extension")
        tried.append(candidate)
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            logger.debug("%s exists; trying the next name", candidate)
            continue
        return candidate

    if len(tried) == 1:
        raise FileExistsError(f"{tried[0]} already exists; choose another name (files are never overwritten)")
    raise FileExistsError(f"all {len(tried)} names from {tried[0].name} to {tried[-1].name} exist in {folder}; "
                          "choose another name (files are never overwritten)")


def _move_onto(temporary: str, path: Path) -> None:
    """Replace the empty reservation at ``path`` with the encoded file; on failure remove both."""
    try:
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise


def _encode(pixels: np.ndarray, target: str, spec: VideoFormat, fps: float, quality: int,
            metadata: dict[str, str]) -> None:
    if spec.codec is None:
        _encode_webp(pixels, target, fps, quality, metadata)
    else:
        _encode_av(pixels, target, spec, fps, quality, metadata)


def _encode_av(pixels: np.ndarray, target: str, spec: VideoFormat, fps: float, crf: int,
               metadata: dict[str, str]) -> None:
    """Encode uint8 frames [F, H, W, 3] with PyAV as yuv420p."""
    options = {"movflags": "use_metadata_tags"} if spec.extension == "mp4" else {}
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(target, mode="w", format=spec.extension, options=options) as container:
        for key, value in metadata.items():
            container.metadata[key] = value
        stream = container.add_stream(spec.codec, rate=rate)
        stream.width, stream.height = pixels.shape[2], pixels.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), **spec.options}

        for frame in pixels:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _encode_webp(pixels: np.ndarray, target: str, fps: float, quality: int, metadata: dict[str, str]) -> None:
    """Write uint8 frames [F, H, W, 3] as an animated WebP that loops forever."""
    images = [Image.fromarray(frame) for frame in pixels]
    images[0].save(
        target, format="WEBP", save_all=True, append_images=images[1:], duration=round(1000.0 / fps), loop=0,
        quality=quality, exif=webp_exif(metadata),
    )


def webp_exif(metadata: dict[str, str]) -> Image.Exif:
    """Return the EXIF block holding the metadata as "<key>:<value>" strings."""
    exif = Image.Exif()
    extra_tags = iter(EXIF_EXTRA_TAGS)
    for key, value in metadata.items():
        tag = EXIF_PROMPT_TAG if key == WEBP_PROMPT_KEY else next(extra_tags)
        exif[tag] = f"{key}:{value}"
    return exif


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
    with Image.open(path) as image:
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
        duration_ms = image.info.get("duration") or 62.5
    return np.stack(frames), 1000.0 / duration_ms


def read_webp_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Return the "<key>:<value>" EXIF strings of a WebP file as a dict, as ComfyUI's frontend reads them."""
    with Image.open(path) as image:
        exif = image.getexif()
    entries = {}
    for value in exif.values():
        if isinstance(value, str) and ":" in value:
            key, _, text = value.partition(":")
            entries[key] = text
    return entries
