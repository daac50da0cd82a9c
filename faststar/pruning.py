"""FastSTAR: training-free spatiotemporal token pruning for the spacetime pyramid loop.

At the last scales of each video clip most tokens have converged. Before a step runs, the
pruner scores every token of the scale from the code canvas alone:

- spatial similarity is the cosine, over code channels, between this step's input and
  the previous step's input upsampled to the same grid. A high value means that the
  coarse-to-fine refinement no longer changes the token.
- temporal similarity is the cosine between each frame and the last latent frame of the
  preceding clip (or the frame before it, where frame 0 uses that last frame). A low
  value means motion.

The two dissimilarities are fused (p-norm or weighted sum), the top tokens by keep ratio
are kept (over the clip or per frame, plus an always-kept anchor grid), and the step runs
as a partial update: only kept tokens go through the blocks, head and sampler, and pruned
tokens add nothing to the canvas.

The same ``TokenPruner`` interface also runs two baselines, so that only the plan differs:
FastVAR-style cached token restoration (``method='restore'``: the blocks run on kept
tokens and pruned slots take branch outputs cached at an earlier scale) and whole-scale
skipping (``method='skip'``).

Scores, selection and plan rules are reconstructions: the FastSTAR paper (arXiv
2603.07192) describes the method in words only.
"""

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .codes import downsample_canvas
from .flops import StepWork
from .model import AttentionInputs, Block, InfinityStarTransformer
from .sampler import ScaleContext, StepRecord, TokenPlan
from .schedules import Step

logger = logging.getLogger(__name__)

METHODS = ("partial", "restore", "skip")
SCORES = ("faststar", "spatial", "temporal", "fastvar", "random")
FUSIONS = ("pnorm", "weighted")
NORMALIZATIONS = ("none", "minmax")
TEMPORAL_REFERENCES = ("previous_frame", "clip_last_frame")
KV_POLICIES = ("full", "kept")
RESTORE_MODES = ("area", "nearest", "trilinear")

# FastVAR's InfinityStar port runs blocks [4, 31) of 36 on kept tokens; other depths keep
# the same share of dense blocks at each end.
RESTORE_DENSE_HEAD_SHARE = 4 / 36
RESTORE_DENSE_TAIL_SHARE = 5 / 36


# ----------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------


def _check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"invalid {name}={value!r}: use one of {list(choices)}")


