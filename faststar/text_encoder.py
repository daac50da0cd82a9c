"""Flan-T5-XL text encoder: prompt decoration, tokenization and the encoder's features.

InfinityStar conditions on the last hidden state of the Flan-T5-XL encoder (after its
final layer norm), 2048 features per token, keeping the prompt's own tokens including
the closing ``</s>`` and dropping the padding.

Two ways to load it, both offline (``local_files_only=True``, no network):

- the released folder ``text_encoder/flan-t5-xl-official/`` (``config.json``, the
  tokenizer files and ``spiece.model``, sharded or single safetensors weights);
- one ``.safetensors`` file of the encoder weights (``shared.weight``,
  ``encoder.block.*``; the decoder tensors of a full T5 file are ignored). The tokenizer
  files must then be in a folder: ``tokenizer_path``, or the file's own folder by default.
  The model configuration is read from ``config.json`` in that folder when present, else
  inferred from the tensor shapes.
"""

import logging
import re
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

MAX_LENGTH = 512
DETAIL_SUFFIX = ", Close-up on big objects, emphasize scale and detail"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")

# Settings of the Flan-T5 checkpoints that the weight shapes do not show.
_T5_DEFAULTS = {
    "feed_forward_proj": "gated-gelu",
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "dropout_rate": 0.0,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "tie_word_embeddings": False,
    "is_encoder_decoder": False,
}

_BLOCK_KEY = re.compile(r"^encoder\.block\.(\d+)\.")


def duration_tag(duration_seconds: int) -> str:
    """Return the prefix that gives the model the video length, e.g. ``<<<t=5s>>>``."""
    if duration_seconds <= 0 or int(duration_seconds) != duration_seconds:
        raise ValueError(
            f"duration_seconds={duration_seconds!r} is invalid: use a positive whole number (5 or 10)"
        )
    return f"<<<t={int(duration_seconds)}s>>>"


def decorate_prompt(
    prompt: str,
    duration_seconds: int = 5,
    add_duration_tag: bool = True,
    add_suffix: bool = True,
) -> str:
    """Return the prompt as the reference video scripts feed it to T5.

    The reference appends ``DETAIL_SUFFIX`` first and then puts the duration tag in front:
    ``"<<<t=5s>>>" + prompt + ", Close-up on big objects, emphasize scale and detail"``.
    """
    text = prompt
    if add_suffix:
        text = text + DETAIL_SUFFIX
    if add_duration_tag:
        text = duration_tag(duration_seconds) + text
    return text


def _transformers_dtype_argument(dtype: torch.dtype) -> dict:
    """Return the ``from_pretrained`` dtype keyword: ``dtype`` from transformers 4.56 on."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES[:2])


def load_tokenizer(folder: "str | Path"):
    """Load the T5 tokenizer of a folder with ``AutoTokenizer`` (``legacy=True``, offline)."""
    from transformers import AutoTokenizer

    folder = Path(folder).expanduser()
    if not _has_tokenizer(folder):
        raise FileNotFoundError(
            f"no T5 tokenizer in {folder}: expected tokenizer.json or spiece.model with "
            "tokenizer_config.json, as in the released text_encoder/flan-t5-xl-official/ folder; "
            "copy those files there or pass tokenizer_path"
        )
    return AutoTokenizer.from_pretrained(str(folder), legacy=True, local_files_only=True)


def t5_config_from_state_dict(shapes: Mapping[str, torch.Tensor]):
    """Infer a ``T5Config`` for ``T5EncoderModel`` from encoder tensor shapes.

    The heads come from ``relative_attention_bias`` ([buckets, heads]); the settings that
    no shape shows (gated-GELU, max distance 128, eps 1e-6) are those of Flan-T5.
    """
    from transformers import T5Config

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ValueError(f"not a T5 encoder state dict: tensor {key!r} is missing")
        return tuple(shapes[key].shape)

    vocab_size, d_model = shape("shared.weight")
    buckets, num_heads = shape("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    inner = shape("encoder.block.0.layer.0.SelfAttention.q.weight")[0]
    d_ff = shape("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")[0]
    num_layers = 1 + max(int(match.group(1)) for key in shapes if (match := _BLOCK_KEY.match(key)))

    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=inner // num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=buckets,
        **_T5_DEFAULTS,
    )


def _encoder_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read the encoder tensors of a safetensors file; decoder and LM-head tensors are not read."""
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"cannot read {path}: {error}. The file is damaged or not a safetensors file"
        ) from error

    names = list(handle.keys())
    encoder_names = [key for key in names if key == "shared.weight" or key.startswith("encoder.")]
    encoder_tensors = {key: handle.get_tensor(key) for key in encoder_names}
    if "shared.weight" not in encoder_tensors and "encoder.embed_tokens.weight" in encoder_tensors:
        encoder_tensors["shared.weight"] = encoder_tensors["encoder.embed_tokens.weight"]
    if "shared.weight" not in encoder_tensors:
        raise ValueError(
            f"{path} is not a T5 encoder: it has no 'shared.weight' or 'encoder.embed_tokens.weight' "
            f"({len(names)} tensors, for example {sorted(names)[:3]}); expected the Flan-T5-XL weights"
        )
    encoder_tensors["encoder.embed_tokens.weight"] = encoder_tensors["shared.weight"]
    return encoder_tensors


