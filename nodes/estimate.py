"""FLOP-model estimates and run statistics, shaped for the nodes' UI.

The numbers come from the engine (``pipeline.plan_generation``, ``pruning.planned_work``,
``flops.count_flops``). This module only groups them per scale and turns them into
JSON-ready dicts for the web extension and the sampler's statistics output.
"""

import logging
from dataclasses import asdict, dataclass

from ..faststar import flops, pipeline, pruning
from ..faststar.model import TransformerConfig

logger = logging.getLogger(__name__)


@dataclass
class ScaleEstimate:
    """Planned tokens of one scale (all its repetitions) and the share the plan keeps."""

    si: int
    clip: int
    rel_si: int
    thw: tuple[int, int, int]
    tokens: int  # tokens over the repetitions, per block
    kept: int  # tokens the plan forwards, averaged over blocks
    flop_share: float  # share of the dense run's FLOPs

    @property
    def keep_ratio(self) -> float:
        return self.kept / self.tokens if self.tokens else 1.0


def flop_model(config: TransformerConfig | None) -> flops.FlopModel:
    """FLOP model of a checkpoint, or of the released 8B model when none is loaded."""
    return flops.RELEASED_8B if config is None else flops.FlopModel.from_config(config)


def estimate(config: pruning.PruningConfig, settings: pipeline.GenerationSettings,
             model_config: TransformerConfig | None = None) -> dict:
    """Per-scale keep ratios and the FLOP-model speedup of a pruning plan, as a dict.

    Raises ValueError for settings the engine rejects (frame count, preset, template).
    """
    plan = pipeline.plan_generation(settings)
    model = flop_model(model_config)
    work = pruning.planned_work(config, plan.steps, model.depth)
    dense = flops.count_flops(model, plan.steps)
    pruned = flops.count_flops(model, plan.steps, work)

    scales = _group_by_scale(plan.steps, work, dense)
    return {
        "preset": settings.preset,
        "video_frames": settings.video_frames,
        "speedup": dense.total / pruned.total,
        "dense_tflop": dense.total / 1e12,
        "pruned_tflop": pruned.total / 1e12,
        "scales": [dict(asdict(scale), keep_ratio=scale.keep_ratio) for scale in scales],
    }


def _group_by_scale(steps, work, dense: flops.FlopCount) -> list[ScaleEstimate]:
    by_si: dict[int, ScaleEstimate] = {}
    for step, entry, step_flops in zip(steps, work, dense.per_step):
        kept = 0.0 if entry.skip else sum(entry.tokens) / len(entry.tokens)
        scale = by_si.get(step.si)
        if scale is None:
            scale = by_si[step.si] = ScaleEstimate(step.si, step.clip, step.rel_si, tuple(step.thw), 0, 0, 0.0)
        scale.tokens += step.L
        scale.kept += round(kept)
        scale.flop_share += step_flops / dense.total
    return [by_si[si] for si in sorted(by_si)]


def run_statistics(result: pipeline.GenerationResult, pruner: pruning.FastStarPruner | None,
                   model_config: TransformerConfig, elapsed_s: float) -> dict:
    """Summary of one generation: time, tokens forwarded against the dense run, FLOP speedup."""
    steps = result.plan.steps
    model = flop_model(model_config)
    tokens = sum(stat.tokens for stat in result.stats)
    kept = sum(stat.kept for stat in result.stats)

    summary = {
        "seconds": elapsed_s,
        "generation_seconds": result.seconds,
        "steps": len(result.stats),
        "tokens": tokens,
        "tokens_refined": kept,
        "refined_fraction": kept / tokens if tokens else 1.0,
        "estimated_speedup": 1.0,
        "pruning": "off",
        "per_scale": [],
    }
    if pruner is None:
        return summary

    config = pruner.config
    restore_range = config.restore_block_range(model.depth) if config.method == "restore" else (0, 0)
    # Teacher-forced steps are recorded when they finish, after later planned steps, so the
    # entries are put back in step order before they are matched with the schedule.
    ordered = pruning.PruningStats(sorted(pruner.stats.steps, key=lambda entry: entry.step))
    work = ordered.work(model.depth, restore_range)
    if len(work) == len(steps):
        summary["estimated_speedup"] = flops.flop_speedup(model, steps, work)
    else:
        # NOTE: the pruner records one entry per step, so a count that differs means a run
        # that ended early. The FLOP model needs every step.
        logger.warning("pruning statistics cover %d of %d steps; no speedup estimate", len(work), len(steps))
    summary["pruning"] = config.method
    summary["per_scale"] = [
        {"si": s.si, "clip": s.clip, "rel_si": s.rel_si, "repeat": s.repeat_idx, "tokens": s.tokens,
         "kept": s.kept, "mode": s.mode}
        for s in pruner.stats.steps if s.mode != "dense"
    ]
    return summary


def format_statistics(summary: dict) -> str:
    """Format the statistics one fact per line, for logs and the node's text display."""
    lines = [
        f"time: {summary['seconds']:.1f} s",
        f"tokens refined: {summary['tokens_refined']:,} of {summary['tokens']:,} "
        f"({100 * summary['refined_fraction']:.1f} %)",
        f"estimated speedup (FLOP model): {summary['estimated_speedup']:.2f}x",
        f"pruning: {summary['pruning']}",
    ]
    return "\n".join(lines)
