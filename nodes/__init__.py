"""ComfyUI nodes of FastSTAR for ComfyUI (V3 schema).

Importing this package registers the model folder and, inside a running server, the
HTTP routes of the web extension.
"""

import logging

from comfy_api.latest import ComfyExtension, io

from . import compare, decode, faststar_node, loaders, paths, routes, sampler, save, text

logger = logging.getLogger(__name__)

NODES: list[type[io.ComfyNode]] = [
    loaders.ModelLoader,
    loaders.VAELoader,
    text.TextEncoderLoader,
    text.TextEncode,
    faststar_node.FastSTAR,
    sampler.STARSampler,
    decode.Decode,
    save.SaveVideo,
    compare.CompareVideos,
]

paths.register_model_folders()
routes.register_routes()


class FastStarExtension(ComfyExtension):
    """The pack's node list, as ComfyUI's V3 loader requests it."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES
