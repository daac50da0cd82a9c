"""``python -m faststar evaluate-demo``: quality of the demo model on the held-out captions.

Reports, with the targets the demo model is trained for:

- VAE reconstruction PSNR of held-out clips through the multi-scale BSQ bottleneck
  (target at least 28 dB);
- the share of (caption, seed) pairs whose generated shape has the caption's colour
  (target 80 %) and motion (target 70 %), judged by ``tracker`` on the decoded frames;
- FastSTAR at its default plan against dense generation with the same seed: PSNR and SSIM
  of the decoded videos and the measured speedup of the transformer loop.

The held-out captions are the (colour, shape, motion) triples never seen in training. The
n-th triple takes the n-th background variant, cycling through none, black, gray and gradient.
"""

import argparse
import json
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..metrics import ssim
from ..pruning import DEFAULT_PRESET, SCORES, PruningConfig, preset
from ..video_io import check_output_path
from .data import BACKGROUNDS, HELD_OUT_TRIPLES, Caption, make_samples
from .sampling import generate_video
from .tracker import judge_colour, judge_motion, track
from .weights import DemoModel, load_demo

logger = logging.getLogger(__name__)

TARGET_VAE_PSNR = 28.0
TARGET_COLOUR = 0.8
TARGET_MOTION = 0.7
VAE_CLIP_SEED = 99


def held_out_captions() -> list[Caption]:
    """Return one caption per held-out triple, cycling through the background variants."""
    variants = (None, *BACKGROUNDS)
    triples = sorted(HELD_OUT_TRIPLES)
    return [Caption(*triple, variants[index % len(variants)]) for index, triple in enumerate(triples)]


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"invalid --seeds {text!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise ValueError("--seeds is empty: give at least one seed, e.g. 0")
    return seeds


@dataclass
class PairResult:
    """Measurements of one (caption, seed) pair."""

    caption: str
    seed: int
    colour: str | None
    motion: str | None
    colour_ok: bool
    motion_ok: bool
    dense_seconds: float
    pruned_seconds: float | None = None
    kept_fraction: float | None = None
    psnr_vs_dense: float | None = None
    ssim_vs_dense: float | None = None
    pruned_colour_ok: bool | None = None  # colour_ok and motion_ok of the pruned video
    pruned_motion_ok: bool | None = None


@dataclass
class Report:
    """Every number the evaluation measured."""

    vae_psnr: float
    vae_clips: int
    pairs: list[PairResult] = field(default_factory=list)
    pruning: str | None = DEFAULT_PRESET
    seconds: float = 0.0

    def measured(self, attribute: str) -> list:
        """Return ``attribute`` of every pair that measured it (not None)."""
        return [getattr(pair, attribute) for pair in self.pairs if getattr(pair, attribute) is not None]

    def share(self, attribute: str) -> float:
        """Return the fraction of the pairs measured for ``attribute`` where it is true."""
        values = self.measured(attribute)
        return sum(values) / len(values)

    def mean(self, attribute: str) -> float | None:
        finite = [value for value in self.measured(attribute) if value != float("inf")]
        return statistics.fmean(finite) if finite else None

    def speedup(self) -> float | None:
        pruned = self.mean("pruned_seconds")
        return None if pruned is None else self.mean("dense_seconds") / pruned


def to_frames(video: torch.Tensor) -> torch.Tensor:
    """[3, F, H, W] in [-1, 1] -> [F, H, W, 3] in [0, 1], the layout of ``metrics``."""
    return ((video + 1) / 2).permute(1, 2, 3, 0)