@dataclass(frozen=True)
class PruningConfig:
    """Every knob of a pruning run.

    ``prune_ratios`` are the fractions of tokens removed at the last ``len(prune_ratios)``
    scales of each pruned clip, coarsest first: (0.5, 0.5, 0.6) prunes the third-last
    scale by half and the last by 60 %. Method 'skip' needs every ratio to be 1.0. An
    empty tuple, or all ratios 0.0, runs dense.
    """

    method: str = "partial"  # 'partial' (FastSTAR), 'restore' (FastVAR-style) or 'skip'
    prune_ratios: tuple[float, ...] = (0.5, 0.5, 0.6)
    keep_last_repetition: bool = False  # run the last repetition of a repeated scale dense
    prune_image_clip: bool = False
    score: str = "faststar"  # 'faststar', 'spatial', 'temporal', 'fastvar' (distance to mean), 'random'
    fusion: str = "pnorm"  # 'pnorm': ||(d_spatial, d_temporal)||_p; 'weighted': convex sum
    fusion_p: float = 2.0  # math.inf takes the maximum
    spatial_weight: float = 0.5  # weight of d_spatial in the 'weighted' fusion
    normalize: str = "none"  # 'minmax' rescales each dissimilarity map to [0, 1] before fusing
    temporal_reference: str = "clip_last_frame"  # or 'previous_frame'
    per_frame: bool = False  # equal keep quota in every frame instead of one top-k per scale
    anchor_stride: int = 0  # keep every n-th row and column of every frame; 0 turns anchors off
    kv_policy: str = "full"  # a referenced scale's last repetition: 'full' runs it dense, 'kept' prunes it
    restore_layers: tuple[int, int] | None = None  # [start, end) blocks on kept tokens for 'restore'
    restore_mode: str = "area"  # interpolation of the cached branch outputs for 'restore'
    seed: int = 0  # generator seed of the 'random' score

    def __post_init__(self):
        object.__setattr__(self, "prune_ratios", tuple(float(r) for r in self.prune_ratios))
        if self.restore_layers is not None:
            object.__setattr__(self, "restore_layers", tuple(self.restore_layers))

        _check_choice("method", self.method, METHODS)
        _check_choice("score", self.score, SCORES)
        _check_choice("fusion", self.fusion, FUSIONS)
        _check_choice("normalize", self.normalize, NORMALIZATIONS)
        _check_choice("temporal_reference", self.temporal_reference, TEMPORAL_REFERENCES)
        _check_choice("kv_policy", self.kv_policy, KV_POLICIES)
        _check_choice("restore_mode", self.restore_mode, RESTORE_MODES)
        self._check_ratios()
        self._check_numbers()

    def _check_ratios(self) -> None:
        for ratio in self.prune_ratios:
            if self.method == "skip" and ratio != 1.0:
                raise ValueError(
                    f"invalid prune ratio {ratio} for method 'skip': a skipped scale removes every "
                    "token, so give 1.0 for each skipped scale"
                )
            if self.method != "skip" and not 0.0 <= ratio < 1.0:
                raise ValueError(
                    f"invalid prune ratio {ratio}: use a fraction in [0, 1), or method='skip' "
                    "to drop whole scales"
                )

    def _check_numbers(self) -> None:
        if not self.fusion_p > 0:
            raise ValueError(f"invalid fusion_p={self.fusion_p}: use a number > 0 or math.inf")
        if not 0.0 <= self.spatial_weight <= 1.0:
            raise ValueError(f"invalid spatial_weight={self.spatial_weight}: use a weight in [0, 1]")
        if isinstance(self.anchor_stride, bool) or not isinstance(self.anchor_stride, int) or self.anchor_stride < 0:
            raise ValueError(f"invalid anchor_stride={self.anchor_stride!r}: use an integer >= 0 (0 = no anchors)")
        if self.restore_layers is not None:
            start, end = self.restore_layers
            if not 0 <= start < end:
                raise ValueError(f"invalid restore_layers={self.restore_layers}: use [start, end) with 0 <= start < end")

    @property
    def keep_ratios(self) -> tuple[float, ...]:
        """Fractions of tokens kept at the pruned scales, coarsest first."""
        return tuple(round(1.0 - ratio, 6) for ratio in self.prune_ratios)

    @property
    def active(self) -> bool:
        """False when the plan prunes nothing, so the run is the dense run."""
        return any(ratio > 0 for ratio in self.prune_ratios)

    def replace(self, **changes) -> "PruningConfig":
        """Return a copy with some fields changed (validated like a new config)."""
        return dataclasses.replace(self, **changes)

    def restore_block_range(self, depth: int) -> tuple[int, int]:
        """Blocks [start, end) that run on kept tokens with method 'restore'."""
        if self.restore_layers is not None:
            start, end = self.restore_layers
            if end > depth:
                raise ValueError(f"restore_layers={self.restore_layers} exceeds the model's {depth} blocks")
            return start, end
        return round(depth * RESTORE_DENSE_HEAD_SHARE), depth - round(depth * RESTORE_DENSE_TAIL_SHARE)


PRESETS: dict[str, PruningConfig] = {
    "off": PruningConfig(prune_ratios=()),
    # The last three scales of each video clip: the three detail scales at 720p.
    "balanced": PruningConfig(prune_ratios=(0.5, 0.5, 0.6)),
    "fast": PruningConfig(prune_ratios=(0.6, 0.6, 0.7)),
    # The third-party InfinityStar port's default (Weepingchestnut/Lvar): the last four scales,
    # last repetition of repeated scales dense.
    "last4": PruningConfig(prune_ratios=(0.2, 0.3, 0.4, 0.7), keep_last_repetition=True),
    # Baselines in the same machinery.
    "fastvar": PruningConfig(method="restore", score="fastvar", prune_ratios=(0.5, 0.5, 0.6),
                             keep_last_repetition=True),
    "skip_last": PruningConfig(method="skip", prune_ratios=(1.0,)),
}
DEFAULT_PRESET = "balanced"


