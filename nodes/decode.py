"""Decode node: generated codes to IMAGE frames, the fps, and the FastSTAR heatmap video."""

import logging

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker

from ..faststar.vae import video_to_frames
from . import patching
from .types import InfinityStarCodes, InfinityStarVAE

logger = logging.getLogger(__name__)

CATEGORY = "InfinityStar"


class Decode(io.ComfyNode):
    """Decode InfinityStar codes with the video VAE."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfinityStarDecode",
            display_name="InfinityStar Decode",
            category=CATEGORY,
            description=(
                "Decodes the STAR sampler's codes with the InfinityStar VAE into IMAGE frames [F, H, W, 3] in "
                "0..1 and their frame rate, ready for Save Video, Create Video or Video Combine. Optionally "
                "also returns a heatmap video of the tokens FastSTAR refined (white) and kept from the "
                "coarser scale (black), one frame per latent frame of every pruned step."
            ),
            inputs=[
                InfinityStarVAE.Input("vae", tooltip="The VAE from Load InfinityStar VAE."),
                InfinityStarCodes.Input("codes", tooltip="The codes from the STAR sampler."),
                io.Boolean.Input(
                    "reference_postprocess", default=True,
                    tooltip="Match the reference scripts' output: frame 0 replaced by frame 1 and values "
                            "truncated to 8-bit levels. Off returns the decoded frames as they are.",
                ),
                io.Boolean.Input(
                    "heatmap", default=False,
                    tooltip="Also output the FastSTAR heatmap video. Off, or for a dense run, the heatmap "
                            "output is empty and nodes after it do not run.",
                ),
            ],
            outputs=[
                io.Image.Output("frames", tooltip="The video frames [F, H, W, 3] in 0..1 (even width and height)."),
                io.Float.Output("fps", tooltip="Frames per second of the video (16)."),
                io.Image.Output("heatmap_frames", display_name="heatmap", tooltip="Kept-token maps of the pruned steps, white = refined."),
            ],
        )

    @classmethod
    def execute(cls, vae, codes, reference_postprocess, heatmap) -> io.NodeOutput:
        patching.load_to_device(vae)
        module = vae.model
        device = next(module.parameters()).device
        progress = comfy.utils.ProgressBar(1)

        def on_chunk(done: int, total: int) -> None:
            progress.update_absolute(done, total)
            mm.throw_exception_if_processing_interrupted()

        with torch.inference_mode():
            video = module.decode(codes.codes.to(device), chunk_callback=on_chunk,
                                  output_device=mm.intermediate_device())  # [1, 3, F, H, W]
        frames = video_to_frames(video, reference_postprocess=reference_postprocess)  # [F, H, W, 3]
        heatmap_frames = _heatmap(codes, frames.shape[1:3]) if heatmap else ExecutionBlocker(None)
        return io.NodeOutput(frames, float(codes.fps), heatmap_frames)


def _heatmap(codes, full_hw):
    """IMAGE [N, H, W, 3] of the kept-token maps, or a silent blocker when nothing was pruned."""
    stats = codes.extra.get("pruning_stats")
    if stats is None:
        logger.info("InfinityStar Decode: the run was dense, so there is no heatmap")
        return ExecutionBlocker(None)

    maps, _ = stats.keep_map_frames(tuple(full_hw))  # [N, H, W] in {0, 1}
    if maps.shape[0] == 0:
        logger.info("InfinityStar Decode: no step was pruned, so there is no heatmap")
        return ExecutionBlocker(None)
    return maps.to(mm.intermediate_device())[..., None].expand(-1, -1, -1, 3).contiguous()
