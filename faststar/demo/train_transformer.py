"""Train the demo transformer and text encoder by teacher forcing over the scale schedule.

    python -m faststar.demo.train_transformer --run /work/demo_runs/transformer \\
        --vae /work/demo_runs/vae --minutes 60

The run encodes training-split videos with the VAE's encoder (``encode_raw_features``,
the image-to-video path) into a latent pool stored in the run folder: ``--pool`` videos
before the first step, then ``--grow-by`` more every ``--grow-every`` steps. On its first
start the run copies the VAE into its folder, so the latents never change encoder. The
shipped VAE must keep that encoder: train the VAE further only with
``train_vae --freeze-encoder``.

A training step quantises a batch of latents along the demo schedule with bitwise
self-correction: each video flips a random fraction, up to ``--max-flip``, of every
step's bits before they join the canvas, so later labels close the corrupted canvas's
residual. It then runs the same forwards as the pyramid loop: the text prefix once,
cached as ``"t0"``, and every step on its pooled canvas, attending to the text and to the
previous clip's last scale. The loss is the bit cross-entropy of each step, averaged over
steps. A tenth of the captions are replaced by the learned ``cfg_uncond`` rows, so
classifier-free guidance has an unconditional model.
"""

import argparse
import logging
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..model import AttentionInputs, InfinityStarTransformer, KVCache
from ..rope import TEXT_MAXLEN, inverse_frequencies, rope_cos_sin, text_positions, visual_positions
from ..sampler import TEXT_KEY, scale_key
from ..vae import InfinityStarVAE
from .data import make_samples
from .preset import TEXT_TOKENS, TRANSFORMER_CONFIG, VAE_CONFIG
from .quantize import StepTargets, demo_steps, quantize_latent
from .runs import RunFolder
from .text_encoder import DemoTextEncoder, tokenize

logger = logging.getLogger(__name__)

LATENT_POOL_NAME = "latents.pt"
ENCODER_NAME = "vae_for_encoding.pt"
POOL_SEED = 7
POOL_LIMIT = 20000
CAPTION_DROPOUT = 0.1


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------


def load_vae_for_encoding(vae_source: "str | Path") -> InfinityStarVAE:
    """Load the demo VAE from a run folder (its last checkpoint) or an exported .safetensors file."""
    source = Path(vae_source)
    if source.is_dir():
        state = torch.load(source / "checkpoint.pt", weights_only=False)["model"]
        vae = InfinityStarVAE(VAE_CONFIG)
        vae.load_state_dict(state)
        return vae.eval()

    from ..checkpoints import load_vae

    return load_vae(source)


class LatentPool:
    """Encoded training videos, grown in chunks during training and stored in the run folder.

    The first start copies the VAE into the run folder (``ENCODER_NAME``), so every later
    chunk, also after a resume, is encoded by the same weights.
    """

    def __init__(self, run: RunFolder, vae_source: "str | Path"):
        self.path = run.folder / LATENT_POOL_NAME
        encoder_path = run.folder / ENCODER_NAME
        if not encoder_path.exists():
            torch.save(load_vae_for_encoding(vae_source).state_dict(), encoder_path)
        self.vae = InfinityStarVAE(VAE_CONFIG)
        self.vae.load_state_dict(torch.load(encoder_path, weights_only=True))
        self.vae.eval()
        self.samples = make_samples(POOL_LIMIT, POOL_SEED, held_out=False)

        if self.path.exists():
            stored = torch.load(self.path, weights_only=True)
            self.latents, self.token_ids = stored["latents"], stored["token_ids"]
        else:
            self.latents = torch.empty(0, 64, 5, 8, 8)
            self.token_ids = torch.empty(0, TEXT_TOKENS, dtype=torch.long)

    def __len__(self) -> int:
        return self.latents.shape[0]

    def grow(self, count: int) -> None:
        """Encode the next ``count`` videos of the fixed sample list and store the pool."""
        chunk = self.samples[len(self):len(self) + count]
        if not chunk:
            return
        video = torch.stack([sample.video() for sample in chunk])
        latents = self.vae.encode_raw_features(video)  # [b, 64, 5, 8, 8]
        ids = torch.stack([tokenize(sample.caption.text()) for sample in chunk])
        self.latents = torch.cat([self.latents, latents])
        self.token_ids = torch.cat([self.token_ids, ids])

        partial = self.path.with_suffix(".partial")
        torch.save({"latents": self.latents, "token_ids": self.token_ids}, partial)
        partial.replace(self.path)
        logger.info("latent pool has %d videos", len(self))


# ----------------------------------------------------------------------------------------
# The teacher-forced forward
# ----------------------------------------------------------------------------------------


def text_prefix(model: InfinityStarTransformer, encoder: DemoTextEncoder, token_ids: torch.Tensor,
                dropped: torch.Tensor) -> torch.Tensor:
    """Prefix tokens [B, TEXT_TOKENS, C]; rows where ``dropped`` [B] is True use ``cfg_uncond``."""
    features = encoder(token_ids)  # [B, TEXT_TOKENS, C_text]
    uncond = model.cfg_uncond[:TEXT_TOKENS].unsqueeze(0).expand_as(features)
    features = torch.where(dropped.view(-1, 1, 1), uncond, features)
    return model.text_proj(features)