def preset(name: str, **overrides) -> PruningConfig:
    """Return a named preset, optionally with some fields changed."""
    if name not in PRESETS:
        raise ValueError(f"unknown pruning preset {name!r}: use one of {list(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


# ----------------------------------------------------------------------------------------
# Which steps are pruned, and how many tokens they keep
# ----------------------------------------------------------------------------------------


def is_image_clip(step: Step) -> bool:
    """Return True for the image clip: clip 0 of a schedule whose first clip has one latent frame."""
    return step.clip == 0 and step.canvas_thw[0] == 1


def step_prune_ratio(config: PruningConfig, step: Step, scales_per_clip: int) -> float | None:
    """Return the fraction of tokens this step removes, or None when it runs dense."""
    from_end = scales_per_clip - step.rel_si  # 1 for the clip's last scale
    if from_end > len(config.prune_ratios):
        return None
    if is_image_clip(step) and not config.prune_image_clip:
        return None
    if config.keep_last_repetition and step.repeat_times > 1 and step.last_repetition:
        return None
    if step.keep_kv and (config.kv_policy == "full" or config.method == "skip"):
        return None

    ratio = config.prune_ratios[len(config.prune_ratios) - from_end]
    return ratio if ratio > 0 else None


def anchor_mask(thw: tuple[int, int, int], stride: int) -> torch.Tensor:
    """Return the anchor grid, bool [t, h, w]: every ``stride``-th row and column, centred."""
    t, h, w = thw
    mask = torch.zeros(t, h, w, dtype=torch.bool)
    if stride <= 0:
        return mask
    rows = torch.arange(((h - 1) % stride) // 2, h, stride)
    cols = torch.arange(((w - 1) % stride) // 2, w, stride)
    mask[:, rows[:, None], cols[None, :]] = True
    return mask


def _quota(keep_ratio: float, tokens: int) -> int:
    # Rounded first, so that 0.4 * 72000 gives 28800 and not 28801.
    return max(1, math.ceil(round(keep_ratio * tokens, 6)))


def keep_count(thw: tuple[int, int, int], prune_ratio: float, per_frame: bool, anchor_stride: int) -> int:
    """Number of tokens a pruned step keeps: ceil(keep ratio x tokens), at least the anchors.

    With ``per_frame`` each frame keeps the same quota of its own tokens.
    """
    t, h, w = thw
    anchors_per_frame = int(anchor_mask((1, h, w), anchor_stride).sum())
    if per_frame:
        return t * max(_quota(1.0 - prune_ratio, h * w), anchors_per_frame)
    return max(_quota(1.0 - prune_ratio, t * h * w), t * anchors_per_frame)


def scales_per_clip(steps: Sequence[Step]) -> int:
    if not steps:
        raise ValueError("the step list is empty")
    return max(step.rel_si for step in steps) + 1


def planned_work(config: PruningConfig, steps: Sequence[Step], depth: int) -> list[StepWork]:
    """Return the per-block token counts the plan gives every step, for the FLOP model.

    The counts do not depend on the scores, so they hold for any run of this plan.
    """
    per_clip = scales_per_clip(steps)
    restore_range = config.restore_block_range(depth) if config.method == "restore" else (0, depth)
    work = []
    for step in steps:
        ratio = step_prune_ratio(config, step, per_clip)
        if ratio is None:
            work.append(StepWork.uniform(step.L, depth))
        elif config.method == "skip":
            work.append(StepWork.skipped())
        else:
            kept = keep_count(step.thw, ratio, config.per_frame, config.anchor_stride)
            start, end = restore_range
            work.append(StepWork(tuple(kept if start <= layer < end else step.L for layer in range(depth))))
    return work


# ----------------------------------------------------------------------------------------
# Token scores: computed from the code canvas before the step runs
# ----------------------------------------------------------------------------------------


def channel_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine over channels of two grids [1, C, t, h, w]; returns [t, h, w] float32."""
    return F.cosine_similarity(a.float(), b.float(), dim=1, eps=1e-8)[0]


def spatial_similarity(input_grid: torch.Tensor, previous_input_grid: torch.Tensor | None) -> torch.Tensor | None:
    """Cosine between this input and the previous step's input upsampled to this grid.

    Returns [t, h, w], or None at the first step of a clip, which has no previous input.
    """
    if previous_input_grid is None:
        return None
    thw = tuple(input_grid.shape[2:])
    previous = previous_input_grid.float()
    if tuple(previous.shape[2:]) != thw:
        previous = F.interpolate(previous, size=thw, mode="trilinear", align_corners=False)
    return channel_cosine(input_grid, previous)


def temporal_similarity(input_grid: torch.Tensor, previous_clip_canvas: torch.Tensor | None,
                        reference: str = "clip_last_frame") -> torch.Tensor | None:
    """Cosine between each frame and its temporal reference, [t, h, w].

    'previous_frame' compares frame i with frame i-1 and frame 0 with the last latent frame
    of the preceding clip; 'clip_last_frame' compares every frame with that last frame.
    Without a preceding clip frame 0 gets similarity 1 (no temporal term), and a
    one-frame clip (the image clip) returns None.
    """
    _check_choice("temporal_reference", reference, TEMPORAL_REFERENCES)
    t, h, w = input_grid.shape[2:]
    last_frame = None
    if previous_clip_canvas is not None:
        last_frame = downsample_canvas(previous_clip_canvas[:, :, -1:].float(), (1, h, w))  # [1, C, 1, h, w]

    if reference == "clip_last_frame":
        if last_frame is None:
            return None
        return channel_cosine(input_grid, last_frame.expand(-1, -1, t, -1, -1))

    if last_frame is None and t == 1:
        return None
    first_reference = input_grid[:, :, :1].float() if last_frame is None else last_frame
    references = torch.cat([first_reference, input_grid[:, :, :-1].float()], dim=2)
    similarity = channel_cosine(input_grid, references)
    if last_frame is None:
        similarity[0] = 1.0
    return similarity


def distance_to_mean(grid: torch.Tensor) -> torch.Tensor:
    """FastVAR's pivotal-token score on a grid [1, C, t, h, w]: squared distance to the mean token."""
    flat = grid[0].float().flatten(1)  # [C, N]
    distance = (flat - flat.mean(dim=1, keepdim=True)).pow(2).sum(dim=0)
    return distance.view(grid.shape[2:])


def _minmax(x: torch.Tensor) -> torch.Tensor:
    low, high = x.min(), x.max()
    return (x - low) / (high - low) if high > low else torch.zeros_like(x)


def fuse_dissimilarities(spatial: torch.Tensor | None, temporal: torch.Tensor | None,
                         config: PruningConfig) -> torch.Tensor | None:
    """Combine the dissimilarity maps (1 - cosine) into one importance map, [t, h, w].

    A missing term drops out; the result is None only when both are missing.
    """
    terms = [x.clamp(min=0) for x in (spatial, temporal) if x is not None]
    if config.normalize == "minmax":
        terms = [_minmax(x) for x in terms]
    if not terms:
        return None
    if len(terms) == 1:
        return terms[0]

    d_spatial, d_temporal = terms
    if config.fusion == "weighted":
        return config.spatial_weight * d_spatial + (1 - config.spatial_weight) * d_temporal
    if math.isinf(config.fusion_p):
        return torch.maximum(d_spatial, d_temporal)
    p = config.fusion_p
    return (d_spatial.pow(p) + d_temporal.pow(p)).pow(1 / p)


def token_importance(context: ScaleContext, config: PruningConfig) -> torch.Tensor:
    """Score every token of the step, [t, h, w] float32: higher means keep."""
    if config.score == "fastvar":
        return distance_to_mean(context.input_grid)
    if config.score == "random":
        generator = torch.Generator().manual_seed(config.seed * 100003 + context.step.step)
        return torch.rand(context.step.thw, generator=generator)

    spatial = temporal = None
    if config.score in ("faststar", "spatial"):
        similarity = spatial_similarity(context.input_grid, context.previous_input_grid)
        spatial = None if similarity is None else 1 - similarity
    if config.score in ("faststar", "temporal"):
        similarity = temporal_similarity(context.input_grid, context.previous_clip_canvas, config.temporal_reference)
        temporal = None if similarity is None else 1 - similarity

    importance = fuse_dissimilarities(spatial, temporal, config)
    if importance is None and config.score != "faststar":
        # A single-term score falls back to the other term when its own is undefined.
        fallback = config.replace(score="faststar")
        return token_importance(context, fallback)
    if importance is None:
        logger.debug("step %d has neither a spatial nor a temporal reference; all scores equal",
                     context.step.step)
        return torch.zeros(context.step.thw)
    return importance.cpu()


# ----------------------------------------------------------------------------------------
# Selection and gather/scatter
# ----------------------------------------------------------------------------------------


def select_tokens(importance: torch.Tensor, kept: int, per_frame: bool = False,
                  anchors: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the ``kept`` most important tokens of a scale, anchors first.

    ``importance`` and ``anchors`` are [t, h, w]. With ``per_frame`` every frame keeps
    kept / t tokens. Returns sorted, unique flat indices in (t, h, w) order, int64 [kept].
    """
    t = importance.shape[0]
    scores = importance.float().clone()
    if anchors is not None:
        scores[anchors] = math.inf

    if not per_frame:
        return torch.topk(scores.flatten(), kept, sorted=False).indices.sort().values

    if kept % t:
        raise ValueError(f"per-frame selection of {kept} tokens over {t} frames: the count must divide evenly")
    frame_scores = scores.view(t, -1)  # [t, h*w]
    chosen = torch.topk(frame_scores, kept // t, dim=1, sorted=False).indices
    offsets = torch.arange(t)[:, None] * frame_scores.shape[1]
    return (chosen + offsets).flatten().sort().values


def gather_tokens(x: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
    """Gather tokens [B, L, C] -> [B, K, C]; ``keep_idx`` is [K] (all rows) or [B, K] (per row)."""
    if keep_idx.dim() == 1:
        return x[:, keep_idx]
    return torch.gather(x, 1, keep_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(base: torch.Tensor, keep_idx: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Return a copy of ``base`` [B, L, C] with rows ``keep_idx`` replaced by ``src`` [B, K, C]."""
    out = base.clone()
    if keep_idx.dim() == 1:
        out[:, keep_idx] = src.to(out.dtype)
        return out
    return out.scatter(1, keep_idx.unsqueeze(-1).expand(-1, -1, base.shape[-1]), src.to(out.dtype))


def select_inputs(inputs: AttentionInputs, keep_idx: torch.Tensor) -> AttentionInputs:
    """Return the attention inputs of kept tokens; per-row indices [B, K] give RoPE rows [2, B, 1, K, D/2]."""
    if keep_idx.dim() == 1:
        return inputs.select(keep_idx)
    rope = inputs.rope[:, keep_idx].unsqueeze(2)  # broadcasts over heads in apply_rope
    return AttentionInputs(rope, inputs.cache, inputs.context, inputs.store_key)


def keep_mask(keep_idx: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
    """Return a bool [t, h, w] map of the kept positions."""
    mask = torch.zeros(thw[0] * thw[1] * thw[2], dtype=torch.bool)
    mask[keep_idx.cpu()] = True
    return mask.view(thw)


def choose_tokens(context: ScaleContext, config: PruningConfig, kept: int) -> torch.Tensor:
    """Score the step's tokens and keep ``kept`` of them, anchors included: sorted int64 [kept]."""
    importance = token_importance(context, config)
    anchors = anchor_mask(context.step.thw, config.anchor_stride) if config.anchor_stride else None
    return select_tokens(importance, kept, config.per_frame, anchors)


# ----------------------------------------------------------------------------------------
# Restoration (FastVAR-style baseline): a block processor
# ----------------------------------------------------------------------------------------


@dataclass
class _RestoreStep:
    """Block processor state for the forward of one planned step."""

    mode: str  # 'cache' (store branch outputs) or 'prune' (run kept tokens, restore the rest)
    thw: tuple[int, int, int]
    kept: int
    keep_idx: torch.Tensor | None  # shared indices; None recomputes FastVAR's score per branch
    inputs: AttentionInputs | None = None  # the forward this state belongs to, bound at block 0


class RestoreProcessor:
    """Block processor of the FastVAR-style baseline.

    At the cache scale of a clip every block in the compact range stores its attention
    and MLP branch outputs. At a pruned scale those blocks run each branch on the kept
    tokens only; the pruned slots take the cached output, interpolated to this grid. The
    other blocks, and every forward not planned as pruned, run dense.
    """

    def __init__(self, block_range: tuple[int, int], mode: str):
        self.block_range = block_range
        self.mode = mode
        self.active: _RestoreStep | None = None
        self.cache: dict[int, list[torch.Tensor]] = {}  # block -> [attention, mlp] outputs [B, C, t, h, w]

    def reset_clip(self) -> None:
        self.cache.clear()

    def __call__(self, block: Block, x: torch.Tensor, inputs: AttentionInputs, layer: int) -> torch.Tensor:
        state = self._state_for(inputs, layer)
        if state is None or not self.block_range[0] <= layer < self.block_range[1]:
            return block(x, inputs, layer)
        if state.mode == "cache":
            return self._run_caching(block, x, inputs, layer, state)
        return self._run_pruned(block, x, inputs, layer, state)

    def _state_for(self, inputs: AttentionInputs, layer: int) -> _RestoreStep | None:
        """Return the planned state if this forward is the planned step's, else None.

        The first forward after ``plan`` binds the state; any other forward (the text
        prefix, a teacher-forced step the loop did not plan) runs dense.
        """
        state = self.active
        if state is None:
            return None
        if state.inputs is None and layer == 0:
            state.inputs = inputs
        return state if state.inputs is inputs else None

    def _run_caching(self, block, x, inputs, layer, state) -> torch.Tensor:
        attention = block.attention_branch(x, inputs, layer)
        x = x + attention
        mlp = block.mlp_branch(x)
        self.cache[layer] = [_to_grid(attention, state.thw), _to_grid(mlp, state.thw)]
        return x + mlp

    def _run_pruned(self, block, x, inputs, layer, state) -> torch.Tensor:
        if layer not in self.cache:
            raise RuntimeError(
                f"block {layer} has no cached outputs: the restore baseline needs the scale before "
                "the first pruned scale of the clip to run first, dense and not teacher-forced"
            )
        cached_attention, cached_mlp = self.cache[layer]

        keep_idx = self._keep_indices(x, state)
        attention = block.attention_branch(gather_tokens(x, keep_idx), select_inputs(inputs, keep_idx), layer)
        x = x + scatter_tokens(self._restore(cached_attention, state.thw), keep_idx, attention)

        keep_idx = self._keep_indices(x, state)
        mlp = block.mlp_branch(gather_tokens(x, keep_idx))
        return x + scatter_tokens(self._restore(cached_mlp, state.thw), keep_idx, mlp)

    def _keep_indices(self, x: torch.Tensor, state: _RestoreStep) -> torch.Tensor:
        """Shared indices [K], or FastVAR's per-row distance-to-mean top-k [B, K] on x."""
        if state.keep_idx is not None:
            return state.keep_idx.to(x.device)
        distance = (x.float() - x.float().mean(dim=1, keepdim=True)).pow(2).sum(-1)  # [B, L]
        return torch.topk(distance, state.kept, dim=1, sorted=False).indices.sort(dim=1).values

    def _restore(self, cached: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
        """Interpolate a cached branch output to this grid: [B, C, t', h', w'] -> [B, L, C]."""
        if cached.shape[2] != thw[0]:
            raise RuntimeError(f"cached outputs have {cached.shape[2]} frames but the pruned scale has {thw[0]}")
        resized = F.interpolate(cached.float(), size=thw, mode=self.mode).to(cached.dtype)
        return resized.flatten(2).transpose(1, 2)


def _to_grid(tokens: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
    """Reshape tokens [B, L, C] in (t, h, w) order to a grid [B, C, t, h, w]."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *thw)


# ----------------------------------------------------------------------------------------
# Run statistics
# ----------------------------------------------------------------------------------------


@dataclass
class StepStats:
    """Pruner decision and wall-clock time of one step."""

    step: int
    si: int
    clip: int
    rel_si: int
    repeat_idx: int
    thw: tuple[int, int, int]
    tokens: int
    kept: int
    mode: str  # 'dense', 'partial', 'restore', 'skip', or 'cache' (restore's cache scale, dense)
    plan_seconds: float = 0.0  # scoring and selection
    seconds: float | None = None  # the whole step, from the loop's StepRecord
    mask: torch.Tensor | None = None  # bool [t, h, w] of kept tokens; None for dense steps and per-block scores


@dataclass
class PruningStats:
    """Per-step decisions of one run, in step order."""

    steps: list[StepStats] = field(default_factory=list)

    def kept_per_step(self) -> list[tuple[int, int, int, int]]:
        """Return (scale index, repetition, tokens, kept) of every step."""
        return [(s.si, s.repeat_idx, s.tokens, s.kept) for s in self.steps]

    def seconds_per_scale(self) -> dict[int, float]:
        """Return wall-clock seconds per scale index, repetitions summed (untimed steps count 0)."""
        totals: dict[int, float] = {}
        for s in self.steps:
            totals[s.si] = totals.get(s.si, 0.0) + (s.seconds or 0.0)
        return totals

    def kept_fraction(self) -> float:
        """Return the kept tokens over all tokens, summed over every step of the run."""
        tokens = sum(s.tokens for s in self.steps)
        return sum(s.kept for s in self.steps) / tokens if tokens else 1.0

    def work(self, depth: int, restore_range: tuple[int, int] = (0, 0)) -> list[StepWork]:
        """Return the per-block token counts of every recorded step, for ``flops.count_flops``."""
        entries = []
        for s in self.steps:
            if s.mode == "skip":
                entries.append(StepWork.skipped())
            elif s.mode == "restore":
                start, end = restore_range
                entries.append(StepWork(tuple(s.kept if start <= b < end else s.tokens for b in range(depth))))
            else:
                entries.append(StepWork.uniform(s.kept, depth))
        return entries

    def keep_map_frames(self, full_hw: tuple[int, int]) -> tuple[torch.Tensor, list[str]]:
        """Return the kept-token maps of the pruned steps as a heatmap video, float32 [N, H, W] in {0, 1}.

        Each pruned step contributes its t frames, nearest-upsampled to ``full_hw``; the
        labels name the clip, scale, repetition and frame of each output frame.
        """
        frames, labels = [], []
        for s in self.steps:
            if s.mask is None:
                continue
            resized = F.interpolate(s.mask[None].float(), size=full_hw, mode="nearest")[0]  # [t, H, W]
            frames.append(resized)
            labels += [f"clip {s.clip} scale {s.rel_si} rep {s.repeat_idx} frame {f}" for f in range(s.thw[0])]
        if not frames:
            return torch.zeros(0, *full_hw), []
        return torch.cat(frames), labels


# ----------------------------------------------------------------------------------------
# The pruner
# ----------------------------------------------------------------------------------------


class FastStarPruner:
    """Token pruner for ``PyramidLoop``: plans every step from a ``PruningConfig``.

    Pass it as the loop's ``pruner``, and ``observe`` as (or inside) the loop's
    ``callback`` to time each step. ``stats`` contains the decisions of the last run.
    """

    def __init__(self, config: PruningConfig | None = None):
        self.config = config or PRESETS[DEFAULT_PRESET]
        self.stats = PruningStats()
        self.scales_per_clip = 0
        self.depth = 0
        self.restore: RestoreProcessor | None = None
        self._saved_processor = None
        self._installed_on: InfinityStarTransformer | None = None
        self._cache_rel = -1
        self._clip = None

    # TokenPruner protocol -------------------------------------------------------------

    def begin(self, model: InfinityStarTransformer, steps: Sequence[Step]) -> None:
        """Reset the statistics and, for method 'restore', install the block processor."""
        if self._installed_on is not None:
            raise RuntimeError("this pruner is already running; create one pruner per concurrent run")
        self.stats = PruningStats()
        self.scales_per_clip = scales_per_clip(steps)
        self.depth = len(model.blocks)
        self._clip = None

        if self.config.method == "restore" and self.config.active:
            self._cache_rel = self._restore_cache_rel()
            self.restore = RestoreProcessor(self.config.restore_block_range(self.depth), self.config.restore_mode)
            self._saved_processor = model.block_processor
            model.block_processor = self.restore
        self._installed_on = model

    def plan(self, context: ScaleContext) -> TokenPlan | None:
        started = time.perf_counter()
        step = context.step
        self._enter_clip(step)
        if self.restore is not None:
            self.restore.active = None

        ratio = step_prune_ratio(self.config, step, self.scales_per_clip)
        if ratio is None:
            self._record_dense(step, started)
            return None
        if self.config.method == "skip":
            self._record(step, 0, "skip", torch.zeros(step.thw, dtype=torch.bool), started)
            return TokenPlan(skip=True)
        return self._plan_pruned(context, ratio, started)

    def end(self, model: InfinityStarTransformer) -> None:
        """Remove the block processor and free cached outputs; safe to call twice."""
        if self._installed_on is model and self.restore is not None:
            model.block_processor = self._saved_processor
        self.restore = None
        self._saved_processor = None
        self._installed_on = None

    def run_work(self) -> list[StepWork]:
        """Return the per-block token counts of the last run's steps, for ``flops.count_flops``."""
        restore_range = self.config.restore_block_range(self.depth) if self.config.method == "restore" else (0, 0)
        return self.stats.work(self.depth, restore_range)

    # Step timing ------------------------------------------------------------------------

    def observe(self, record: StepRecord) -> None:
        """Attach the step's wall-clock time from the loop's record (use as the loop callback)."""
        entry = self._entry_for(record.step)
        if entry is None:
            # Steps the loop ran without asking for a plan (teacher-forced) run dense.
            entry = self._dense_stats(record.step, 0.0)
            self.stats.steps.append(entry)
        entry.seconds = record.seconds

    # Internals ----------------------------------------------------------------------------

    def _restore_cache_rel(self) -> int:
        cache_rel = self.scales_per_clip - len(self.config.prune_ratios) - 1
        if cache_rel < 0:
            raise ValueError(
                f"method 'restore' prunes {len(self.config.prune_ratios)} of {self.scales_per_clip} scales "
                "per clip and so has no earlier scale to cache; prune fewer scales"
            )
        return cache_rel

    def _enter_clip(self, step: Step) -> None:
        if step.clip != self._clip:
            self._clip = step.clip
            if self.restore is not None:
                self.restore.reset_clip()

    def _plan_pruned(self, context: ScaleContext, ratio: float, started: float) -> TokenPlan | None:
        step, config = context.step, self.config
        kept = keep_count(step.thw, ratio, config.per_frame, config.anchor_stride)
        if kept >= step.L:
            self._record_dense(step, started)
            return None

        per_row_score = config.method == "restore" and config.score == "fastvar"
        keep_idx = None if per_row_score else self._select(context, kept)
        mask = None if keep_idx is None else keep_mask(keep_idx, step.thw)

        if config.method == "restore":
            self.restore.active = _RestoreStep("prune", step.thw, kept, keep_idx)
            self._record(step, kept, "restore", mask, started)
            return TokenPlan(keep_idx=None, partial_update=False)

        self._record(step, kept, "partial", mask, started)
        return TokenPlan(keep_idx=keep_idx.to(context.input_grid.device), partial_update=True)

    def _select(self, context: ScaleContext, kept: int) -> torch.Tensor:
        return choose_tokens(context, self.config, kept)

    def _record_dense(self, step: Step, started: float) -> None:
        is_cache = self.restore is not None and step.rel_si == self._cache_rel and self._clip_is_pruned(step)
        if is_cache:
            self.restore.active = _RestoreStep("cache", step.thw, step.L, None)
        entry = self._dense_stats(step, time.perf_counter() - started)
        entry.mode = "cache" if is_cache else "dense"
        self.stats.steps.append(entry)

    def _clip_is_pruned(self, step: Step) -> bool:
        return self.config.prune_image_clip or not is_image_clip(step)

    def _record(self, step: Step, kept: int, mode: str, mask: torch.Tensor | None, started: float) -> None:
        entry = StepStats(step.step, step.si, step.clip, step.rel_si, step.repeat_idx, step.thw, step.L, kept,
                          mode, time.perf_counter() - started, None, mask)
        self.stats.steps.append(entry)

    @staticmethod
    def _dense_stats(step: Step, seconds: float) -> StepStats:
        return StepStats(step.step, step.si, step.clip, step.rel_si, step.repeat_idx, step.thw, step.L, step.L,
                         "dense", seconds)

    def _entry_for(self, step: Step) -> StepStats | None:
        for entry in reversed(self.stats.steps):
            if entry.step == step.step:
                return entry
        return None
