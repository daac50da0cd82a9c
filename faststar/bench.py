"""``python -m faststar bench``: dense InfinityStar against FastSTAR and its baselines.

Every method runs the same steps, prompts and seeds. Runs are interleaved, with the
method order rotated each round, and the median wall clock of each method is compared
with the median dense time of the same bench. Quality is PSNR/SSIM against the dense output: on
decoded frames when a VAE is given, else on the code latent. The FLOP-model speedup of
each run, and of each plan at the released 720p 5 s and 480p 10 s shapes, comes from
``faststar.flops``.

Without ``--model`` the CPU bench uses a small random-weight transformer on a schedule
whose FLOP profile resembles the released 720p one (the last three video scales hold
about 73 % of the FLOPs). Random weights say nothing about quality; only the speed
columns carry over. ``--score-study`` adds a model-free quality proxy (see
``score_study``) for choosing the score options.
"""

import argparse
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from .codes import downsample_canvas, encode_bits, upsample_codes
from .flops import RELEASED_8B, FlopModel, count_flops, flop_speedup
from .metrics import ssim, video_psnr
from .model import InfinityStarTransformer, TransformerConfig
from .pruning import PRESETS, FastStarPruner, PruningConfig, choose_tokens, keep_count, planned_work, scales_per_clip, step_prune_ratio
from .sampler import Guidance, PyramidLoop, ScaleContext, scatter_codes
from .schedules import ScheduleSettings, Step, build_schedule, build_steps, first_full_spatial_size_scale_index, plan_schedule, scale_pack_info

logger = logging.getLogger(__name__)

# The CPU bench: a 720p-like pyramid (subset of the 0.562 template), one video clip of 6
# latent frames, the released repetition pattern (3 per scale, then 2, 1, 1).
BENCH_SIZES = ((1, 1), (2, 3), (3, 5), (4, 7), (6, 11), (9, 16), (12, 21), (18, 32))
BENCH_CLIP_FRAMES = 6
BENCH_CONFIG = TransformerConfig(embed_dim=192, depth=4, num_heads=3, num_kv_heads=1, mlp_hidden=768,
                                 text_channels=64, block_chunks=1)
BENCH_TEXT_TOKENS = 16
RELEASED_TEXT_TOKENS = 128
RELEASED_SHAPES = {"720p_5s": ("720p", 81), "480p_10s": ("480p", 161)}


@dataclass(frozen=True)
class Method:
    """A named pruning plan; 'dense' must come first."""

    name: str
    config: PruningConfig


def default_methods() -> list[Method]:
    """Dense, FastSTAR at several keep ratios and score ablations, and the two baselines."""
    default = PRESETS["balanced"]
    return [
        Method("dense", PRESETS["off"]),
        Method("faststar", default),
        Method("faststar_mild", default.replace(prune_ratios=(0.3, 0.3, 0.4))),
        Method("faststar_fast", PRESETS["fast"]),
        Method("faststar_last4", PRESETS["last4"]),
        Method("faststar_spatial", default.replace(score="spatial")),
        Method("faststar_temporal", default.replace(score="temporal")),
        Method("fastvar", PRESETS["fastvar"]),
        Method("scale_skip", PRESETS["skip_last"]),
    ]


# ----------------------------------------------------------------------------------------
# Setups: model, steps, prompts
# ----------------------------------------------------------------------------------------


@dataclass
class BenchSetup:
    """Model, steps and prompts that every method runs on."""

    description: str
    model: InfinityStarTransformer
    steps: list[Step]
    full_hw: tuple[int, int]
    guidance: Guidance
    prompts: list[tuple[torch.Tensor, int]]  # (text features [L, C_text], seed)
    flop_model: FlopModel
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None  # codes -> frames [T, H, W, 3] in [0, 1]


