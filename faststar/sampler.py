"""The spacetime pyramid loop: text prefix, then every scale of every clip, coarse to fine.

One visual step forwards the tokens of one scale (one repetition of it), reads bit logits
from the head, applies temperature and guidance, draws the bits and adds their codes to the
clip's canvas. Each clip starts from a zero canvas; the only link between clips is
attention to the cached K/V of the previous clip's last scale.

A token pruner (see ``TokenPruner``) may shrink a step to a subset of its tokens. The loop
then embeds, forwards, samples and adds codes for that subset only (partial update).
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from .codes import bits_to_codes, downsample_canvas, flatten_tokens, upsample_codes
from .guidance import apply_temperature, guide
from .model import AttentionInputs, InfinityStarTransformer, KVCache
from .rope import TEXT_MAXLEN, inverse_frequencies, rope_cos_sin, text_positions, visual_positions
from .schedules import Step

logger = logging.getLogger(__name__)

TEXT_KEY = "t0"


@dataclass(frozen=True)
class Guidance:
    """Guidance method ('apg' or 'cfg') that combines the cond and uncond rows, with the APG norm threshold."""

    method: str = "apg"
    norm_threshold: float = 0.05

    def __post_init__(self):
        if self.method not in ("apg", "cfg"):
            raise ValueError(f"guidance method {self.method!r} is unknown; use 'apg' or 'cfg'")


@dataclass(frozen=True)
class TokenPlan:
    """Token subset of one step that runs through the model.

    ``keep_idx`` lists kept token positions in (t, h, w) order, sorted and unique (None
    keeps all). With ``partial_update`` only kept tokens are embedded, forwarded, given
    logits and codes; pruned positions get a zero residual. Without it the loop forwards
    every token and a block processor decides what to compute (FastVAR-style
    restoration). ``skip`` drops the whole step: no forward, zero residual.
    """

    keep_idx: torch.Tensor | None = None
    partial_update: bool = True
    skip: bool = False


@dataclass
class ScaleContext:
    """Inputs of a pruner's decision before a step: the step and the code canvases around it."""

    step: Step
    input_grid: torch.Tensor  # [1, 64, t, h, w]: the canvas pooled to this scale, the model input
    previous_input_grid: torch.Tensor | None  # the previous step's input in this clip, its own grid
    canvas: torch.Tensor  # [1, 64, T, H, W]: the clip canvas before this step
    previous_clip_canvas: torch.Tensor | None  # [1, 64, T', H, W]: the preceding clip's final canvas


class TokenPruner(Protocol):
    """Interface of a pruning method, as the loop calls it."""

    def begin(self, model: InfinityStarTransformer, steps: Sequence[Step]) -> None:
        """Prepare for a run (for example install a block processor)."""

    def plan(self, context: ScaleContext) -> TokenPlan | None:
        """Return the plan of one step, or None to run it dense."""

    def end(self, model: InfinityStarTransformer) -> None:
        """Undo ``begin``; called after the run, also when it fails or is cancelled."""


@dataclass
class StepRecord:
    """Outputs of one visual step. Logits cover the forwarded tokens only."""

    step: Step
    input_codes: torch.Tensor  # [L, 64]
    rope_positions: torch.Tensor  # [L, 4]
    keep_idx: torch.Tensor | None  # [K] or None for all L tokens
    logits_raw: torch.Tensor | None  # [2, K, 2d]; None for a skipped step
    logits_guided: torch.Tensor | None  # [1, K, 2d]
    bits_sampled: torch.Tensor  # [1, t, h, w, d] uint8; pruned positions are 0
    bits_used: torch.Tensor  # [1, t, h, w, d] uint8; teacher-forced steps use the given bits
    teacher_forced: bool
    forwarded: bool  # False when a teacher-forced step's forward was not needed
    seconds: float
    canvas: torch.Tensor  # [1, 64, T, H, W]: the clip canvas after this step (not a copy)

    @property
    def kept(self) -> int:
        return self.step.L if self.keep_idx is None else int(self.keep_idx.numel())


StepCallback = Callable[[StepRecord], None]


@dataclass
class Condition:
    """An extra cached key set all visual steps attend to (interactive-mode conditions)."""

    key: str
    codes: torch.Tensor  # [1, 64, t, h, w]
    frames: Sequence[int]
    scale_position: int


@dataclass
class LoopResult:
    """The per-clip canvases and what each step recorded."""

    clip_canvases: list[torch.Tensor]
    records: list[StepRecord] = field(default_factory=list)

    @property
    def codes(self) -> torch.Tensor:
        """The final latent [1, 64, T_total, H, W]: the clip canvases concatenated in time."""
        return torch.cat(self.clip_canvases, dim=2)