def video_psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR (dB) over all pixels of two videos in [-1, 1] (peak 1 in [0, 1] units); inf when equal.

    One MSE over the whole video, so frames that FastSTAR leaves unchanged (the image clip)
    do not make the mean infinite as a per-frame average would.
    """
    mse = ((video - reference) / 2).double().pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


@torch.no_grad()
def vae_psnr(demo: DemoModel, clips: int) -> float:
    """Mean PSNR (dB) of held-out clips encoded, quantised along the demo schedule and decoded."""
    from .quantize import demo_steps, quantize_latent

    scores = []
    for sample in make_samples(clips, VAE_CLIP_SEED, held_out=True):
        video = sample.video()[None]
        latent = demo.vae.encode_raw_features(video)
        codes = quantize_latent(latent, demo_steps(latent.shape[2])).codes
        recon = demo.vae.decode(codes)[0].clamp(-1, 1)
        scores.append(video_psnr(recon, video[0]))
    return statistics.fmean(scores)


def judge(video: torch.Tensor) -> tuple[str | None, str | None]:
    """Track the shape of a video [3, F, H, W] and return its judged colour and motion."""
    found = track(video)
    return judge_colour(found), judge_motion(found)


def evaluate_pair(demo: DemoModel, caption: Caption, seed: int, pruning: "PruningConfig | str | None") -> PairResult:
    """Generate dense (and pruned), judge both videos against the caption and compare them."""
    dense = generate_video(demo, caption.text(), seed, pruning=None)
    colour, motion = judge(dense.video)
    result = PairResult(caption.text(), seed, colour, motion, colour == caption.colour, motion == caption.motion,
                        dense.transformer_seconds)
    if pruning is None:
        return result

    pruned = generate_video(demo, caption.text(), seed, pruning=pruning)
    result.pruned_seconds = pruned.transformer_seconds
    result.kept_fraction = pruned.kept_fraction
    result.psnr_vs_dense = video_psnr(pruned.video, dense.video)
    result.ssim_vs_dense = ssim(to_frames(pruned.video), to_frames(dense.video)).mean

    pruned_colour, pruned_motion = judge(pruned.video)
    result.pruned_colour_ok = pruned_colour == caption.colour
    result.pruned_motion_ok = pruned_motion == caption.motion
    return result


def evaluate(demo: DemoModel, seeds: list[int], vae_clips: int, pruning: "PruningConfig | str | None",
             limit: int | None = None, pruning_label: str | None = None) -> Report:
    """Measure the VAE, then every held-out caption x seed, dense and with ``pruning``.

    ``pruning_label`` names the plan in the report (default: the preset name, or "custom plan").
    """
    started = time.perf_counter()
    if pruning_label is None and pruning is not None:
        pruning_label = pruning if isinstance(pruning, str) else "custom plan"
    report = Report(vae_psnr(demo, vae_clips), vae_clips, pruning=pruning_label)
    captions = held_out_captions()[:limit]
    for caption in captions:
        for seed in seeds:
            pair = evaluate_pair(demo, caption, seed, pruning)
            logger.info("%s seed %d: colour %s, motion %s", pair.caption, seed, pair.colour, pair.motion)
            report.pairs.append(pair)
    report.seconds = time.perf_counter() - started
    return report


def _verdict(value: float, target: float) -> str:
    return "meets the target" if value >= target else "below the target"


def _number(value: float | None, spec: str, unit: str = "") -> str:
    """Format a mean, or state that every pair gave identical videos (infinite PSNR)."""
    return "identical videos" if value is None else f"{value:{spec}}{unit}"


def format_report(report: Report) -> str:
    """Format the report as lines of text, each measured number next to its target."""
    colour, motion = report.share("colour_ok"), report.share("motion_ok")
    lines = [
        f"held-out captions: {len(report.pairs)} (caption, seed) pairs",
        f"VAE reconstruction PSNR (held-out clips, BSQ bottleneck, {report.vae_clips} clips): "
        f"{report.vae_psnr:.2f} dB, target {TARGET_VAE_PSNR:.0f} dB: {_verdict(report.vae_psnr, TARGET_VAE_PSNR)}",
        f"colour matches caption: {colour:.0%}, target {TARGET_COLOUR:.0%}: {_verdict(colour, TARGET_COLOUR)}",
        f"motion matches caption: {motion:.0%}, target {TARGET_MOTION:.0%}: {_verdict(motion, TARGET_MOTION)}",
    ]
    if report.pruning is not None:
        lines += [
            f"FastSTAR ({report.pruning}) against dense: PSNR {_number(report.mean('psnr_vs_dense'), '.2f', ' dB')}, "
            f"SSIM {report.mean('ssim_vs_dense'):.4f}, tokens forwarded {report.mean('kept_fraction'):.1%}",
            f"with FastSTAR: colour matches caption {report.share('pruned_colour_ok'):.0%}, "
            f"motion {report.share('pruned_motion_ok'):.0%}",
            f"transformer loop: dense {report.mean('dense_seconds'):.3f} s, FastSTAR "
            f"{report.mean('pruned_seconds'):.3f} s, speedup {report.speedup():.2f}x",
        ]
    lines.append(f"evaluation took {report.seconds:.0f} s")
    return "\n".join(lines)


def pruning_plan(name: str, score: str | None) -> tuple[PruningConfig | None, str | None]:
    """Return the plan of preset ``name`` ('none': dense only) with ``score`` if given, and its label."""
    if name == "none":
        if score is not None:
            raise ValueError(f"--score {score} needs a pruning preset; drop --score or give --pruning balanced")
        return None, None
    if score is None:
        return preset(name), name
    return preset(name, score=score), f"{name}, score {score}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="folder with the demo .safetensors files (default: the shipped ones)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds per held-out caption")
    parser.add_argument("--limit", type=int, help="evaluate only the first N held-out captions")
    parser.add_argument("--vae-clips", type=int, default=16, help="held-out clips for the VAE PSNR")
    parser.add_argument("--pruning", default=DEFAULT_PRESET,
                        help="FastSTAR preset compared with dense; 'none' skips the comparison")
    parser.add_argument("--score", choices=SCORES,
                        help="token score of the pruning plan, replacing the preset's (default: the preset's own)")
    parser.add_argument("--json", help="also write every measured number to this JSON file")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"invalid --limit {args.limit}: give 1 or more captions")
    if args.vae_clips < 1:
        raise ValueError(f"invalid --vae-clips {args.vae_clips}: give 1 or more clips")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"invalid --threads {args.threads}: give 1 or more threads")
    if args.json:
        # Check the report path before the run, so that a bad path does not discard minutes of work.
        check_output_path(Path(args.json))
    pruning, label = pruning_plan(args.pruning, args.score)
    if args.threads:
        torch.set_num_threads(args.threads)

    demo = load_demo(args.weights)
    report = evaluate(demo, parse_seeds(args.seeds), args.vae_clips, pruning, args.limit, label)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return 0
