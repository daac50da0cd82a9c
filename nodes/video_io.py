"""Writing frame batches to video files without ever replacing an existing file.

mp4 (h264) and webm (vp9) are encoded with PyAV, which ComfyUI already requires. The
animated webp is written with Pillow, as ComfyUI's own SaveAnimatedWEBP does, because
FFmpeg's webp muxer drops container metadata and the workflow must travel in the file.

Each file is written under a temporary name in the target folder. Its final name is
then reserved with an exclusive create (``O_CREAT | O_EXCL`` fails when the name exists),
and the temporary file is moved onto that reservation. So an existing file is never
overwritten, and a failed or cancelled write leaves no file behind.
"""

import json
import logging
import os
import uuid
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFormat:
    """One output format of the save node."""

    extension: str
    codec: str | None  # PyAV codec name; None for the Pillow webp writer
    pix_fmt: str | None


FORMATS = {
    "mp4 (h264)": VideoFormat("mp4", "libx264", "yuv420p"),
    "webm (vp9)": VideoFormat("webm", "libvpx-vp9", "yuv420p"),
    "webp (animated)": VideoFormat("webp", None, None),
}

# EXIF tags from which ComfyUI's frontend reads the prompt and workflow JSON of a webp file:
# 0x0110 (Model) contains "prompt:<json>", 0x010F (Make) and the tags below it "<key>:<json>".
EXIF_PROMPT_TAG = 0x0110
EXIF_FIRST_EXTRA_TAG = 0x010F

# Attempts at a fresh counter value when a name is taken between listing and linking.
MAX_NAME_ATTEMPTS = 1000


def check_frames(frames: torch.Tensor) -> None:
    """Raise ValueError unless frames is an IMAGE batch [F, H, W, 3] with even H and W."""
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] < 1:
        raise ValueError(
            f"expected IMAGE frames [F, H, W, 3], got shape {tuple(frames.shape)}: "
            "connect the frames output of the decode node"
        )
    height, width = frames.shape[1], frames.shape[2]
    if height % 2 or width % 2:
        raise ValueError(
            f"frame size {width}x{height} has an odd side; mp4, webm and the core VIDEO type need "
            "even width and height: crop or pad the frames to an even size (for example with an "
            "ImageCrop or ImageScale node) before saving"
        )


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[F, H, W, C] float 0..1 -> [F, H, W, 3] uint8 (rounded), on the CPU."""
    scaled = torch.clamp(frames[..., :3].float() * 255.0 + 0.5, 0, 255)
    return scaled.to(device="cpu", dtype=torch.uint8).numpy()


def metadata_strings(metadata: dict | None) -> dict[str, str]:
    """Serialise each metadata value to JSON, as ComfyUI's save nodes do."""
    return {key: json.dumps(value) for key, value in (metadata or {}).items()}


def write_video(frames: torch.Tensor, fps: float, path: str, video_format: VideoFormat,
                quality: int, metadata: dict | None) -> None:
    """Encode frames [F, H, W, 3] to path; quality is a CRF for mp4/webm, 0-100 for webp."""
    pixels = frames_to_uint8(frames)
    if video_format.codec is None:
        _write_webp(pixels, fps, path, quality, metadata)
    else:
        _write_av(pixels, fps, path, video_format, quality, metadata)


def _write_av(pixels: np.ndarray, fps: float, path: str, video_format: VideoFormat,
              crf: int, metadata: dict | None) -> None:
    # mp4 keeps custom keys such as "workflow" only with use_metadata_tags, as ComfyUI's own writer sets.
    options = {"movflags": "use_metadata_tags"} if video_format.extension == "mp4" else {}
    container = av.open(path, mode="w", format=video_format.extension, options=options)
    try:
        for key, value in metadata_strings(metadata).items():
            container.metadata[key] = value

        stream = container.add_stream(video_format.codec, rate=Fraction(round(fps * 1000), 1000))
        stream.width = pixels.shape[2]
        stream.height = pixels.shape[1]
        stream.pix_fmt = video_format.pix_fmt
        stream.options = {"crf": str(crf)}
        if video_format.codec == "libvpx-vp9":
            stream.bit_rate = 0  # constant-quality mode: the CRF alone sets the quality

        for image in pixels:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()


def _write_webp(pixels: np.ndarray, fps: float, path: str, quality: int, metadata: dict | None) -> None:
    images = [Image.fromarray(image) for image in pixels]
    exif = images[0].getexif()
    extra = dict(metadata or {})
    prompt = extra.pop("prompt", None)
    if prompt is not None:
        exif[EXIF_PROMPT_TAG] = f"prompt:{json.dumps(prompt)}"
    tag = EXIF_FIRST_EXTRA_TAG
    for key, value in extra.items():
        exif[tag] = f"{key}:{json.dumps(value)}"
        tag -= 1

    images[0].save(
        path, format="WEBP", save_all=True, append_images=images[1:],
        duration=round(1000.0 / fps), loop=0, quality=quality, exif=exif,
    )


def save_without_overwrite(write, folder: str, stem: str, counter: int, extension: str) -> str:
    """Run write(temp_path), then move the result to the first free '<stem>_<counter>_.<ext>'.

    Returns the final file name. The temporary file is removed on every path, so an
    exception or a cancel inside write leaves nothing behind.
    """
    temp_path = os.path.join(folder, f".{stem}_{uuid.uuid4().hex}.partial.{extension}")
    try:
        write(temp_path)
        for _ in range(MAX_NAME_ATTEMPTS):
            name = f"{stem}_{counter:05}_.{extension}"
            final_path = os.path.join(folder, name)
            try:
                os.close(os.open(final_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                counter += 1
                continue
            os.replace(temp_path, final_path)
            return name
        raise FileExistsError(
            f"no free file name for {stem!r} in {folder} after {MAX_NAME_ATTEMPTS} attempts: "
            "choose another filename_prefix"
        )
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)
