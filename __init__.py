"""FastSTAR for ComfyUI: InfinityStar video generation with FastSTAR token pruning.

ComfyUI imports this file as the node pack. It stays free of ComfyUI imports so that
tools which import the repository as a package (pytest, linters) can do so without a
ComfyUI checkout; the nodes are imported when ComfyUI calls ``comfy_entrypoint``.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """Return the pack's ComfyExtension (the V3 registration hook)."""
    from .nodes import FastStarExtension

    return FastStarExtension()