def sample_bits(
    guided: torch.Tensor,
    generator: torch.Generator,
    num_tokens: int,
    keep_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw bit labels for a whole scale, [1, L, d] uint8, from guided logits [1, K, 2d].

    The draw always covers all L tokens with one multinomial call, so the generator
    advances exactly as in a dense run and every kept token gets the same random number
    the dense run would give it. Pruned tokens draw from a dummy 50/50 pair and are
    returned as 0.
    """
    d = guided.shape[-1] // 2
    probs = guided.reshape(1, -1, 2).softmax(-1)  # [1, K*d, 2]

    if keep_idx is not None:
        full = torch.full((1, num_tokens, d, 2), 0.5, dtype=probs.dtype, device=probs.device)
        if keep_idx.numel() > 0:
            full[:, keep_idx.to(probs.device)] = probs.view(1, keep_idx.numel(), d, 2)
        probs = full.view(1, -1, 2)

    probs = probs.to(generator.device)
    draws = torch.multinomial(probs.view(-1, 2), num_samples=1, replacement=True, generator=generator)
    bits = draws.view(1, num_tokens, d).to(torch.uint8)

    if keep_idx is not None:
        mask = torch.zeros(num_tokens, dtype=torch.bool, device=bits.device)
        mask[keep_idx.to(bits.device)] = True
        bits = bits * mask.view(1, -1, 1)
    return bits


def scatter_codes(codes: torch.Tensor, keep_idx: torch.Tensor | None, thw: tuple[int, int, int]) -> torch.Tensor:
    """Zero the codes [1, d, t, h, w] of pruned tokens, so they add nothing to the canvas."""
    if keep_idx is None:
        return codes
    mask = torch.zeros(thw[0] * thw[1] * thw[2], dtype=codes.dtype, device=codes.device)
    mask[keep_idx.to(codes.device)] = 1
    return codes * mask.view(1, 1, *thw)


class PyramidLoop:
    """Runs one generation over a list of steps; create one per run."""

    def __init__(
        self,
        model: InfinityStarTransformer,
        steps: Sequence[Step],
        full_hw: tuple[int, int],
        guidance: Guidance,
        generator: torch.Generator,
        teacher_bits: Sequence[torch.Tensor | None] | None = None,
        pruner: TokenPruner | None = None,
        callback: StepCallback | None = None,
        conditions: Sequence[Condition] = (),
        skip_unneeded_forwards: bool = True,
        canvas_dtype: torch.dtype = torch.float32,
        keep_records: bool = False,
    ):
        self.model = model
        self.steps = list(steps)
        self.full_hw = full_hw
        self.guidance = guidance
        self.generator = generator
        self.teacher_bits = teacher_bits
        self.pruner = pruner
        self.callback = callback
        self.conditions = list(conditions)
        self.skip_unneeded_forwards = skip_unneeded_forwards
        self.canvas_dtype = canvas_dtype
        self.keep_records = keep_records

        self.device = model.word_embed.weight.device
        self.cache = KVCache(model.config.depth)
        self.inv_freq = inverse_frequencies(model.config.head_dim, model.config.rope_theta)

        # Scale index -> the last scale index that attends to its cached K/V.
        self.last_reader: dict[int, int] = {}
        for step in self.steps:
            for ref in step.ref_sids:
                self.last_reader[ref] = max(self.last_reader.get(ref, -1), step.si)

        if teacher_bits is not None and len(teacher_bits) != len(self.steps):
            raise ValueError(f"{len(teacher_bits)} teacher-forced bit tensors given for {len(self.steps)} steps")

    def rope(self, positions: torch.Tensor) -> torch.Tensor:
        return rope_cos_sin(positions, self.inv_freq).to(self.device)

    def run_prefix(self, text_features: torch.Tensor, negative: torch.Tensor | None = None) -> None:
        """Forward the text tokens once; their K/V are cached under ``"t0"``."""
        prefix = self.model.embed_text(text_features.to(self.device), negative)
        inputs = AttentionInputs(self.rope(text_positions(prefix.shape[1])), self.cache, (), TEXT_KEY)
        self.model.forward_blocks(prefix, inputs)

    def run_condition(self, condition: Condition) -> None:
        """Forward condition codes once; they attend only to themselves and are cached."""
        codes = flatten_tokens(condition.codes.to(self.device))
        thw = tuple(condition.codes.shape[2:])
        positions = visual_positions(thw, self.full_hw, condition.frames, condition.scale_position)
        inputs = AttentionInputs(self.rope(positions), self.cache, (), condition.key)
        self.model.forward_blocks(self.model.embed_codes(codes), inputs)

    def run(self, text_features: torch.Tensor, negative: torch.Tensor | None = None) -> LoopResult:
        """Run the prefix, the conditions and every step; the pruner is always ended."""
        if self.pruner is not None:
            self.pruner.begin(self.model, self.steps)
        try:
            with torch.inference_mode():
                self.run_prefix(text_features, negative)
                for condition in self.conditions:
                    self.run_condition(condition)
                return self.run_steps()
        finally:
            if self.pruner is not None:
                self.pruner.end(self.model)
            self.cache.clear()

    def run_steps(self) -> LoopResult:
        result = LoopResult(clip_canvases=[])
        canvas = previous_clip_canvas = previous_input = None

        for index, step in enumerate(self.steps):
            if step.first_in_clip:
                previous_clip_canvas = canvas
                canvas = torch.zeros(1, 64, *step.canvas_thw, dtype=self.canvas_dtype, device=self.device)
                result.clip_canvases.append(canvas)
                previous_input = None

            input_grid = downsample_canvas(canvas, step.thw)
            context = ScaleContext(step, input_grid, previous_input, canvas, previous_clip_canvas)
            record = self.run_step(index, step, context)

            self.free_cache(step)
            previous_input = input_grid
            if self.keep_records:
                result.records.append(record)
            if self.callback is not None:
                self.callback(record)
        return result

    def run_step(self, index: int, step: Step, context: ScaleContext) -> StepRecord:
        started = time.perf_counter()
        t, h, w = step.thw
        teacher = None if self.teacher_bits is None else self.teacher_bits[index]

        plan = self.plan_step(context, teacher is not None)
        keep_idx = None if plan.skip else plan.keep_idx
        input_codes = flatten_tokens(context.input_grid)  # [L, 64]
        positions = visual_positions(step.thw, self.full_hw, range(step.frame_start, step.frame_start + t),
                                     TEXT_MAXLEN + step.real_sid)

        logits_raw = guided = None
        forwarded = not plan.skip and not (teacher is not None and self.forward_is_unneeded(step))
        if forwarded:
            logits_raw = self.forward_step(step, input_codes, positions, plan)
            guided = guide(apply_temperature(logits_raw, step.tau), self.guidance.method, step.cfg,
                           self.guidance.norm_threshold)
            sample_idx = keep_idx if plan.partial_update else None
            bits = sample_bits(guided, self.generator, step.L, sample_idx)
        else:
            # Draw anyway, so later steps see the generator state of a run that forwarded.
            bits = sample_bits(torch.zeros(1, 0, 2 * step.bits, device=self.device), self.generator,
                               step.L, torch.zeros(0, dtype=torch.long))
        bits_sampled = bits.view(1, t, h, w, -1).to(self.device)

        bits_used = bits_sampled if teacher is None else teacher.to(self.device)
        codes = bits_to_codes(bits_used).to(self.canvas_dtype)
        codes = scatter_codes(codes, keep_idx if not plan.skip else torch.zeros(0, dtype=torch.long), step.thw)
        context.canvas += upsample_codes(codes, (64, *step.canvas_thw))

        return StepRecord(step, input_codes, positions, keep_idx, logits_raw, guided, bits_sampled, bits_used,
                          teacher is not None, forwarded, time.perf_counter() - started, context.canvas)

    def plan_step(self, context: ScaleContext, teacher_forced: bool) -> TokenPlan:
        """Ask the pruner for a plan; teacher-forced steps always run dense."""
        if self.pruner is None or teacher_forced:
            return TokenPlan()
        plan = self.pruner.plan(context)
        if plan is None:
            return TokenPlan()
        if plan.keep_idx is not None and plan.keep_idx.numel() == context.step.L:
            return TokenPlan(None, plan.partial_update, plan.skip)
        if plan.skip and context.step.referenced and context.step.last_repetition:
            raise ValueError(f"scale {context.step.si} is read by a later clip and cannot be skipped")
        return plan

    def forward_is_unneeded(self, step: Step) -> bool:
        """Tell whether a teacher-forced step can skip its forward: only cached K/V that a later step reads need it."""
        return self.skip_unneeded_forwards and not (step.referenced and step.last_repetition)

    def forward_step(self, step: Step, input_codes: torch.Tensor, positions: torch.Tensor,
                     plan: TokenPlan) -> torch.Tensor:
        """Forward one step's tokens and return raw logits [2, K, 2d]."""
        rope = self.rope(positions)
        codes = input_codes.to(self.device)
        if plan.keep_idx is not None and plan.partial_update:
            keep = plan.keep_idx.to(self.device)
            codes, rope = codes[keep], rope[:, keep]

        context_keys = [scale_key(si) for si in step.ref_sids] + [TEXT_KEY] + [c.key for c in self.conditions]
        store_key = scale_key(step.si) if step.referenced and step.last_repetition else None
        inputs = AttentionInputs(rope, self.cache, context_keys, store_key)

        hidden = self.model.forward_blocks(self.model.embed_codes(codes), inputs)
        return self.model.logits(hidden, semantic=step.head == "semantic")

    def free_cache(self, step: Step) -> None:
        """Drop cached scales once the last repetition of their last reader has run."""
        if not step.last_repetition:
            return
        for key in self.cache.keys():
            if isinstance(key, tuple) and self.last_reader.get(key[1], -1) <= step.si:
                self.cache.drop(key)


def scale_key(si: int) -> tuple[str, int]:
    return ("scale", si)
