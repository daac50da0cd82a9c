"""Save node: frames to mp4, webm or animated webp, plus a core VIDEO output."""

import errno
import logging
import os
from fractions import Fraction

import folder_paths
from comfy.cli_args import args
from comfy_api.input_impl import VideoFromComponents
from comfy_api.latest import io, ui
from comfy_api.util import VideoComponents

from . import video_io
from .types import VIDEO_FPS

logger = logging.getLogger(__name__)

CATEGORY = "InfinityStar"


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
                    "format", options=list(video_io.FORMATS), default="mp4 (h264)",
                    tooltip="Container and codec: mp4 with h264 (plays everywhere), webm with vp9, or an "
                            "animated webp image.",
                ),
                io.Int.Input(
                    "quality", default=19, min=0, max=63, step=1,
                    tooltip="For mp4 and webm the constant rate factor (CRF): lower is better and larger, "
                            "19 is near transparent for h264. For webp the quality from 0 to 63 is scaled to "
                            "0-100 (higher is better).",
                ),
            ],
            outputs=[io.Video.Output("video", tooltip="The same frames as a core VIDEO (h264 when saved by core nodes).")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, fps, filename_prefix, format, quality) -> io.NodeOutput:
        video_io.check_frames(images)
        if format not in video_io.FORMATS:
            raise ValueError(f"unknown format {format!r}: use one of {list(video_io.FORMATS)}")
        video_format = video_io.FORMATS[format]
        height, width = images.shape[1], images.shape[2]

        output_dir = folder_paths.get_output_directory()
        folder, stem, counter, subfolder = _output_location(filename_prefix, output_dir, width, height)
        metadata = None if args.disable_metadata else _workflow_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo)
        codec_quality = quality if video_format.codec else round(quality * 100 / 63)

        def write(path):
            video_io.write_video(images, fps, path, video_format, codec_quality, metadata)

        try:
            name = video_io.save_without_overwrite(write, folder, stem, counter, video_format.extension)
        except PermissionError as error:
            raise _unwritable(folder) from error
        logger.info("saved %d frames to %s", images.shape[0], os.path.join(folder, name))

        video = VideoFromComponents(VideoComponents(images=images[..., :3], frame_rate=Fraction(round(fps * 1000), 1000)))
        preview = ui.PreviewVideo([ui.SavedResult(name, subfolder, io.FolderType.output)])
        return io.NodeOutput(video, ui=preview)


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


def _workflow_metadata(prompt, extra_pnginfo) -> dict | None:
    """Collect the prompt and the UI workflow, as ComfyUI's own save nodes embed them."""
    metadata = {}
    if extra_pnginfo is not None:
        metadata.update(extra_pnginfo)
    if prompt is not None:
        metadata["prompt"] = prompt
    return metadata or None