def _load_encoder_file(path: Path, config_folder: Path, dtype: torch.dtype):
    """Build ``T5EncoderModel`` on the meta device and assign the file's tensors to it."""
    from transformers import T5Config, T5EncoderModel

    tensors = _encoder_tensors(path)
    if (config_folder / "config.json").is_file():
        config = T5Config.from_pretrained(str(config_folder), local_files_only=True)
    else:
        config = t5_config_from_state_dict(tensors)

    with torch.device("meta"):
        model = T5EncoderModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = sorted(
        key for key in expected if key in tensors and tensors[key].shape != expected[key].shape
    )
    if missing or unexpected or misshaped:
        raise ValueError(
            f"{path} does not match the T5 encoder of {config_folder / 'config.json'} or its shapes: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, mis-shaped {misshaped[:5]}"
        )

    converted = {key: value.to(dtype) for key, value in tensors.items()}
    converted["encoder.embed_tokens.weight"] = converted["shared.weight"]  # tied, as in T5
    model.load_state_dict(converted, strict=True, assign=True)
    model.encoder.set_input_embeddings(model.shared)
    return model


def _default_dtype(device: torch.device) -> torch.dtype:
    # The reference stores T5 in float16 on the GPU; float16 matmuls are slow or missing on CPUs.
    return torch.float16 if device.type == "cuda" else torch.float32


def _resolve_autocast(autocast_dtype: "torch.dtype | None | str", device: torch.device) -> torch.dtype | None:
    if autocast_dtype == "reference":
        return torch.bfloat16 if device.type == "cuda" else None
    if autocast_dtype is not None and not isinstance(autocast_dtype, torch.dtype):
        raise ValueError(
            f"autocast_dtype={autocast_dtype!r} is invalid: use 'reference', None or a torch dtype"
        )
    return autocast_dtype


class TextEncoder:
    """Flan-T5 encoder plus tokenizer; ``encode`` returns the features InfinityStar expects.

    ``autocast_dtype`` is the autocast dtype of ``encode``, or None to run T5 in its weight
    dtype. The reference runs T5 with float16 weights inside CUDA bfloat16 autocast.
    """

    def __init__(
        self, tokenizer, model, autocast_dtype: torch.dtype | None = None, max_length: int = MAX_LENGTH
    ):
        self.tokenizer = tokenizer
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    @classmethod
    def load(
        cls,
        path: "str | Path",
        device: "str | torch.device" = "cpu",
        dtype: torch.dtype | None = None,
        tokenizer_path: "str | Path | None" = None,
        autocast_dtype: "torch.dtype | None | str" = "reference",
    ) -> "TextEncoder":
        """Load the encoder from a model folder or one .safetensors file; see the module docs.

        ``dtype`` defaults to float16 on CUDA (as the reference) and float32 elsewhere.
        ``autocast_dtype="reference"`` means bfloat16 autocast on CUDA, as the reference
        runs T5, and none elsewhere; pass None or a dtype to choose.
        ``tokenizer_path`` defaults to ``path`` (a folder) or the file's folder.
        """
        from transformers import T5EncoderModel

        path = Path(path).expanduser()
        device = torch.device(device)
        dtype = dtype or _default_dtype(device)
        autocast_dtype = _resolve_autocast(autocast_dtype, device)
        if not path.exists():
            raise FileNotFoundError(
                f"text encoder not found: {path}; expected the folder text_encoder/flan-t5-xl-official/ "
                "or a .safetensors file of the Flan-T5-XL encoder"
            )

        folder = path if path.is_dir() else path.parent
        tokenizer = load_tokenizer(Path(tokenizer_path).expanduser() if tokenizer_path else folder)

        if path.is_dir():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"{path} has no config.json; expected the flan-t5-xl-official folder")
            model = T5EncoderModel.from_pretrained(
                str(path), local_files_only=True, **_transformers_dtype_argument(dtype)
            )
        elif path.suffix == ".safetensors":
            model = _load_encoder_file(path, folder, dtype)
        else:
            raise ValueError(f"{path} is neither a folder nor a .safetensors file")

        model.to(device)
        model.eval()
        model.requires_grad_(False)
        logger.info(
            "loaded T5 encoder from %s: d_model %d, %d layers, %s on %s",
            path, model.config.d_model, model.config.num_layers, dtype, device,
        )
        return cls(tokenizer, model, autocast_dtype=autocast_dtype)

    def tokenize(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return input ids and attention mask [1, max_length], padded like the reference."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        tokens = self.tokenizer(
            text=[prompt],
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        return tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def encode(self, prompt: str) -> torch.Tensor:
        """Return the features [L, d_model] (float32) of the prompt's L tokens, ``</s>`` included.

        The prompt is truncated to 512 tokens (the tokenizer keeps ``</s>`` last).
        """
        input_ids, mask = self.tokenize(prompt)
        with self._autocast():
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        length = int(mask.sum())
        return hidden[0, :length].float()