def bench_steps(sizes=BENCH_SIZES, clip_frames: int = BENCH_CLIP_FRAMES) -> list[Step]:
    """Steps of the CPU bench schedule: an image clip and one video clip."""
    count = len(sizes)
    detail_from = sizes[count - 3][0] * sizes[count - 3][1]
    settings = ScheduleSettings(
        pn="0.06M", image_scale_repetition=(3,) * count, video_scale_repetition=(3,) * (count - 3) + (2, 1, 1),
        semantic_scales=count - 3, detail_scale_min_tokens=detail_from, tau_image=1.0, tau_video=0.4,
        guidance="apg", guidance_scale=34, apg_norm_threshold=0.05, max_repeat_times=100,
        frames_inner_clip=clip_frames,
    )
    schedule = build_schedule(sizes, 1 + clip_frames, clip_frames)
    first_full = first_full_spatial_size_scale_index(schedule)
    context = scale_pack_info(schedule, first_full, frames_inner_clip=clip_frames)
    return build_steps(schedule, settings, first_full, context)


def random_model(config: TransformerConfig, device: str, seed: int, block_dtype: torch.dtype) -> InfinityStarTransformer:
    """Build a transformer with PyTorch's default random initialisation, in eval mode."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = InfinityStarTransformer(config)
    model.blocks.to(block_dtype)
    return model.eval().requires_grad_(False)


def random_prompts(count: int, length: int, channels: int, seed: int, device: str) -> list[tuple[torch.Tensor, int]]:
    """Stand-ins for T5 features: N(0, 0.3^2) rows, one seed per prompt."""
    prompts = []
    for index in range(count):
        generator = torch.Generator().manual_seed(seed + 1000 * index)
        features = 0.3 * torch.randn(length, channels, generator=generator)
        prompts.append((features.to(device), seed + index))
    return prompts


def cpu_setup(args) -> BenchSetup:
    model = random_model(BENCH_CONFIG, args.device, args.seed, torch.float32)
    steps = bench_steps()
    prompts = random_prompts(args.prompts, BENCH_TEXT_TOKENS, BENCH_CONFIG.text_channels, args.seed, args.device)
    flop_model = FlopModel.from_config(BENCH_CONFIG, text_tokens=BENCH_TEXT_TOKENS)
    description = (f"random-weight transformer C={BENCH_CONFIG.embed_dim} depth={BENCH_CONFIG.depth}, "
                   f"{len(steps)} steps, last scale {steps[-1].thw}")
    return BenchSetup(description, model, steps, BENCH_SIZES[-1], Guidance("apg", 0.05), prompts, flop_model)


def released_setup(args) -> BenchSetup:
    """Set up a released shape (720p 5 s or 480p 10 s) with the 8B sizes and random bf16 weights."""
    # NOTE: not yet run on a GPU; it needs about 33 GB of device memory while the weights are built.
    resolution, frames = RELEASED_SHAPES[args.shape]
    plan = plan_schedule(resolution, frames)
    model = random_model(TransformerConfig(), args.device, args.seed, torch.bfloat16)
    prompts = random_prompts(args.prompts, RELEASED_TEXT_TOKENS, model.config.text_channels, args.seed, args.device)
    flop_model = FlopModel.from_config(model.config, text_tokens=RELEASED_TEXT_TOKENS)
    guidance = Guidance(plan.settings.guidance, plan.settings.apg_norm_threshold)
    return BenchSetup(f"8B sizes, random weights, {args.shape}", model, plan.steps, plan.schedule[-1][1:],
                      guidance, prompts, flop_model)


def checkpoint_setup(args) -> BenchSetup:
    """Set up a trained checkpoint (``--model``) on its preset's schedule, decoded with ``--vae`` if given."""
    from .checkpoints import load_transformer, load_vae
    from .pipeline import GenerationSettings, plan_generation
    from .vae.postprocess import video_to_frames

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model, info = load_transformer(args.model, dtype=dtype, device=args.device)
    preset_name = args.preset or info.resolution
    if preset_name is None:
        raise ValueError(f"cannot tell which schedule {args.model} was trained for: pass --preset 720p, 480p or tiny")
    plan = plan_generation(GenerationSettings(preset=preset_name, video_frames=args.frames))
    # NOTE: prompts are random text features; a text encoder is not wired into the bench yet.
    prompts = random_prompts(args.prompts, BENCH_TEXT_TOKENS, model.config.text_channels, args.seed, args.device)

    decode = None
    if args.vae:
        vae = load_vae(args.vae, device=args.device)

        def decode(codes: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return video_to_frames(vae.decode(codes.float()))

    flop_model = FlopModel.from_config(model.config, text_tokens=BENCH_TEXT_TOKENS)
    guidance = Guidance(plan.settings.guidance, plan.settings.apg_norm_threshold)
    return BenchSetup(f"checkpoint {args.model} ({preset_name}, {args.frames} frames)", model, plan.steps,
                      plan.schedule[-1][1:], guidance, prompts, flop_model, decode)


# ----------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------


@dataclass
class RunResult:
    codes: torch.Tensor  # [1, 64, T, H, W]
    seconds: float
    pruner: FastStarPruner


@dataclass
class MethodRecord:
    """One row of the bench table."""

    method: str
    keep_ratios: list[float]
    measured_speedup: float
    flop_speedup: float
    psnr: float | None
    ssim: float | None
    seconds: float  # median wall clock of one generation
    kept_fraction: float
    times: list[float] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "method": self.method,
            "keep_ratios": self.keep_ratios,
            "measured_speedup": round(self.measured_speedup, 4),
            "flop_speedup": round(self.flop_speedup, 4),
            "psnr": None if self.psnr is None or math.isinf(self.psnr) else round(self.psnr, 3),
            "ssim": None if self.ssim is None else round(self.ssim, 5),
            "seconds": round(self.seconds, 4),
            "kept_fraction": round(self.kept_fraction, 4),
        }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_method(setup: BenchSetup, method: Method, prompt: tuple[torch.Tensor, int]) -> RunResult:
    """Generate once with ``method``'s plan and time the whole loop."""
    text, seed = prompt
    device = setup.model.word_embed.weight.device
    pruner = FastStarPruner(method.config)
    generator = torch.Generator(device=device).manual_seed(seed)
    loop = PyramidLoop(setup.model, setup.steps, setup.full_hw, setup.guidance, generator,
                       pruner=pruner, callback=pruner.observe)

    _synchronize(device)
    started = time.perf_counter()
    result = loop.run(text)
    _synchronize(device)
    return RunResult(result.codes, time.perf_counter() - started, pruner)


