"""The shipped demo weights: writing them from training runs and loading them.

Three safetensors files live in ``faststar/demo/weights/``:

- ``transformer.safetensors``: the InfinityStar transformer in the released key layout
  (``block_chunks.{c}.module.{j}.*``), loaded by ``checkpoints.load_transformer``;
- ``vae.safetensors``: the video VAE with the reference key names, loaded by
  ``checkpoints.load_vae``;
- ``text_encoder.safetensors``: the demo text encoder, with its vocabulary in the metadata.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..checkpoints import load_transformer, load_vae, remap_flat_to_reference
from ..model import InfinityStarTransformer
from .preset import PRESET_NAME, TRANSFORMER_CONFIG, register_demo_preset
from .text_encoder import VOCABULARY, DemoTextEncoder

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TRANSFORMER_FILE = "transformer.safetensors"
VAE_FILE = "vae.safetensors"
TEXT_ENCODER_FILE = "text_encoder.safetensors"
VOCABULARY_METADATA_KEY = "faststar.vocabulary"


@dataclass
class DemoModel:
    """The demo transformer, VAE and text encoder, and the preset name to generate with."""

    transformer: InfinityStarTransformer
    vae: torch.nn.Module
    text_encoder: DemoTextEncoder
    preset: str

    def __iter__(self):
        return iter((self.transformer, self.vae, self.text_encoder, self.preset))


def load_text_encoder(path: "str | Path", device: "str | torch.device" = "cpu") -> DemoTextEncoder:
    """Load the demo text encoder; raise ValueError when its vocabulary differs from the grammar's."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    stored = json.loads(metadata.get(VOCABULARY_METADATA_KEY, "null"))
    if stored != VOCABULARY:
        raise ValueError(
            f"{path} was trained with the vocabulary {stored}, but the grammar now has {VOCABULARY}; "
            "retrain the demo transformer or restore the grammar"
        )
    encoder = DemoTextEncoder()
    encoder.load_state_dict(load_file(str(path)))
    return encoder.to(device).eval().requires_grad_(False)


def load_demo(weights_dir: "str | Path | None" = None, device: "str | torch.device" = "cpu",
              dtype: torch.dtype = torch.float32) -> DemoModel:
    """Load the shipped demo model through the released checkpoints' loaders.

    Also registers the 'demo' generation preset, so ``pipeline.generate`` accepts
    ``GenerationSettings(preset='demo', video_frames=17)``.
    """
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    missing = [name for name in (TRANSFORMER_FILE, VAE_FILE, TEXT_ENCODER_FILE) if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"the demo weights {missing} are missing in {folder}; export them with "
                                "`python -m faststar.demo.export`")

    register_demo_preset()
    transformer, _ = load_transformer(folder / TRANSFORMER_FILE, dtype=dtype, device=device)
    vae = load_vae(folder / VAE_FILE, device=device)
    text_encoder = load_text_encoder(folder / TEXT_ENCODER_FILE, device)
    return DemoModel(transformer, vae, text_encoder, PRESET_NAME)


def export_transformer(model_state: dict, encoder_state: dict, folder: "str | Path", step: int) -> None:
    """Write the transformer (released key layout) and the text encoder as safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = {key: value.detach().float().contiguous() for key, value in model_state.items()}
    reference = remap_flat_to_reference(flat, TRANSFORMER_CONFIG.block_chunks)
    save_file(dict(reference), str(folder / TRANSFORMER_FILE),
              metadata={"faststar.model": "demo-transformer", "faststar.step": str(step)})

    encoder = {key: value.detach().float().contiguous() for key, value in encoder_state.items()}
    save_file(encoder, str(folder / TEXT_ENCODER_FILE),
              metadata={VOCABULARY_METADATA_KEY: json.dumps(VOCABULARY), "faststar.step": str(step)})
    logger.info("exported the transformer and text encoder of step %d to %s", step, folder)


def export_vae(vae_state: dict, folder: "str | Path", step: int) -> None:
    """Write the VAE with the reference key names as safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Clones: the quantizer buffers are registered twice, and safetensors rejects shared memory.
    tensors = {key: value.detach().clone().contiguous() for key, value in vae_state.items()}
    save_file(tensors, str(folder / VAE_FILE), metadata={"faststar.model": "demo-vae", "faststar.step": str(step)})
    logger.info("exported the VAE of step %d to %s", step, folder)
