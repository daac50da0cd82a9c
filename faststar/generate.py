"""`python -m faststar generate`: a prompt in, a video file out.

Without ``--model`` it runs the demo model that ships with the package; with ``--model``,
``--vae`` and ``--text-encoder`` it runs the released InfinityStar checkpoints. FastSTAR
pruning is on by default, and ``--pruning off`` turns it off. ``--compare-dense`` also runs
the unpruned model with the same seed and prints the PSNR between the two videos.
"""

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .flops import FlopModel, count_flops, dense_work
from .metrics import ssim, video_psnr
from .pipeline import MODEL_PRESETS, GenerationResult, GenerationSettings, generate, model_preset, plan_generation
from .pruning import PRESETS as PRUNING_PRESETS
from .pruning import FastStarPruner, preset
from .schedules import TEMPLATES
from .text_encoder import decorate_prompt
from .vae import video_to_frames
from .video_io import check_output_path, video_format, write_video

logger = logging.getLogger(__name__)

FPS = 16


@dataclass
class Models:
    """The three models of a generation and the schedule preset they were trained for."""

    transformer: object
    vae: object
    text_encoder: object
    preset: str
    decorate: bool  # the released models expect the reference's prompt decoration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="text prompt")
    parser.add_argument("--output", required=True, type=Path, help="video file to write (.mp4, .webm or .webp)")
    parser.add_argument("--seed", type=int, default=41, help="sampling seed (default 41)")
    parser.add_argument("--frames", type=int, default=None,
                        help="video frames, 16m+1 (default: the model's video length; 1 makes an image). "
                             "The demo model makes 17 frames only")
    parser.add_argument("--aspect", type=float, default=None,
                        help=f"height/width, snapped to the nearest template of {sorted(TEMPLATES)}")
    parser.add_argument("--pruning", default="balanced", choices=sorted(PRUNING_PRESETS),
                        help="FastSTAR preset (default balanced; 'off' runs the dense model)")
    parser.add_argument("--compare-dense", action="store_true",
                        help="also run without pruning and print the PSNR and SSIM between the two videos")
    parser.add_argument("--model", type=Path, default=None,
                        help="InfinityStar transformer checkpoint (folder or .safetensors); default: the demo model")
    parser.add_argument("--vae", type=Path, default=None, help="VAE checkpoint (needed with --model)")
    parser.add_argument("--text-encoder", type=Path, default=None,
                        help="Flan-T5-XL folder or .safetensors file (needed with --model)")
    parser.add_argument("--resolution", choices=sorted(MODEL_PRESETS), default=None,
                        help="schedule preset of --model when its files do not name it (720p or 480p)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda when available)")


def load_models(args) -> Models:
    """Load the demo model, or the released checkpoints named on the command line."""
    if args.model is None:
        from .demo import load_demo

        transformer, vae, text_encoder, preset_name = load_demo(device=args.device)
        return Models(transformer, vae, text_encoder, preset_name, decorate=False)

    from .checkpoints import load_transformer, load_vae
    from .text_encoder import TextEncoder

    if args.vae is None or args.text_encoder is None:
        raise ValueError("--model needs --vae and --text-encoder too")
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    transformer, info = load_transformer(args.model, dtype=dtype, device=args.device)
    resolution = args.resolution or info.resolution
    if resolution is None:
        raise ValueError(f"cannot tell whether {args.model} is the 720p or the 480p model: pass --resolution")
    vae = load_vae(args.vae, device=args.device)
    text_encoder = TextEncoder.load(args.text_encoder, device=args.device)
    return Models(transformer, vae, text_encoder, resolution, decorate=True)


def encode_prompt(models: Models, prompt: str, frames: int) -> torch.Tensor:
    if models.decorate:
        prompt = decorate_prompt(prompt, duration_seconds=max(1, round((frames - 1) / FPS)))
    return models.text_encoder.encode(prompt)


def decode_frames(vae, result: GenerationResult) -> torch.Tensor:
    """Decode the codes of a result to frames [F, H, W, 3] in 0..1."""
    with torch.inference_mode():
        video = vae.decode(result.codes.to(next(vae.parameters()).device))
    return video_to_frames(video.float().cpu())


def run_once(models: Models, text: torch.Tensor, settings: GenerationSettings, pruning: str):
    """Generate and decode once; returns frames, seconds and the pruner (None when dense)."""
    pruner = None if pruning == "off" else FastStarPruner(preset(pruning))
    started = time.perf_counter()
    result = generate(models.transformer, text, settings, pruner=pruner,
                      callback=pruner.observe if pruner else None)
    frames = decode_frames(models.vae, result)
    return frames, time.perf_counter() - started, pruner, result


def flop_speedup(models: Models, result: GenerationResult, pruner: FastStarPruner | None) -> float:
    if pruner is None:
        return 1.0
    config = models.transformer.config
    flop_model = FlopModel.from_config(config)
    steps = result.plan.steps
    depth = config.depth
    dense = count_flops(flop_model, steps, dense_work(steps, depth)).total
    pruned = count_flops(flop_model, steps, pruner.stats.work(depth, pruner.config.restore_block_range(depth))).total
    return dense / pruned


def check_device(name: str) -> None:
    """Reject a device string torch does not know or this machine lacks."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a torch device: use 'cpu' or 'cuda'") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: this machine has no CUDA GPU available to torch; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name!r} is not supported: use 'cpu' or 'cuda'")


def check_arguments(args) -> None:
    """Reject bad options before any model is loaded."""
    check_output_path(args.output)
    video_format(args.output)
    check_device(args.device)
    if args.model is None and (args.vae is not None or args.text_encoder is not None):
        raise ValueError("--vae and --text-encoder go with --model; without --model the demo model is used")
    if args.frames is not None:
        preset = args.resolution or ("demo" if args.model is None else None)
        if preset is not None:
            plan_generation(GenerationSettings(preset, args.frames, args.aspect, args.seed))


def run(args) -> int:
    check_arguments(args)
    models = load_models(args)
    frames = args.frames if args.frames is not None else max(model_preset(models.preset).video_frames)
    settings = GenerationSettings(models.preset, frames, args.aspect, args.seed)
    plan_generation(settings)
    text = encode_prompt(models, args.prompt, frames)

    video, seconds, pruner, result = run_once(models, text, settings, args.pruning)
    write_video(video, args.output, fps=FPS)
    kept = pruner.stats.kept_fraction() if pruner else 1.0
    print(f"wrote {args.output}: {video.shape[0]} frames of {video.shape[2]}x{video.shape[1]} in {seconds:.1f} s "
          f"(pruning {args.pruning}: {kept:.0%} of tokens run, FLOP-model speedup "
          f"{flop_speedup(models, result, pruner):.2f}x)")

    if args.compare_dense and args.pruning == "off":
        print("--compare-dense has nothing to compare: this run was already dense (--pruning off)")
    elif args.compare_dense:
        dense, dense_seconds, _, _ = run_once(models, text, settings, "off")
        print(f"dense run: {dense_seconds:.1f} s; speedup {dense_seconds / seconds:.2f}x; "
              f"PSNR {video_psnr(video, dense):.2f} dB, SSIM {ssim(video, dense).mean:.4f} against dense")
    return 0
