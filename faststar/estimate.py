"""FLOP-model estimates of a pruning plan per scale, and the summary of a finished run.

``estimate_plan`` estimates what a plan saves before anything runs. It plans the
generation (``pipeline.plan_generation``), takes the tokens each step forwards from the
pruning plan (``pruning.planned_work``) and prices both runs with ``flops.count_flops``.
``run_summary`` does the same for a finished generation from what its pruner recorded.
The results convert to JSON-ready dicts for user interfaces.
"""

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

from . import flops, pipeline, pruning
from .model import TransformerConfig
from .schedules import Step

logger = logging.getLogger(__name__)

TERA = 1e12  # FLOPs per TFLOP


@dataclass
class ScaleEstimate:
    """Planned tokens of one scale (all its repetitions) and the share the plan keeps."""

    si: int
    clip: int
    rel_si: int
    thw: tuple[int, int, int]
    tokens: int  # tokens over the repetitions, per block
    kept: int  # tokens the plan forwards over the repetitions, averaged over blocks
    flop_share: float  # share of the dense run's FLOPs

    @property
    def keep_ratio(self) -> float:
        return self.kept / self.tokens if self.tokens else 1.0

    def to_dict(self) -> dict:
        return dict(asdict(self), thw=list(self.thw), keep_ratio=self.keep_ratio)


@dataclass
class PlanEstimate:
    """FLOPs of the dense run and of a pruning plan, for one generation's settings."""

    preset: str
    video_frames: int
    dense: flops.FlopCount
    pruned: flops.FlopCount
    scales: list[ScaleEstimate]

    @property
    def speedup(self) -> float:
        return self.dense.total / self.pruned.total

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "video_frames": self.video_frames,
            "speedup": self.speedup,
            "dense_tflop": self.dense.total / TERA,
            "pruned_tflop": self.pruned.total / TERA,
            "scales": [scale.to_dict() for scale in self.scales],
        }


def flop_model(config: TransformerConfig | None, text_tokens: int | None = None) -> flops.FlopModel:
    """FLOP model of a transformer, or of the released 8B model for None.

    ``text_tokens`` None assumes ``flops.DEFAULT_TEXT_TOKENS``, capped at the model's text length.
    """
    config = TransformerConfig() if config is None else config
    if text_tokens is None:
        text_tokens = min(flops.DEFAULT_TEXT_TOKENS, config.text_maxlen)
    return flops.FlopModel.from_config(config, text_tokens=text_tokens)


def preset_transformer(preset: str) -> TransformerConfig | None:
    """Architecture of a schedule preset's model; None for the released 8B presets (720p, 480p)."""
    return pipeline.model_preset(preset).transformer_config


def estimate_plan(config: pruning.PruningConfig, settings: pipeline.GenerationSettings,
                  model_config: TransformerConfig | None = None) -> PlanEstimate:
    """Estimate per-scale keep ratios and FLOPs of a pruning plan.

    ``model_config`` None takes the architecture of the settings' preset. Raises ValueError
    for settings the engine rejects (frame count, preset, template).
    """
    plan = pipeline.plan_generation(settings)
    model = flop_model(model_config if model_config is not None else preset_transformer(settings.preset))
    work = pruning.planned_work(config, plan.steps, model.depth)

    dense = flops.count_flops(model, plan.steps)
    pruned = flops.count_flops(model, plan.steps, work)
    scales = scale_estimates(plan.steps, work, dense)
    return PlanEstimate(settings.preset, settings.video_frames, dense, pruned, scales)


def scale_estimates(steps: Sequence[Step], work: Sequence[flops.StepWork],
                    dense: flops.FlopCount) -> list[ScaleEstimate]:
    """Add up the steps' tokens, kept tokens and dense FLOP shares per scale, in scale order."""
    by_si: dict[int, ScaleEstimate] = {}
    for step, entry, step_flops in zip(steps, work, dense.per_step, strict=True):
        kept = 0.0 if entry.skip else sum(entry.tokens) / len(entry.tokens)
        scale = by_si.get(step.si)
        if scale is None:
            scale = by_si[step.si] = ScaleEstimate(step.si, step.clip, step.rel_si, tuple(step.thw), 0, 0, 0.0)
        scale.tokens += step.L
        scale.kept += round(kept)
        scale.flop_share += step_flops / dense.total
    return [by_si[si] for si in sorted(by_si)]


def run_summary(result: pipeline.GenerationResult, pruner: pruning.FastStarPruner | None,
                model_config: TransformerConfig, elapsed_s: float, text_tokens: int | None = None) -> dict:
    """Summarise one generation: time, tokens forwarded against the dense run, FLOP speedup.

    ``elapsed_s`` is the caller's wall-clock time, model loading and input checks included;
    ``result.seconds`` is the engine's own. Returns a JSON-ready dict.
    """
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

    summary["estimated_speedup"] = run_speedup(result.plan.steps, pruner, flop_model(model_config, text_tokens))
    summary["pruning"] = pruner.config.method
    summary["per_scale"] = [
        {"si": s.si, "clip": s.clip, "rel_si": s.rel_si, "repeat": s.repeat_idx, "tokens": s.tokens,
         "kept": s.kept, "mode": s.mode}
        for s in pruner.stats.steps if s.mode != "dense"
    ]
    return summary


def run_speedup(steps: Sequence[Step], pruner: pruning.FastStarPruner, model: flops.FlopModel) -> float:
    """FLOP-model speedup of the run the pruner recorded; 1.0 when it covers fewer steps than planned."""
    config = pruner.config
    restore_range = config.restore_block_range(model.depth) if config.method == "restore" else (0, 0)
    # Teacher-forced steps are recorded when they finish, after later planned steps, so the
    # entries are put back in step order before they are matched with the schedule.
    ordered = pruning.PruningStats(sorted(pruner.stats.steps, key=lambda entry: entry.step))
    work = ordered.work(model.depth, restore_range)
    if len(work) != len(steps):
        # NOTE: the pruner records one entry per step, so a count that differs means a run
        # that ended early. The FLOP model needs every step.
        logger.warning("pruning statistics cover %d of %d steps; no speedup estimate", len(work), len(steps))
        return 1.0
    return flops.flop_speedup(model, steps, work)


def format_summary(summary: dict) -> str:
    """Format a run summary one fact per line, for logs and text displays."""
    lines = [
        f"time: {summary['seconds']:.1f} s",
        f"tokens refined: {summary['tokens_refined']:,} of {summary['tokens']:,} "
        f"({100 * summary['refined_fraction']:.1f} %)",
        f"estimated speedup (FLOP model): {summary['estimated_speedup']:.2f}x",
        f"pruning: {summary['pruning']}",
    ]
    return "\n".join(lines)
