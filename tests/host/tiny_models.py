"""The small models the node and host tests run: a ComfyUI-style models folder.

The transformer and the VAE are the reference fixtures' tiny random models. Their text
width is 32, so the text encoder is a tiny random T5 encoder (d_model 32) built here
with transformers, with the Flan-T5 tokenizer files that ComfyUI ships in
comfy/text_encoders/t5_tokenizer (the T5 v1.1 SentencePiece vocabulary Flan-T5 uses).
"""

import shutil
from pathlib import Path

TRANSFORMER_NAME = "tiny_transformer.safetensors"
VAE_NAME = "tiny_vae.safetensors"
TEXT_ENCODER_NAME = "tiny-flan-t5"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# Sizes of the tiny T5 encoder; d_model must equal the tiny transformer's text_channels.
TINY_T5 = {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4}
TINY_T5_SEED = 5005


def build_text_encoder(folder: Path, comfyui_root: Path, text_channels: int) -> Path:
    """Write a random T5 encoder with text_channels features and the T5 tokenizer to folder."""
    import torch
    from transformers import T5Config, T5EncoderModel

    folder.mkdir(parents=True, exist_ok=True)
    config = T5Config(
        vocab_size=32128, relative_attention_num_buckets=32, feed_forward_proj="gated-gelu",
        is_encoder_decoder=False, **{**TINY_T5, "d_model": text_channels},
    )
    torch.manual_seed(TINY_T5_SEED)
    T5EncoderModel(config).save_pretrained(folder)

    tokenizer_dir = comfyui_root / "comfy" / "text_encoders" / "t5_tokenizer"
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder


def build_models_folder(models_dir: Path, ref_dir: Path, comfyui_root: Path, text_channels: int) -> dict:
    """Lay out models/infinitystar, models/vae and models/text_encoders; return the file names."""
    transformer_dir = models_dir / "infinitystar"
    vae_dir = models_dir / "vae"
    transformer_dir.mkdir(parents=True, exist_ok=True)
    vae_dir.mkdir(parents=True, exist_ok=True)

    shutil.copy(ref_dir / TRANSFORMER_NAME, transformer_dir / TRANSFORMER_NAME)
    shutil.copy(ref_dir / VAE_NAME, vae_dir / VAE_NAME)
    build_text_encoder(models_dir / "text_encoders" / TEXT_ENCODER_NAME, comfyui_root, text_channels)
    return {"model": TRANSFORMER_NAME, "vae": VAE_NAME, "text_encoder": TEXT_ENCODER_NAME}


def tiny_text_channels(ref_dir: Path) -> int:
    """text_channels of the tiny transformer: the width of its cfg_uncond tensor."""
    from safetensors import safe_open

    with safe_open(str(ref_dir / TRANSFORMER_NAME), framework="pt") as handle:
        return handle.get_slice("cfg_uncond").get_shape()[1]
