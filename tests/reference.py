"""Helpers that turn the reference fixture folder into engine inputs."""

from pathlib import Path

import torch
from safetensors.torch import load_file

from faststar.model import InfinityStarTransformer, TransformerConfig


def load_tensors(ref_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(ref_dir) / name))


def tiny_config(manifest: dict) -> TransformerConfig:
    """Build the tiny transformer's config from the manifest's constructor record."""
    entry = manifest["files"]["tiny_transformer.safetensors"]
    overrides = entry["constructor_overrides"]
    kwargs = entry["constructor_kwargs"]
    tensors = entry["tensors"]
    return TransformerConfig(
        embed_dim=overrides["embed_dim"],
        depth=overrides["depth"],
        num_heads=overrides["num_heads"],
        num_kv_heads=overrides["num_key_value_heads"],
        mlp_hidden=entry["derived"]["mlp_hidden"],
        text_channels=kwargs["text_channels"],
        text_maxlen=kwargs["text_maxlen"],
        code_dim=entry["derived"]["d_vae"],
        semantic_bits=tensors["semantic_head2.bias"][0][0] // 2,
        detail_bits=tensors["head.bias"][0][0] // 2,
        block_chunks=overrides["block_chunks"],
    )


def tiny_transformer(ref_dir: Path, manifest: dict) -> InfinityStarTransformer:
    """The tiny reference transformer in float32, loaded through the engine's checkpoint loader."""
    from faststar.checkpoints import load_transformer

    model, info = load_transformer(Path(ref_dir) / "tiny_transformer.safetensors", dtype=torch.float32)
    assert info.config == tiny_config(manifest)
    return model


def run_settings(run: dict):
    """ScheduleSettings of a fixture run, from its manifest record."""
    from dataclasses import replace

    from faststar.schedules import PRESETS

    taus = run["tau_list"]
    first_full = run["first_full_spatial_size_scale_index"]
    return replace(
        PRESETS["720p"],
        image_scale_repetition=tuple(run["image_scale_repetition"]),
        video_scale_repetition=tuple(run["video_scale_repetition"]),
        semantic_scales=run["semantic_scales"],
        detail_scale_min_tokens=run.get("detail_scale_min_tokens", PRESETS["720p"].detail_scale_min_tokens),
        tau_image=taus[0],
        tau_video=taus[first_full + 1] if len(taus) > first_full + 1 else taus[-1],
        guidance="apg" if run["use_apg"] else "cfg",
        guidance_scale=run["cfg"],
        apg_norm_threshold=run.get("apg_norm_threshold", 0.05),
        frames_inner_clip=run["frames_inner_clip"],
    )


def run_steps(run: dict):
    """The engine's step list for a fixture run (tiny 3-clip schedule)."""
    from faststar.schedules import build_steps

    context_info = {int(k): v for k, v in run["context_info"].items()}
    return build_steps(run["scale_schedule"], run_settings(run), run["first_full_spatial_size_scale_index"],
                       context_info)
