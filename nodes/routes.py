"""HTTP routes the web extension calls: pruning presets and FLOP-model estimates.

Registered on ComfyUI's PromptServer when the pack is imported by a running server
(core also serves every route under /api). Routes:

- GET /faststar/presets: the knob values of every FastSTAR preset, by input name;
- POST /faststar/estimate: per-scale keep ratios and the estimated speedup of a plan,
  for {"preset", "knobs", "resolution", "frames", "aspect_ratio", "model_name"}. The
  optional model_name is the model loader's choice; the bundled demo model selects the
  demo schedule.
"""

import logging
import math

from aiohttp import web

from ..faststar import demo, estimate, pipeline, pruning
from . import faststar_node, paths, sampler

logger = logging.getLogger(__name__)

# Schedule the chart assumes when the sampler's resolution is 'auto' (no checkpoint is known in the UI).
CHART_DEFAULT_RESOLUTION = "720p"


def preset_inputs(config: pruning.PruningConfig) -> dict:
    """Return the FastSTAR node's input values that reproduce a config."""
    values = dict(faststar_node.keep_ratios_by_input(config))
    for name, field in faststar_node.DIRECT_KNOBS.items():
        values[name] = getattr(config, field)
    values["fusion_p"] = 0.0 if math.isinf(config.fusion_p) else config.fusion_p
    start, end = config.restore_layers or (0, 0)
    values["restore_start"], values["restore_end"] = start, end
    return values


def presets_payload() -> dict:
    return {name: preset_inputs(config) for name, config in pruning.PRESETS.items()}


def estimate_payload(request: dict) -> dict:
    """Estimate for a request body; raises ValueError (or KeyError) for invalid requests."""
    preset = request.get("preset", pruning.DEFAULT_PRESET)
    knobs = request.get("knobs") or {}
    if preset == faststar_node.CUSTOM_PRESET:
        knobs = {**preset_inputs(pruning.PRESETS[pruning.DEFAULT_PRESET]), **knobs}
    config = faststar_node.config_from_inputs(preset, knobs)

    preset_name = chart_preset(request.get("resolution") or sampler.AUTO, request.get("model_name"))
    template = sampler.ASPECT_CHOICES.get(request.get("aspect_ratio") or sampler.AUTO)
    settings = pipeline.GenerationSettings(preset=preset_name, video_frames=int(request.get("frames", 81)),
                                           template=template)
    return estimate.estimate_plan(config, settings).to_dict()


def chart_preset(resolution: str, model_name: str | None) -> str:
    """Return the schedule preset the chart estimates: the demo's for the demo model, else the resolution's."""
    if resolution not in sampler.RESOLUTION_CHOICES:
        raise ValueError(f"resolution {resolution!r} is invalid: use one of {list(sampler.RESOLUTION_CHOICES)}")
    if model_name == paths.DEMO_CHOICE:
        return demo.PRESET_NAME
    return CHART_DEFAULT_RESOLUTION if resolution == sampler.AUTO else resolution


def register_routes() -> bool:
    """Add the routes to the running server; returns False when there is none (in-process use)."""
    try:
        from server import PromptServer
    except ImportError:
        return False
    if getattr(PromptServer, "instance", None) is None:
        return False

    routes = PromptServer.instance.routes

    @routes.get("/faststar/presets")
    async def get_presets(request):
        return web.json_response(presets_payload())

    @routes.post("/faststar/estimate")
    async def post_estimate(request):
        try:
            body = await request.json()
            return web.json_response(estimate_payload(body))
        except (ValueError, KeyError, TypeError) as error:
            logger.info("FastSTAR estimate rejected: %s", error)
            return web.json_response({"error": str(error)}, status=400)

    return True