def latent_frames_of(codes: torch.Tensor) -> torch.Tensor:
    """Code latent [1, 64, T, H, W] as a 64-channel video [T, H, W, 64]."""
    return codes[0].float().permute(1, 2, 3, 0).cpu()


def compare(codes: torch.Tensor, dense_codes: torch.Tensor, decode) -> tuple[float, float]:
    """Video PSNR (pooled over frames) and mean SSIM of a run against the dense run.

    Frames are compared when ``decode`` is given, else the code latent.
    """
    if decode is not None:
        video, reference = decode(codes).cpu(), decode(dense_codes).cpu()
        return video_psnr(video, reference), ssim(video, reference).mean

    video, reference = latent_frames_of(codes), latent_frames_of(dense_codes)
    data_range = float(reference.max() - reference.min()) or 1.0
    return video_psnr(video, reference, data_range), ssim(video, reference, data_range).mean


def measure(setup: BenchSetup, methods: Sequence[Method], repeats: int) -> list[MethodRecord]:
    """Time every method ``repeats`` times per prompt, interleaved, and score it against dense."""
    if methods[0].name != "dense":
        raise ValueError("the first method must be 'dense': the others are measured against it")
    times = {m.name: [] for m in methods}
    first: dict[tuple[str, int], RunResult] = {}

    logger.info("warm-up run")
    run_method(setup, methods[0], setup.prompts[0])
    for round_index in range(repeats):
        order = list(methods[round_index % len(methods):]) + list(methods[:round_index % len(methods)])
        for prompt_index, prompt in enumerate(setup.prompts):
            for method in order:
                result = run_method(setup, method, prompt)
                times[method.name].append(result.seconds)
                first.setdefault((method.name, prompt_index), result)
                logger.info("round %d prompt %d %-18s %.3f s", round_index, prompt_index, method.name, result.seconds)

    return [_record(setup, method, times, first) for method in methods]


