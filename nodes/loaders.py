"""Loader nodes: the InfinityStar transformer and the video VAE."""

import logging

import comfy.model_management as mm
from comfy_api.latest import io

from ..faststar import checkpoints
from . import paths, patching
from .types import CHECKPOINT_INFO_KEY, InfinityStarModel, InfinityStarVAE

logger = logging.getLogger(__name__)

CATEGORY = "InfinityStar/loaders"
RESOLUTION_CHOICES = ("auto", "720p", "480p")


class ModelLoader(io.ComfyNode):
    """Load the InfinityStar transformer into a ModelPatcher."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfinityStarModelLoader",
            display_name="Load InfinityStar Model",
            category=CATEGORY,
            description=(
                "Loads the InfinityStar transformer: 'demo (bundled)', the small demo model that ships with "
                "the pack, or from models/infinitystar the released sharded folder "
                "(infinitystar_8b_720p_weights or infinitystar_8b_480p_weights) or one .safetensors file. "
                "Checks every tensor first and tells 720p from 480p weights by the name or metadata."
            ),
            inputs=[
                io.Combo.Input(
                    "model_name", options=paths.with_demo(paths.list_transformers()),
                    tooltip="'demo (bundled)' for the demo model (17 frames of 64x64, no download), or a sharded "
                            "folder (with model.safetensors.index.json) or a .safetensors file in "
                            "models/infinitystar or an 'infinitystar:' folder of extra_model_paths.yaml.",
                ),
                io.Combo.Input(
                    "dtype", options=list(patching.DTYPE_CHOICES), default="auto",
                    tooltip="Weight dtype of the transformer blocks. auto: bf16 where the device supports it "
                            "(the training precision), fp32 otherwise. fp16 halves memory like bf16 but may overflow.",
                ),
                io.Combo.Input(
                    "resolution", options=list(RESOLUTION_CHOICES), default="auto",
                    tooltip="Which release the weights are. auto reads it from the file metadata or a '720p' / "
                            "'480p' in the name; pick it here when the files were renamed. The demo model "
                            "ignores it.",
                ),
            ],
            outputs=[InfinityStarModel.Output("model", tooltip="The transformer, managed by ComfyUI's model memory.")],
        )

    @classmethod
    def execute(cls, model_name, dtype, resolution) -> io.NodeOutput:
        path = paths.resolve_transformer(model_name)
        load_device = mm.get_torch_device()
        offload_device = mm.unet_offload_device()
        block_dtype = patching.transformer_dtype(dtype, load_device)

        model, info = checkpoints.load_transformer(
            path, dtype=block_dtype, device=offload_device,
            resolution=None if resolution == "auto" else resolution,
        )
        patcher = patching.wrap(model, load_device, offload_device)
        patcher.set_attachments(CHECKPOINT_INFO_KEY, info)
        return io.NodeOutput(patcher)


class VAELoader(io.ComfyNode):
    """Load the InfinityStar video VAE into a ModelPatcher."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfinityStarVAELoader",
            display_name="Load InfinityStar VAE",
            category=CATEGORY,
            description=(
                "Loads the InfinityStar video VAE: 'demo (bundled)', the demo model's VAE, or "
                "infinitystar_videovae.pth (or a .safetensors conversion) from models/infinitystar or "
                "models/vae. It decodes the generated codes and encodes the input image or video for "
                "image-to-video and continuation. Use the VAE of the loaded model."
            ),
            inputs=[
                io.Combo.Input(
                    "vae_name", options=paths.with_demo(paths.list_vaes()),
                    tooltip="'demo (bundled)' for the demo model's VAE, or the VAE file: "
                            "infinitystar_videovae.pth from the InfinityStar release.",
                ),
            ],
            outputs=[InfinityStarVAE.Output("vae", tooltip="The video VAE, managed by ComfyUI's model memory.")],
        )

    @classmethod
    def execute(cls, vae_name) -> io.NodeOutput:
        path = paths.resolve_vae(vae_name)
        offload_device = mm.vae_offload_device()
        vae = checkpoints.load_vae(path, device=offload_device)
        return io.NodeOutput(patching.wrap(vae, mm.vae_device(), offload_device))
