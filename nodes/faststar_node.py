"""The FastSTAR node: a patched clone of the model that the STAR sampler runs pruned."""

import logging
import math

from comfy_api.latest import io

from ..faststar import pruning
from .types import PRUNING_OPTIONS_KEY, InfinityStarModel

logger = logging.getLogger(__name__)

CATEGORY = "InfinityStar"
CUSTOM_PRESET = "custom"
PRESET_CHOICES = (*pruning.PRESETS, CUSTOM_PRESET)

# Keep-ratio inputs, last scale first; each sets one entry of PruningConfig.prune_ratios
# (prune ratio = 1 - keep ratio), counted from the end of every pruned clip.
KEEP_RATIO_INPUTS = ("keep_ratio_last", "keep_ratio_2nd_last", "keep_ratio_3rd_last", "keep_ratio_4th_last")
SCALE_NAMES = ("last scale", "second-last scale", "third-last scale", "fourth-last scale")

# Input name -> PruningConfig field, for the knobs that map one to one.
DIRECT_KNOBS = {
    "method": "method",
    "score": "score",
    "fusion": "fusion",
    "spatial_weight": "spatial_weight",
    "normalize": "normalize",
    "temporal_reference": "temporal_reference",
    "per_frame": "per_frame",
    "anchor_stride": "anchor_stride",
    "keep_last_repetition": "keep_last_repetition",
    "prune_image_clip": "prune_image_clip",
    "kv_policy": "kv_policy",
    "restore_mode": "restore_mode",
    "score_seed": "seed",
}


def _keep_ratio_inputs(defaults: pruning.PruningConfig) -> list:
    keep = keep_ratios_by_input(defaults)
    return [
        io.Float.Input(
            name, default=keep[name], min=0.0, max=1.0, step=0.01,
            tooltip=f"Fraction of the tokens of the {scale} of every video clip that is refined; the others "
                    "keep the value the coarser scales gave them. 1.0 leaves the scale dense. With method "
                    "'skip' use 0.0 (skipped) or 1.0. Used when preset is 'custom'.",
        )
        for name, scale in zip(KEEP_RATIO_INPUTS, SCALE_NAMES)
    ]


def keep_ratios_by_input(config: pruning.PruningConfig) -> dict[str, float]:
    """Keep ratio of each keep-ratio input for a config (1.0 for scales it does not prune)."""
    from_last = list(reversed(config.keep_ratios))
    return {name: (from_last[i] if i < len(from_last) else 1.0) for i, name in enumerate(KEEP_RATIO_INPUTS)}


def _method_inputs(defaults: pruning.PruningConfig) -> list:
    return [
        io.Combo.Input(
            "method", options=list(pruning.METHODS), default=defaults.method,
            tooltip="partial: FastSTAR partial update, only kept tokens run through the blocks and get new "
                    "codes. restore: FastVAR-style baseline, pruned tokens take block outputs cached at an "
                    "earlier scale. skip: drop whole scales.",
        ),
        io.Combo.Input(
            "score", options=list(pruning.SCORES), default=defaults.score,
            tooltip="Token importance. faststar: spatial and temporal dissimilarity fused; spatial: change "
                    "against the previous scale only; temporal: change against the previous frame only; "
                    "fastvar: distance to the scale's mean token; random: a seeded random baseline.",
        ),
        io.Combo.Input(
            "fusion", options=list(pruning.FUSIONS), default=defaults.fusion,
            tooltip="How spatial and temporal dissimilarity combine: pnorm (the p-norm of the pair) or "
                    "weighted (spatial_weight * spatial + (1 - spatial_weight) * temporal).",
        ),
        io.Float.Input(
            "fusion_p", default=_p_widget(defaults.fusion_p), min=0.0, max=16.0, step=0.5,
            tooltip="Exponent p of the pnorm fusion; 2 is the Euclidean norm, 0 stands for infinity "
                    "(the larger of the two dissimilarities).",
        ),
        io.Float.Input(
            "spatial_weight", default=defaults.spatial_weight, min=0.0, max=1.0, step=0.05,
            tooltip="Weight of the spatial dissimilarity in the weighted fusion (0 = temporal only).",
        ),
        io.Combo.Input(
            "normalize", options=list(pruning.NORMALIZATIONS), default=defaults.normalize,
            tooltip="minmax rescales each dissimilarity map to 0..1 before fusing; none fuses raw values.",
        ),
        io.Combo.Input(
            "temporal_reference", options=list(pruning.TEMPORAL_REFERENCES), default=defaults.temporal_reference,
            tooltip="What a frame is compared with for the temporal term: previous_frame (frame 0 of a clip "
                    "against the last latent frame of the clip before) or clip_last_frame (every frame "
                    "against that last frame).",
        ),
        io.Boolean.Input(
            "per_frame", default=defaults.per_frame,
            tooltip="Give every latent frame the same keep quota instead of one top-k over the whole "
                    "scale, so static frames are not starved.",
        ),
        io.Int.Input(
            "anchor_stride", default=defaults.anchor_stride, min=0, max=64, step=1,
            tooltip="Always keep every n-th row and column of every frame as anchors; 0 turns anchors off.",
        ),
    ]


