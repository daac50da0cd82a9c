"""Compare node: PSNR and SSIM between two frame batches, and a side-by-side video."""

import logging
import math

import torch
from comfy_api.latest import io, ui

from ..faststar import metrics

logger = logging.getLogger(__name__)

CATEGORY = "InfinityStar"


class CompareVideos(io.ComfyNode):
    """Score a candidate video against a reference video, frame by frame."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfinityStarCompareVideos",
            display_name="Compare Videos (PSNR / SSIM)",
            category=CATEGORY,
            description=(
                "Computes PSNR (dB) and SSIM between two frame batches of the same size, per frame and "
                "averaged over frames, for example a dense run against a FastSTAR run with the same seed. "
                "Also returns the two videos side by side (reference left) and shows the scores on the node."
            ),
            inputs=[
                io.Image.Input("reference", tooltip="The reference frames [F, H, W, 3], e.g. the dense run."),
                io.Image.Input("candidate", tooltip="The frames to score, e.g. the FastSTAR run; same size and count."),
            ],
            outputs=[
                io.Float.Output("psnr", tooltip="Mean PSNR over frames in dB (infinity for identical videos)."),
                io.Float.Output("ssim", tooltip="Mean SSIM over frames (1.0 for identical videos)."),
                io.Image.Output("side_by_side", tooltip="Reference and candidate next to each other."),
            ],
        )

    @classmethod
    def execute(cls, reference, candidate) -> io.NodeOutput:
        if reference.shape != candidate.shape:
            raise ValueError(
                f"reference {tuple(reference.shape)} and candidate {tuple(candidate.shape)} differ in shape: "
                "compare videos of the same resolution and frame count (same sampler settings)"
            )
        reference_rgb, candidate_rgb = reference[..., :3], candidate[..., :3]
        psnr = metrics.psnr(candidate_rgb, reference_rgb)
        ssim = metrics.ssim(candidate_rgb, reference_rgb)

        text = summary_text(psnr.mean, ssim.mean, reference.shape[0])
        logger.info("Compare Videos: %s", text)
        side_by_side = torch.cat([reference_rgb, candidate_rgb.to(reference_rgb.device)], dim=2)
        return io.NodeOutput(psnr.mean, ssim.mean, side_by_side, ui=ui.PreviewText(text))


def summary_text(psnr: float, ssim: float, frames: int) -> str:
    psnr_text = "identical (PSNR infinite)" if math.isinf(psnr) else f"PSNR {psnr:.2f} dB"
    return f"{psnr_text}, SSIM {ssim:.4f} over {frames} frames"
