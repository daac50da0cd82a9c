"""Save node: frames to mp4, webm or animated webp, plus a core VIDEO output.

The engine's ``faststar.video_io`` encodes and places the file. This module adds what is
ComfyUI's: the output folder and its counter-based names, the format labels of the
widget, the IMAGE tensor checks and the prompt and workflow metadata.
"""

import errno
import json
import logging
import os
from fractions import Fraction

import folder_paths
import torch
from comfy.cli_args import args
from comfy_api.input_impl import VideoFromComponents
from comfy_api.latest import io, ui
from comfy_api.util import VideoComponents

from ..faststar import video_io
from .types import VIDEO_FPS

logger = logging.getLogger(__name__)

CATEGORY = "InfinityStar"

# Format label of the widget -> file extension (a key of video_io.VIDEO_FORMATS).
FORMATS = {
    "mp4 (h264)": "mp4",
    "webm (vp9)": "webm",
    "webp (animated)": "webp",
}
# The quality widget takes 0-63 for every format; webp's 0-100 scale is reached by scaling.
QUALITY_WIDGET_MAX = 63
WEBP_QUALITY_MAX = 100
# Counter values tried after ComfyUI's first free one, for names taken while encoding.
MAX_NAME_ATTEMPTS = 1000


class SaveVideo(io.ComfyNode):
    """Encode an IMAGE batch to a video file in the output folder and preview it."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfinityStarSaveVideo",
            display_name="Save Video (InfinityStar)",
            category=CATEGORY,
            description=(
                "Saves frames as mp4 (h264), webm (vp9) or animated webp in the output folder, with the "
                "workflow embedded, never replacing an existing file, and previews the result. Also returns "
                "a core VIDEO for Save Video and other video nodes. Width and height must be even."
            ),
            inputs=[
                io.Image.Input("images", tooltip="Frames [F, H, W, 3] in 0..1, for example from InfinityStar Decode."),
                io.Float.Input(
                    "fps", default=VIDEO_FPS, min=1.0, max=120.0, step=1.0,
                    tooltip="Frames per second of the file; InfinityStar videos are 16 fps.",
                ),
                io.String.Input(
                    "filename_prefix", default="InfinityStar/video",
                    tooltip="File name prefix, relative to the output folder; may contain a subfolder and "
                            "%date:yyyy-MM-dd%-style values. A counter and the extension are appended.",
                ),
                io.Combo.Input(
                    "format", options=list(FORMATS), default="mp4 (h264)",
                    tooltip="Container and codec: mp4 with h264 (plays everywhere), webm with vp9, or an "
                            "animated webp image.",
                ),
                io.Int.Input(
                    "quality", default=19, min=0, max=QUALITY_WIDGET_MAX, step=1,
                    tooltip="For mp4 (0-51) and webm (0-63) the constant rate factor (CRF): lower is better "
                            "and larger, 19 is near transparent for h264. For webp the value from 0 to 63 is "
                            "scaled to the webp quality 0-100 (higher is better).",
                ),
            ],
            outputs=[io.Video.Output("video", tooltip="The same frames as a core VIDEO (h264 when saved by core nodes).")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, fps, filename_prefix, format, quality) -> io.NodeOutput:
        check_frames(images)
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}: use one of {list(FORMATS)}")
        extension = FORMATS[format]
        height, width = images.shape[1], images.shape[2]

        output_dir = folder_paths.get_output_directory()
        folder, stem, counter, subfolder = _output_location(filename_prefix, output_dir, width, height)
        metadata = None if args.disable_metadata else _workflow_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo)
        names = (os.path.join(folder, f"{stem}_{number:05}_.{extension}")
                 for number in range(counter, counter + MAX_NAME_ATTEMPTS))
        try:
            path = video_io.write_video_to_free_name(
                frames_to_array(images), names, fps=fps, format=extension, metadata=metadata,
                quality=codec_quality(extension, quality),
            )
        except PermissionError as error:
            raise _unwritable(folder) from error
        logger.info("saved %d frames to %s", images.shape[0], path)

        video = VideoFromComponents(VideoComponents(images=images[..., :3], frame_rate=Fraction(round(fps * 1000), 1000)))
        preview = ui.PreviewVideo([ui.SavedResult(path.name, subfolder, io.FolderType.output)])
        return io.NodeOutput(video, ui=preview)


def check_frames(frames: torch.Tensor) -> None:
    """Raise ValueError unless frames is an IMAGE batch [F, H, W, 3 or 4] with even H and W."""
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


def frames_to_array(frames: torch.Tensor):
    """IMAGE [F, H, W, C] -> float32 array [F, H, W, 3] on the CPU, alpha dropped."""
    return frames[..., :3].detach().to(device="cpu", dtype=torch.float32).numpy()


def codec_quality(extension: str, quality: int) -> int:
    """Convert the quality widget's value to the format's own setting: the CRF, or webp's 0-100 quality."""
    if extension == "webp":
        return round(quality * WEBP_QUALITY_MAX / QUALITY_WIDGET_MAX)
    return quality


def _output_location(filename_prefix: str, output_dir: str, width: int, height: int):
    """Return (folder, file stem, first counter, subfolder); raise when the folder is not writable."""
    try:
        folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir, width, height)
    except PermissionError as error:
        raise _unwritable(os.path.join(output_dir, os.path.dirname(filename_prefix))) from error

    if not os.access(folder, os.W_OK | os.X_OK):
        raise _unwritable(folder)
    return folder, stem, counter, subfolder


def _unwritable(folder: str) -> PermissionError:
    return PermissionError(
        errno.EACCES,
        f"cannot write to the output folder {folder}: make it writable, change filename_prefix, or start "
        "ComfyUI with --output-directory pointing at a writable folder",
    )


def _workflow_metadata(prompt, extra_pnginfo) -> dict[str, str] | None:
    """Collect the prompt and the UI workflow as JSON strings, as ComfyUI's own save nodes embed them."""
    metadata = {}
    if extra_pnginfo is not None:
        metadata.update(extra_pnginfo)
    if prompt is not None:
        metadata["prompt"] = prompt
    return {key: json.dumps(value) for key, value in metadata.items()} or None