def _record(setup: BenchSetup, method: Method, times: dict, first: dict) -> MethodRecord:
    dense_median = statistics.median(times["dense"])
    median = statistics.median(times[method.name])
    psnrs, ssims, flops_ratios, kept = [], [], [], []
    for prompt_index in range(len(setup.prompts)):
        result = first[(method.name, prompt_index)]
        dense = first[("dense", prompt_index)]
        value_psnr, value_ssim = compare(result.codes, dense.codes, setup.decode)
        psnrs.append(value_psnr)
        ssims.append(value_ssim)
        flops_ratios.append(count_flops(setup.flop_model, setup.steps).total
                            / count_flops(setup.flop_model, setup.steps, result.pruner.run_work()).total)
        kept.append(result.pruner.stats.kept_fraction())

    return MethodRecord(method.name, list(method.config.keep_ratios), dense_median / median,
                        statistics.mean(flops_ratios), statistics.mean(psnrs), statistics.mean(ssims),
                        median, statistics.mean(kept), times[method.name])


def released_speedups(methods: Sequence[Method]) -> dict[str, dict[str, float]]:
    """FLOP-model speedup of each plan at the released shapes with the 8B sizes."""
    table = {}
    for shape, (resolution, frames) in RELEASED_SHAPES.items():
        steps = plan_schedule(resolution, frames).steps
        table[shape] = {
            m.name: round(flop_speedup(RELEASED_8B, steps, planned_work(m.config, steps, RELEASED_8B.depth)), 4)
            for m in methods
        }
    return table


# ----------------------------------------------------------------------------------------
# Score study: a model-free quality proxy
# ----------------------------------------------------------------------------------------