def step_loss(model: InfinityStarTransformer, target: StepTargets, cache: KVCache, inv_freq: torch.Tensor,
              full_hw: tuple[int, int]) -> torch.Tensor:
    """Forward one step's tokens as the pyramid loop does and return its bit cross-entropy."""
    step = target.step
    t = step.thw[0]
    positions = visual_positions(step.thw, full_hw, range(step.frame_start, step.frame_start + t),
                                 TEXT_MAXLEN + step.real_sid)
    context = [scale_key(si) for si in step.ref_sids] + [TEXT_KEY]
    store = scale_key(step.si) if step.referenced and step.last_repetition else None
    inputs = AttentionInputs(rope_cos_sin(positions, inv_freq), cache, context, store)

    hidden = model.forward_blocks(model.word_embed(target.input_codes), inputs)
    logits = model.logits(hidden, semantic=step.head == "semantic")  # [B, L, 2d]
    return F.cross_entropy(logits.reshape(-1, 2), target.labels.reshape(-1))


def batch_loss(model: InfinityStarTransformer, encoder: DemoTextEncoder, latents: torch.Tensor,
               token_ids: torch.Tensor, flip_prob: torch.Tensor, dropped: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean step loss of a batch of latents [B, 64, T, H, W] and its per-head parts."""
    steps = demo_steps(latents.shape[2])
    quantized = quantize_latent(latents, steps, flip_prob, generator, keep_targets=True)
    full_hw = tuple(steps[-1].thw[1:])
    inv_freq = inverse_frequencies(model.config.head_dim, model.config.rope_theta)
    cache = KVCache(model.config.depth)

    prefix = text_prefix(model, encoder, token_ids, dropped)
    model.forward_blocks(prefix, AttentionInputs(rope_cos_sin(text_positions(TEXT_TOKENS), inv_freq),
                                                 cache, (), TEXT_KEY))

    losses = {"semantic": [], "detail": []}
    for target in quantized.targets:
        losses[target.step.head].append(step_loss(model, target, cache, inv_freq, full_hw))
    every = losses["semantic"] + losses["detail"]
    parts = {head: torch.stack(values).mean().item() for head, values in losses.items()}
    return torch.stack(every).mean(), parts


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------


def build_models(seed: int) -> tuple[InfinityStarTransformer, DemoTextEncoder]:
    torch.manual_seed(seed)
    model = InfinityStarTransformer(TRANSFORMER_CONFIG)
    for name, parameter in model.named_parameters():
        if parameter.dim() == 2 and "norm" not in name:
            torch.nn.init.normal_(parameter, std=0.02)
    return model, DemoTextEncoder()


def learning_rate(step: int, base: float, total: int, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.1, 1 - (step - warmup) / max(total - warmup, 1))


def train(args: argparse.Namespace) -> None:
    run = RunFolder(args.run)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    pool = LatentPool(run, args.vae)
    while len(pool) < args.pool:
        pool.grow(args.grow_by)

    model, encoder = build_models(args.seed)
    parameters = list(model.parameters()) + list(encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    step = 0
    state = run.load()
    if state is not None:
        model.load_state_dict(state["model"])
        encoder.load_state_dict(state["text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    model.train()
    encoder.train()

    started = time.monotonic()
    last_save = started
    while step < args.steps and time.monotonic() - started < args.minutes * 60:
        if step % args.grow_every == 0 and len(pool) < args.pool_max:
            pool.grow(args.grow_by)
            run.log({"step": step, "latent_pool": len(pool)})
        count = len(pool)
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        index = torch.randint(count, (args.batch,), generator=generator)
        flip_prob = torch.rand(args.batch, generator=generator) * args.max_flip
        dropped = torch.rand(args.batch, generator=generator) < CAPTION_DROPOUT

        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.lr, args.steps)
        loss, parts = batch_loss(model, encoder, pool.latents[index], pool.token_ids[index],
                                 flip_prob, dropped, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        step += 1

        if step % args.log_every == 0:
            record = {"step": step, "loss": loss.item(), **{f"loss_{k}": v for k, v in parts.items()},
                      "elapsed_s": round(time.monotonic() - started, 1)}
            run.log(record)
            logger.info("step %d loss %.4f (semantic %.4f, detail %.4f)", step, loss.item(),
                        parts["semantic"], parts["detail"])
        if time.monotonic() - last_save > args.save_minutes * 60:
            save(run, step, model, encoder, optimizer)
            last_save = time.monotonic()
    save(run, step, model, encoder, optimizer)


def save(run: RunFolder, step: int, model, encoder, optimizer) -> None:
    run.save({"step": step, "model": model.state_dict(), "text_encoder": encoder.state_dict(),
              "optimizer": optimizer.state_dict()})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="/work/demo_runs/transformer", help="run folder (checkpoint, log, latents)")
    parser.add_argument("--vae", default="/work/demo_runs/vae",
                        help="VAE run folder or .safetensors file whose encoder makes the latent pool")
    parser.add_argument("--pool", type=int, default=128, help="training videos encoded before the first step")
    parser.add_argument("--pool-max", type=int, default=2048, help="the pool grows up to this many videos")
    parser.add_argument("--grow-every", type=int, default=10, help="steps between two growths of the pool")
    parser.add_argument("--grow-by", type=int, default=16, help="videos encoded per growth")
    parser.add_argument("--steps", type=int, default=3000, help="total optimizer steps (sets the LR decay)")
    parser.add_argument("--minutes", type=float, default=60.0, help="stop this session after this many minutes")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-flip", type=float, default=0.2,
                        help="largest fraction of bits flipped per video (bitwise self-correction)")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--save-minutes", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train(args)


if __name__ == "__main__":
    main()