def _schedule_inputs(defaults: pruning.PruningConfig) -> list:
    start, end = defaults.restore_layers or (0, 0)
    return [
        io.Boolean.Input(
            "keep_last_repetition", default=defaults.keep_last_repetition,
            tooltip="Run the last repetition of a repeated scale dense (the third-party port's rule).",
        ),
        io.Boolean.Input(
            "prune_image_clip", default=defaults.prune_image_clip,
            tooltip="Also prune the first (image) clip. Off by default: it is a small share of the compute "
                    "and sets the appearance of the whole video.",
        ),
        io.Combo.Input(
            "kv_policy", options=list(pruning.KV_POLICIES), default=defaults.kv_policy,
            tooltip="The last scale of a clip is attended to by the next clip. full runs it dense so the "
                    "next clip sees every token; kept prunes it too and caches only the kept tokens.",
        ),
        io.Int.Input(
            "restore_start", default=start, min=0, max=128, step=1,
            tooltip="Method restore: first block that runs on kept tokens. With restore_end 0 the default "
                    "range is used (dense first 4 and last 5 of 36 blocks, scaled to the model's depth).",
        ),
        io.Int.Input(
            "restore_end", default=end, min=0, max=128, step=1,
            tooltip="Method restore: block after the last one that runs on kept tokens; 0 uses the default range.",
        ),
        io.Combo.Input(
            "restore_mode", options=list(pruning.RESTORE_MODES), default=defaults.restore_mode,
            tooltip="Method restore: interpolation of the cached block outputs to the pruned scale's grid.",
        ),
        io.Int.Input(
            "score_seed", default=defaults.seed, min=0, max=2**31 - 1, step=1,
            tooltip="Seed of the random score (score = random); other scores ignore it.",
        ),
    ]


def _p_widget(p: float) -> float:
    return 0.0 if math.isinf(p) else p


class FastSTAR(io.ComfyNode):
    """Attach a FastSTAR pruning configuration to a clone of the model."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        defaults = pruning.PRESETS[pruning.DEFAULT_PRESET]
        return io.Schema(
            node_id="InfinityStarFastSTAR",
            display_name="FastSTAR (token pruning)",
            category=CATEGORY,
            description=(
                "Speeds up the STAR sampler with FastSTAR: at the last, finest scales of every video clip only "
                "the tokens that still change (spatially against the coarser scale, temporally against the "
                "previous frame) are refined; the rest keep their coarse value. Returns a patched clone; the "
                "input model is unchanged. Presets set every knob; choose 'custom' to use the knobs below."
            ),
            inputs=[
                InfinityStarModel.Input("model", tooltip="The model from Load InfinityStar Model."),
                io.Combo.Input(
                    "preset", options=list(PRESET_CHOICES), default=pruning.DEFAULT_PRESET,
                    tooltip="off: dense. balanced: keep 50 / 50 / 40 % of the last three scales of each video "
                            "clip. fast: keep 40 / 40 / 30 %. last4: the third-party port's four-scale plan. "
                            "fastvar and skip_last: baselines. custom: use the knobs below.",
                ),
                *_keep_ratio_inputs(defaults),
                *_method_inputs(defaults),
                *_schedule_inputs(defaults),
            ],
            outputs=[InfinityStarModel.Output("faststar_model", display_name="model", tooltip="A clone of the model that the STAR sampler runs with FastSTAR.")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, model, preset, **knobs) -> io.NodeOutput:
        config = config_from_inputs(preset, knobs)
        if not config.active:
            logger.info("FastSTAR: preset %r prunes nothing; returning the model unchanged", preset)
            return io.NodeOutput(model)

        patched = model.clone()
        options = patched.model_options.setdefault("transformer_options", {})
        options[PRUNING_OPTIONS_KEY] = config
        logger.info("FastSTAR: %s, keep ratios %s (coarsest first)", config.method, config.keep_ratios)
        return io.NodeOutput(patched)


def config_from_inputs(preset: str, knobs: dict) -> pruning.PruningConfig:
    """Build the PruningConfig a preset names, or, for 'custom', the one the knobs describe."""
    if preset != CUSTOM_PRESET:
        return pruning.preset(preset)

    prune_ratios = _prune_ratios(knobs["method"], [knobs[name] for name in KEEP_RATIO_INPUTS])
    fields = {field: knobs[name] for name, field in DIRECT_KNOBS.items()}
    fields["fusion_p"] = math.inf if knobs["fusion_p"] == 0 else knobs["fusion_p"]
    fields["restore_layers"] = None if knobs["restore_end"] == 0 else (knobs["restore_start"], knobs["restore_end"])
    return pruning.PruningConfig(prune_ratios=prune_ratios, **fields)


def _prune_ratios(method: str, keep_from_last: list[float]) -> tuple[float, ...]:
    """Keep ratios (last scale first) -> prune ratios (coarsest first), without leading dense scales."""
    for keep, scale in zip(keep_from_last, SCALE_NAMES):
        if method == "skip" and keep not in (0.0, 1.0):
            raise ValueError(
                f"keep ratio {keep} for the {scale} is invalid with method 'skip', which drops whole "
                "scales: set it to 0.0 (skip the scale) or 1.0 (keep it)"
            )
        if method != "skip" and keep == 0.0:
            raise ValueError(
                f"keep ratio 0.0 for the {scale} would refine no token: use a keep ratio above 0, "
                "or method 'skip' to drop the scale"
            )

    if method == "skip" and keep_from_last != sorted(keep_from_last):
        raise ValueError(
            f"keep ratios {keep_from_last} (last scale first) skip a scale before a kept one; method 'skip' "
            "drops the final scales only: set 0.0 from the last scale backwards and 1.0 after that"
        )

    prune = [round(1.0 - keep, 6) for keep in reversed(keep_from_last)]
    while prune and prune[0] == 0.0:
        prune.pop(0)
    return tuple(prune)