def synthetic_latent(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Build a structured 64-channel latent [1, 64, frames, H, W] with moving objects.

    The static background mixes smooth waves with a textured patch. A square moves right
    and a disc moves down-left, each with its own code direction and some texture.
    """
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(height, 1)
    xs = torch.linspace(0, 1, width).view(1, width)

    waves = torch.stack([torch.sin(2 * math.pi * (f * xs + g * ys)) for f, g in ((1, 0), (0, 1), (1, 1), (2, 1))])
    texture = torch.randn(4, height, width, generator=generator) * ((xs > 0.6) & (ys > 0.5))
    background = torch.einsum("ck,khw->chw", torch.randn(64, 8, generator=generator), torch.cat([waves, texture]))

    square_code, disc_code = torch.randn(2, 64, generator=generator) * 2
    object_texture = torch.randn(64, height, width, generator=generator) * 0.5
    latent = background.unsqueeze(1).repeat(1, frames, 1, 1)
    for f in range(frames):
        progress = f / max(frames - 1, 1)
        square = ((xs - (0.1 + 0.5 * progress)).abs() < 0.1) & ((ys - 0.3).abs() < 0.15)
        disc = (xs - (0.8 - 0.4 * progress)) ** 2 + (ys - (0.2 + 0.5 * progress)) ** 2 < 0.02
        latent[:, f] = torch.where(square, square_code.view(64, 1, 1) + object_texture, latent[:, f])
        latent[:, f] = torch.where(disc, disc_code.view(64, 1, 1) + object_texture.flip(1), latent[:, f])
    return latent[None] / latent.std()


def reconstruct(target: torch.Tensor, steps: Sequence[Step], config: PruningConfig | None) -> torch.Tensor:
    """Rebuild ``target`` [1, 64, T, H, W] from teacher-forced bits under a pruning plan.

    Each step encodes the residual (target minus canvas) into bits, exactly as
    image-to-video does. A pruned step adds the codes of its kept tokens only, and a
    skipped step adds none. With a perfect model this is what the partial update produces.
    """
    per_clip = scales_per_clip(steps)
    canvases: list[torch.Tensor] = []
    previous_input = None
    for step in steps:
        if step.first_in_clip:
            canvases.append(torch.zeros(1, 64, *step.canvas_thw))
            previous_input = None
        canvas = canvases[-1]
        input_grid = downsample_canvas(canvas, step.thw)

        clip_target = target[:, :, step.frame_start:step.frame_end]
        _, codes = encode_bits(clip_target - canvas, step.thw, step.bits)
        keep_idx = _oracle_keep(step, config, per_clip, input_grid, previous_input, canvas, canvases)
        codes = scatter_codes(codes, keep_idx, step.thw)
        canvas += upsample_codes(codes, (64, *step.canvas_thw))
        previous_input = input_grid
    return torch.cat(canvases, dim=2)


def _oracle_keep(step, config, per_clip, input_grid, previous_input, canvas, canvases) -> torch.Tensor | None:
    if config is None:
        return None
    ratio = step_prune_ratio(config, step, per_clip)
    if ratio is None:
        return None
    if config.method == "skip":
        return torch.zeros(0, dtype=torch.long)
    previous_clip = canvases[-2] if len(canvases) > 1 else None
    context = ScaleContext(step, input_grid, previous_input, canvas, previous_clip)
    return choose_tokens(context, config, keep_count(step.thw, ratio, config.per_frame, config.anchor_stride))


def score_variants() -> list[Method]:
    """Score options compared by the proxy, all at the default keep ratios."""
    base = PRESETS["balanced"]
    return [
        Method("dense", PRESETS["off"]),
        Method("p=2 (default)", base),
        Method("p=inf (max)", base.replace(fusion_p=math.inf)),
        Method("p=1", base.replace(fusion_p=1.0)),
        Method("weighted 0.5, minmax", base.replace(fusion="weighted", normalize="minmax")),
        Method("p=2, minmax", base.replace(normalize="minmax")),
        Method("temporal vs previous frame", base.replace(temporal_reference="previous_frame")),
        Method("per-frame top-k", base.replace(per_frame=True)),
        Method("anchors stride 4", base.replace(anchor_stride=4)),
        Method("anchors stride 8", base.replace(anchor_stride=8)),
        Method("spatial only", base.replace(score="spatial")),
        Method("temporal only", base.replace(score="temporal")),
        Method("distance to mean", base.replace(score="fastvar")),
        Method("random", base.replace(score="random")),
        Method("scale skip", PRESETS["skip_last"]),
    ]


def score_study(shape: str = "720p_5s", seeds: Sequence[int] = (0, 1)) -> list[dict]:
    """Score each variant by PSNR/SSIM of its teacher-forced canvas against the target latent.

    The canvas built from ground-truth bits is what a perfect model would produce, so the
    drop from the dense row shows how much each plan loses by its choice of tokens. PSNR
    against the dense canvas would not rank the scores: every code vector has the same
    norm, so any pruned token moves the canvas by the same amount.
    """
    resolution, frames = RELEASED_SHAPES[shape]
    steps = plan_schedule(resolution, frames).steps
    total_frames = steps[-1].frame_end
    full_h, full_w = steps[-1].canvas_thw[1:]
    rows = []
    for seed in seeds:
        target = synthetic_latent(total_frames, full_h, full_w, seed)
        reference = latent_frames_of(target)
        data_range = float(reference.max() - reference.min())
        for method in score_variants():
            config = None if not method.config.active else method.config
            canvas = latent_frames_of(reconstruct(target, steps, config))
            rows.append({"variant": method.name, "seed": seed,
                         "psnr": video_psnr(canvas, reference, data_range),
                         "ssim": ssim(canvas, reference, data_range).mean})
    return _average_rows(rows)


def _average_rows(rows: list[dict]) -> list[dict]:
    names = list(dict.fromkeys(row["variant"] for row in rows))
    averaged = []
    for name in names:
        chosen = [row for row in rows if row["variant"] == name]
        averaged.append({"variant": name, "psnr": round(statistics.mean(r["psnr"] for r in chosen), 3),
                         "ssim": round(statistics.mean(r["ssim"] for r in chosen), 5)})
    return averaged


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------


def format_table(records: Sequence[MethodRecord]) -> str:
    header = f"{'method':<18} {'keep ratios':<22} {'measured':>9} {'FLOP':>7} {'PSNR':>8} {'SSIM':>7} {'kept':>6} {'median s':>9}"
    lines = [header, "-" * len(header)]
    for r in records:
        keep = "/".join(f"{k:g}" for k in r.keep_ratios) or "-"
        value_psnr = "inf" if r.psnr is None or math.isinf(r.psnr) else f"{r.psnr:.2f}"
        lines.append(f"{r.method:<18} {keep:<22} {r.measured_speedup:>8.2f}x {r.flop_speedup:>6.2f}x "
                     f"{value_psnr:>8} {r.ssim:>7.4f} {r.kept_fraction:>6.3f} {r.seconds:>9.3f}")
    return "\n".join(lines)


def format_released(table: dict[str, dict[str, float]]) -> str:
    shapes = list(table)
    lines = [f"{'method':<18} " + " ".join(f"{shape:>10}" for shape in shapes)]
    for method in table[shapes[0]]:
        lines.append(f"{method:<18} " + " ".join(f"{table[shape][method]:>9.2f}x" for shape in shapes))
    return "\n".join(lines)


def format_study(rows: Sequence[dict]) -> str:
    lines = [f"{'score variant':<30} {'PSNR':>8} {'SSIM':>8}"]
    lines += [f"{row['variant']:<30} {row['psnr']:>8.2f} {row['ssim']:>8.4f}" for row in rows]
    return "\n".join(lines)


def svg_plot(records: Sequence[MethodRecord]) -> str:
    """Speedup (measured: filled, FLOP model: hollow) against PSNR vs dense, as SVG text."""
    points = [r for r in records if r.psnr is not None and math.isfinite(r.psnr)]
    width, height, margin = 640, 420, 60
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    x_low, x_high = min(p.psnr for p in points) - 1, max(p.psnr for p in points) + 1
    y_high = max(max(p.measured_speedup, p.flop_speedup) for p in points) * 1.1

    def position(value_x: float, value_y: float) -> tuple[float, float]:
        px = margin + (value_x - x_low) / (x_high - x_low) * (width - 2 * margin)
        py = height - margin - value_y / y_high * (height - 2 * margin)
        return px, py

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="black"/>',
             f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>',
             f'<text x="{width / 2}" y="{height - 20}" text-anchor="middle">PSNR vs dense (dB)</text>',
             f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">speedup over dense</text>']
    _, one_y = position(x_low, 1.0)
    parts.append(f'<line x1="{margin}" y1="{one_y:.1f}" x2="{width - margin}" y2="{one_y:.1f}" stroke="gray" stroke-dasharray="4"/>')
    for tick in range(int(math.ceil(x_low)), int(x_high) + 1):
        tick_x, _ = position(tick, 0)
        parts.append(f'<text x="{tick_x:.1f}" y="{height - margin + 15}" text-anchor="middle">{tick}</text>')
    for tick in range(0, int(y_high) + 1):
        _, tick_y = position(x_low, tick)
        parts.append(f'<text x="{margin - 8}" y="{tick_y + 4:.1f}" text-anchor="end">{tick}x</text>')
    for p in points:
        mx, my = position(p.psnr, p.measured_speedup)
        fx, fy = position(p.psnr, p.flop_speedup)
        parts.append(f'<circle cx="{mx:.1f}" cy="{my:.1f}" r="4" fill="steelblue"/>')
        parts.append(f'<circle cx="{fx:.1f}" cy="{fy:.1f}" r="4" fill="none" stroke="darkorange"/>')
        parts.append(f'<text x="{mx + 6:.1f}" y="{my - 6:.1f}">{p.method}</text>')
    parts.append(f'<text x="{width - margin}" y="{margin - 20}" text-anchor="end">filled: measured, hollow: FLOP model</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def build_report(setup: BenchSetup, records: Sequence[MethodRecord], released: dict, repeats: int,
                 device: str) -> dict:
    """Build the JSON document of ``--json``: records, released shapes and the setup."""
    return {
        "records": [r.as_json() for r in records],
        "released_shapes": released,
        "setup": {"description": setup.description, "repeats": repeats, "prompts": len(setup.prompts),
                  "threads": torch.get_num_threads(), "device": device,
                  "quality_space": "frames" if setup.decode else "code latent"},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device to run on (default: cpu)")
    parser.add_argument("--model", help="transformer checkpoint; default: random weights")
    parser.add_argument("--vae", help="VAE checkpoint: compare decoded frames instead of the code latent")
    parser.add_argument("--preset", choices=("720p", "480p", "tiny"), help="schedule of --model (default: from the checkpoint)")
    parser.add_argument("--frames", type=int, default=81, help="video frames for --model (default: 81)")
    parser.add_argument("--shape", choices=("bench", *RELEASED_SHAPES),
                        help="schedule for random weights: the small CPU bench, or a released shape with 8B sizes "
                             "(default: bench on cpu, 720p_5s on cuda)")
    parser.add_argument("--methods", help="comma-separated method names to run (default: all); dense always runs")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and prompt (default: 3)")
    parser.add_argument("--prompts", type=int, default=1, help="prompts (random text features, one seed each; default: 1)")
    parser.add_argument("--seed", type=int, default=41, help="seed of weights, prompts and sampling (default: 41)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", dest="json_path", help="write the table as JSON to this file")
    parser.add_argument("--plot", help="write the speed-versus-PSNR plot (SVG) to this file")
    parser.add_argument("--score-study", action="store_true",
                        help="also run the model-free score study on the 720p 5 s shape (several minutes)")


def select_methods(names: str | None) -> list[Method]:
    methods = default_methods()
    if not names:
        return methods
    requested = [name.strip() for name in names.split(",") if name.strip()]
    known = {m.name: m for m in methods}
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: choose from {list(known)}")
    return [known["dense"]] + [known[name] for name in requested if name != "dense"]


def build_setup(args) -> BenchSetup:
    if args.model:
        return checkpoint_setup(args)
    shape = args.shape or ("720p_5s" if args.device.startswith("cuda") else "bench")
    if shape == "bench":
        return cpu_setup(args)
    args.shape = shape
    return released_setup(args)


def run(args) -> int:
    if args.repeats < 1 or args.prompts < 1:
        raise ValueError(f"--repeats {args.repeats} and --prompts {args.prompts} must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    methods = select_methods(args.methods)
    setup = build_setup(args)
    print(f"setup: {setup.description}; torch threads {torch.get_num_threads()}, device {args.device}")

    records = measure(setup, methods, args.repeats)
    print(format_table(records))
    released = released_speedups(methods)
    print("\nFLOP-model speedup at the released shapes (8B sizes):")
    print(format_released(released))

    report = build_report(setup, records, released, args.repeats, args.device)
    if args.score_study:
        rows = score_study()
        print("\nScore study (teacher-forced synthetic latent, 720p 5 s shape, PSNR/SSIM vs the target latent):")
        print(format_study(rows))
        report["score_study"] = rows

    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        Path(args.plot).write_text(svg_plot(records) + "\n")
    print(f"\nbench finished in {time.perf_counter() - started:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faststar.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
