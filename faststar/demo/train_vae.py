"""Train the demo video VAE through the multi-scale BSQ bottleneck, on the CPU, resumably.

    python -m faststar.demo.train_vae --run /work/demo_runs/vae --minutes 40

Each step renders a batch of training-split videos, encodes them with gradients, quantises
the latent along the demo schedule (straight-through) and decodes. The loss is L1 + MSE in
pixels plus a commitment term that pulls the encoder output towards its quantised codes.
Most steps use the first 9 frames (3 latent frames: the image frame and one clip); every
``--full-every``-th step uses all 17. Steps train on random 32x32 crops (a quarter of the
compute; the VAE is fully convolutional), quantised with a crop pyramid of 1..4 cells a
side; the evaluation runs whole 64x64 videos through the demo schedule. Rerunning the command continues from the last
checkpoint; ``python -m faststar.demo.export`` writes the shipped weights.
"""

import argparse
import logging
import math
import random
import time

import torch
import torch.nn.functional as F

from ..vae import InfinityStarVAE, patchify, plan_decode_batches, plan_encode_batches
from ..vae.model import apply_over_channels
from .data import make_samples
from .preset import SPATIAL_COMPRESSION, VAE_CONFIG, VIDEO_FRAMES
from .quantize import demo_steps, quantize_latent, straight_through
from .runs import RunFolder

logger = logging.getLogger(__name__)

SHORT_FRAMES = 9
COMMITMENT_WEIGHT = 0.25
EVAL_SEED = 1234
EVAL_SAMPLES = 8


def encode_with_grad(vae: InfinityStarVAE, video: torch.Tensor) -> torch.Tensor:
    """Working latent [B, 64, T, H/8, W/8] of video [B, 3, F, H, W], with gradients.

    Same arithmetic as ``InfinityStarVAE.encode_raw_features`` (posterior mean), which runs
    under ``torch.no_grad``.
    """
    cache = {}
    moments = [vae.encoder(video[:, :, b.start:b.stop], cache)
               for b in plan_encode_batches(video.shape[2], vae.config.sample_frames_per_batch)]
    mean, _ = patchify(torch.cat(moments, dim=2)).chunk(2, dim=1)
    return apply_over_channels(vae.proj_down, mean) * vae.scale_learnable_parameters[0]


def decode_with_grad(vae: InfinityStarVAE, codes: torch.Tensor) -> torch.Tensor:
    """Video [B, 3, F, H, W] of codes [B, 64, T, h, w], with gradients (see ``InfinityStarVAE.decode``)."""
    latent = vae.prepare_decoder_input(codes)
    cache = {}
    chunks = [vae.decoder(latent[:, :, b.start:b.stop], cache, b.split_first)
              for b in plan_decode_batches(codes.shape[2], vae.config.temporal_compression)]
    return torch.cat(chunks, dim=2)


def reconstruct(vae: InfinityStarVAE, video: torch.Tensor, train_encoder: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode, quantise along the demo schedule and decode; returns (video, latent, codes)."""
    with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
        latent = encode_with_grad(vae, video)
    steps = demo_steps(latent.shape[2], side=latent.shape[-1])
    codes = quantize_latent(latent.detach(), steps).codes
    return decode_with_grad(vae, straight_through(latent, codes)), latent, codes


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1], over all pixels (peak-to-peak range 2)."""
    mse = F.mse_loss(a.clamp(-1, 1), b.clamp(-1, 1)).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def batch_videos(samples, frames: int, crop: int, rng: random.Random) -> torch.Tensor:
    """Videos [B, 3, frames, crop, crop]: the first frames, cut at a random multiple of 8 pixels."""
    videos = []
    for sample in samples:
        video = sample.video()[:, :frames]
        size = video.shape[-1]
        top = rng.randrange(0, size - crop + 1, SPATIAL_COMPRESSION)
        left = rng.randrange(0, size - crop + 1, SPATIAL_COMPRESSION)
        videos.append(video[:, :, top:top + crop, left:left + crop])
    return torch.stack(videos)


@torch.no_grad()
def evaluate_vae(vae: InfinityStarVAE, count: int = EVAL_SAMPLES, held_out: bool = True) -> float:
    """Mean PSNR (dB) of 17-frame reconstructions through the BSQ bottleneck."""
    vae.eval()
    scores = []
    for sample in make_samples(count, EVAL_SEED, held_out=held_out):
        video = sample.video()[None]
        recon, _, _ = reconstruct(vae, video)
        scores.append(psnr(recon, video))
    vae.train()
    return sum(scores) / len(scores)


def learning_rate(step: int, base: float, warmup: int = 100) -> float:
    return base * min(1.0, (step + 1) / warmup)


def train(args: argparse.Namespace) -> None:
    run = RunFolder(args.run)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)

    vae = InfinityStarVAE(VAE_CONFIG)
    optimizer = torch.optim.Adam(vae.parameters(), lr=args.lr)
    if args.freeze_encoder:
        # The latents the transformer learns from must not move: only the decoder side trains.
        for module in (vae.encoder, vae.proj_down):
            module.requires_grad_(False)
        vae.scale_learnable_parameters.requires_grad_(False)
    step = 0
    state = run.load()
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    vae.train()

    started = time.monotonic()
    last_save = started
    rng = random.Random(f"vae-batches|{args.seed}|{step}")
    while step < args.steps and time.monotonic() - started < args.minutes * 60:
        frames = VIDEO_FRAMES if step % args.full_every == 0 else SHORT_FRAMES
        video = batch_videos(make_samples(args.batch, rng.randrange(2**31)), frames, args.crop, rng)

        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.lr)
        recon, latent, codes = reconstruct(vae, video, train_encoder=not args.freeze_encoder)
        pixel_loss = F.l1_loss(recon, video) + F.mse_loss(recon, video)
        commitment = F.mse_loss(latent, codes)
        loss = pixel_loss + COMMITMENT_WEIGHT * commitment

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1

        if step % args.log_every == 0:
            record = {"step": step, "loss": loss.item(), "pixel": pixel_loss.item(),
                      "commitment": commitment.item(), "psnr_batch": psnr(recon.detach(), video),
                      "frames": frames, "elapsed_s": round(time.monotonic() - started, 1)}
            run.log(record)
            logger.info("step %d loss %.4f psnr %.2f", step, loss.item(), record["psnr_batch"])
        if step % args.eval_every == 0:
            run.log({"step": step, "eval_psnr_held_out": evaluate_vae(vae)})
        if time.monotonic() - last_save > args.save_minutes * 60:
            run.save({"step": step, "model": vae.state_dict(), "optimizer": optimizer.state_dict()})
            last_save = time.monotonic()

    run.save({"step": step, "model": vae.state_dict(), "optimizer": optimizer.state_dict()})
    run.log({"step": step, "eval_psnr_held_out": evaluate_vae(vae), "end": True})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="/work/demo_runs/vae", help="run folder (checkpoint and log)")
    parser.add_argument("--steps", type=int, default=4000, help="total optimizer steps")
    parser.add_argument("--minutes", type=float, default=40.0, help="stop this session after this many minutes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--crop", type=int, default=32,
                        help="train on random square crops of this many pixels (a multiple of 8, up to 64)")
    parser.add_argument("--full-every", type=int, default=4, help="every n-th step trains on all 17 frames")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--save-minutes", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--freeze-encoder", action="store_true",
                        help="train only the decoder side, keeping the latents fixed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    train(args)


if __name__ == "__main__":
    main()
