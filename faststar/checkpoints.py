"""Read, check and load InfinityStar checkpoints (transformer and video VAE).

Supported transformer files:

- the released sharded folders ``infinitystar_8b_720p_weights/`` and
  ``infinitystar_8b_480p_weights/``: ``model.safetensors.index.json`` plus the shards it lists;
- one ``.safetensors`` file, for example written by ``python -m faststar convert``;
- a torch ``.pth``/``.pt`` state dict, read with ``weights_only=True``. A training
  checkpoint that stores the weights under ``['trainer']['gpt_fsdp']`` is unwrapped.

The released files name blocks ``block_chunks.{c}.module.{j}.*`` (the "reference layout",
block index ``i = c * depth / block_chunks + j``). ``InfinityStarTransformer`` uses a flat
``blocks.{i}.*`` list; both layouts are read, and every tensor is checked against the
model before anything is loaded.

Safetensors files are memory-mapped and read one tensor at a time, so loading the 35 GB
float32 release into bfloat16 blocks never holds a second full copy in memory.
"""

import json
import logging
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .model import InfinityStarTransformer, TransformerConfig

logger = logging.getLogger(__name__)

SHARD_INDEX_NAME = "model.safetensors.index.json"
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
RESOLUTIONS = ("720p", "480p")
RESOLUTION_METADATA_KEY = "faststar.resolution"

# Tensors outside the blocks. The reference keeps them in float32 even when the blocks
# are cast to bfloat16.
TOP_LEVEL_KEYS = (
    "cfg_uncond",
    "sos_token",
    "text_proj.weight",
    "text_proj.bias",
    "word_embed.weight",
    "word_embed.bias",
    "norm_hidden_sates.weight",
    "head.weight",
    "head.bias",
    "semantic_head2.weight",
    "semantic_head2.bias",
)

# Tensors of one block, in the order of the released index.
BLOCK_KEY_SUFFIXES = (
    "attn.q_proj.weight",
    "attn.k_proj.weight",
    "attn.v_proj.weight",
    "attn.o_proj.weight",
    "attn.q_norm.weight",
    "attn.k_norm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
)

EXPECTED_TRANSFORMER_FILES = (
    "expected the released folder infinitystar_8b_720p_weights/ or infinitystar_8b_480p_weights/ "
    f"({SHARD_INDEX_NAME} and every model-0000N-of-00006.safetensors shard it lists), "
    "one .safetensors file written by `python -m faststar convert`, "
    "or a torch .pth state dict of the InfinityStar transformer"
)
EXPECTED_VAE_FILES = (
    "expected the released infinitystar_videovae.pth (its 'vae' entry is used) "
    "or one .safetensors file of the VAE written by `python -m faststar convert`"
)

# How many names of each kind (missing, unexpected, mis-shaped) an error message lists.
LISTED_KEYS = 5

_REFERENCE_BLOCK_KEY = re.compile(r"^block_chunks\.(\d+)\.module\.(\d+)\.(.+)$")
_FLAT_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
_RESOLUTION_IN_NAME = re.compile(r"(?<![0-9])(720|480)p(?![0-9a-z])", re.IGNORECASE)

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}

_DTYPE_NAMES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}


def parse_dtype(value: "str | torch.dtype") -> torch.dtype:
    """Return the floating dtype named by ``value`` ('bf16', 'fp16', 'fp32' or a torch dtype)."""
    if isinstance(value, torch.dtype):
        if value not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(
                f"dtype {value} is not supported: use torch.bfloat16, torch.float16 or torch.float32"
            )
        return value

    dtype = _DTYPE_NAMES.get(str(value).lower())
    if dtype is None:
        raise ValueError(f"dtype {value!r} is not supported: use 'bf16', 'fp16' or 'fp32'")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """Return 'float32', 'bfloat16', ... for a torch dtype."""
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------
# Key remapping: reference layout <-> flat layout
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockLayout:
    """Block naming of a state dict.

    ``style`` is ``"reference"`` (``block_chunks.{c}.module.{j}``) or ``"flat"``
    (``blocks.{i}``). ``depth`` counts blocks; ``block_chunks`` is the number of chunks
    of the reference layout (1 for a flat state dict unless given).
    """

    style: str
    depth: int
    block_chunks: int

    @property
    def blocks_per_chunk(self) -> int:
        return self.depth // self.block_chunks


def reference_to_flat_key(key: str, blocks_per_chunk: int) -> str:
    """Rename ``block_chunks.{c}.module.{j}.X`` to ``blocks.{c * blocks_per_chunk + j}.X``.

    Keys outside the blocks are returned unchanged.
    """
    match = _REFERENCE_BLOCK_KEY.match(key)
    if match is None:
        return key

    chunk, index, rest = int(match.group(1)), int(match.group(2)), match.group(3)
    if index >= blocks_per_chunk:
        raise ValueError(
            f"key {key!r} has block {index} inside chunk {chunk}, but a chunk contains "
            f"{blocks_per_chunk} blocks; depth or block_chunks does not match this checkpoint"
        )
    return f"blocks.{chunk * blocks_per_chunk + index}.{rest}"


def flat_to_reference_key(key: str, blocks_per_chunk: int) -> str:
    """Rename ``blocks.{i}.X`` to ``block_chunks.{i // n}.module.{i % n}.X`` with n = blocks_per_chunk."""
    match = _FLAT_BLOCK_KEY.match(key)
    if match is None:
        return key

    block, rest = int(match.group(1)), match.group(2)
    chunk, index = divmod(block, blocks_per_chunk)
    return f"block_chunks.{chunk}.module.{index}.{rest}"


def detect_block_layout(
    keys: Iterable[str], depth: int | None = None, block_chunks: int | None = None
) -> BlockLayout:
    """Infer the block naming, depth and chunk count from key names; given values win.

    A reference-layout state dict with chunks ``0..C-1`` holding modules ``0..J-1`` has
    depth ``C * J``. A flat state dict has depth ``1 + max(i)`` and one chunk unless
    ``block_chunks`` is given. Raises ValueError when no key names a block.
    """
    chunks, modules, flat_blocks = set(), set(), set()
    for key in keys:
        if match := _REFERENCE_BLOCK_KEY.match(key):
            chunks.add(int(match.group(1)))
            modules.add(int(match.group(2)))
        elif match := _FLAT_BLOCK_KEY.match(key):
            flat_blocks.add(int(match.group(1)))

    if chunks and flat_blocks:
        raise ValueError(
            "the state dict mixes reference block names (block_chunks.{c}.module.{j}.*) "
            "and flat block names (blocks.{i}.*); use one layout"
        )

    if chunks:
        found_chunks = max(chunks) + 1
        chunk_count = block_chunks or found_chunks
        block_count = depth or chunk_count * (max(modules) + 1)
        style = "reference"
    elif flat_blocks:
        block_count = depth or max(flat_blocks) + 1
        chunk_count = block_chunks or 1
        style = "flat"
    else:
        raise ValueError("no key names a transformer block (block_chunks.{c}.module.{j}.* or blocks.{i}.*)")

    if block_count % chunk_count:
        raise ValueError(f"depth {block_count} is not a multiple of block_chunks={chunk_count}")
    return BlockLayout(style, block_count, chunk_count)


def remap_reference_to_flat(
    state: Mapping[str, Any], depth: int | None = None, block_chunks: int | None = None
) -> dict[str, Any]:
    """Return ``state`` with reference block names turned into flat ``blocks.{i}`` names.

    ``depth`` and ``block_chunks`` are inferred from the names when not given.
    """
    layout = detect_block_layout(state, depth, block_chunks)
    return {reference_to_flat_key(key, layout.blocks_per_chunk): value for key, value in state.items()}


def remap_flat_to_reference(
    state: Mapping[str, Any], block_chunks: int, depth: int | None = None
) -> dict[str, Any]:
    """Return ``state`` with flat ``blocks.{i}`` names turned into reference chunk names."""
    layout = detect_block_layout(state, depth, block_chunks)
    return {flat_to_reference_key(key, layout.blocks_per_chunk): value for key, value in state.items()}


# ---------------------------------------------------------------------------------------
# Configuration from tensor shapes
# ---------------------------------------------------------------------------------------


def _shape_of(value: Any) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return tuple(int(size) for size in value)


def _normalize_shapes(shapes: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {key: _shape_of(value) for key, value in shapes.items()}


def looks_like_transformer(keys: Iterable[str]) -> bool:
    """Return True when a key set has a name that only an InfinityStar transformer has.

    Those are the misspelled ``norm_hidden_sates.weight``, ``semantic_head2.weight`` and the
    reference block names ``block_chunks.{c}.module.{j}.*``. Flat ``blocks.{i}.*`` names
    alone are not enough, because many other models use them.
    """
    for key in keys:
        if key in ("norm_hidden_sates.weight", "semantic_head2.weight"):
            return True
        if _REFERENCE_BLOCK_KEY.match(key):
            return True
    return False


def _reject_other_model(keys: Sequence[str], source: Any = None) -> None:
    """Raise ValueError when none of ``keys`` is an InfinityStar transformer name."""
    if looks_like_transformer(keys):
        return

    where = f"{source} " if source is not None else ""
    sample = ", ".join(repr(key) for key in sorted(keys)[:3]) or "none"
    raise ValueError(
        f"{where}is not an InfinityStar transformer checkpoint: none of its {len(keys)} tensors "
        f"(for example {sample}) has an InfinityStar name such as "
        f"'block_chunks.0.module.0.attn.q_proj.weight' or 'norm_hidden_sates.weight'; "
        f"{EXPECTED_TRANSFORMER_FILES}"
    )


def _first_block_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Map each block key suffix to its shape in the lowest-numbered block that has it."""
    found: dict[str, tuple[int, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        if match := _REFERENCE_BLOCK_KEY.match(key):
            order, suffix = (int(match.group(1)), int(match.group(2))), match.group(3)
        elif match := _FLAT_BLOCK_KEY.match(key):
            order, suffix = (int(match.group(1)), 0), match.group(2)
        else:
            continue
        if suffix not in found or order < found[suffix][0]:
            found[suffix] = (order, shape)
    return {suffix: shape for suffix, (_, shape) in found.items()}


def _required_shape(shapes: Mapping[str, tuple[int, ...]], key: str, what: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ValueError(
            f"cannot read the transformer size: tensor {key!r} (needed for {what}) is missing; "
            f"{EXPECTED_TRANSFORMER_FILES}"
        )
    return shapes[key]


def config_from_state_dict(
    shapes: Mapping[str, Any], depth: int | None = None, block_chunks: int | None = None
) -> TransformerConfig:
    """Infer the ``TransformerConfig`` of a state dict from its tensor shapes.

    ``shapes`` maps names (either layout) to tensors or shapes; no tensor data is read.
    head_dim is the q_norm size, so the query heads are embed_dim / head_dim and the K/V
    heads are k_proj rows / head_dim. The bit counts are half the head rows (2 logits per
    bit). ``norm_eps`` and ``rope_theta`` keep their defaults because no tensor stores them.
    """
    shapes = _normalize_shapes(shapes)
    _reject_other_model(list(shapes))

    layout = detect_block_layout(shapes, depth, block_chunks)
    block = _first_block_shapes(shapes)

    head_dim = _required_shape(block, "attn.q_norm.weight", "head_dim")[0]
    embed_dim = _required_shape(block, "attn.q_proj.weight", "the width")[1]
    kv_rows = _required_shape(block, "attn.k_proj.weight", "the K/V heads")[0]
    mlp_hidden = _required_shape(block, "mlp.gate_proj.weight", "the MLP width")[0]
    text_maxlen, text_channels = _required_shape(shapes, "cfg_uncond", "the text size")
    code_dim = _required_shape(shapes, "word_embed.weight", "the code width")[1]
    detail_rows = _required_shape(shapes, "head.weight", "the detail bits")[0]
    semantic_rows = _required_shape(shapes, "semantic_head2.weight", "the semantic bits")[0]

    if embed_dim % head_dim or kv_rows % head_dim:
        raise ValueError(
            f"q_norm size {head_dim} does not divide the width {embed_dim} or the k_proj rows "
            f"{kv_rows}; this is not an InfinityStar transformer ({EXPECTED_TRANSFORMER_FILES})"
        )
    if detail_rows % 2 or semantic_rows % 2:
        raise ValueError(
            f"head rows {detail_rows} and semantic_head2 rows {semantic_rows} must be even "
            "(2 logits per bit); this is not an InfinityStar transformer"
        )

    return TransformerConfig(
        embed_dim=embed_dim,
        depth=layout.depth,
        num_heads=embed_dim // head_dim,
        num_kv_heads=kv_rows // head_dim,
        mlp_hidden=mlp_hidden,
        text_channels=text_channels,
        text_maxlen=text_maxlen,
        code_dim=code_dim,
        semantic_bits=semantic_rows // 2,
        detail_bits=detail_rows // 2,
        block_chunks=layout.block_chunks,
    )


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def build_transformer_on_meta(config: TransformerConfig) -> InfinityStarTransformer:
    """Build the transformer on the meta device: parameters have shapes but no memory."""
    with torch.device("meta"):
        return InfinityStarTransformer(config)


def expected_transformer_shapes(
    config: TransformerConfig, style: str = "reference"
) -> dict[str, tuple[int, ...]]:
    """Return name -> shape of every tensor the model needs, named in layout ``style``.

    The names and shapes come from ``InfinityStarTransformer`` itself (built on the meta
    device), so they follow the model when it changes.
    """
    if style not in ("reference", "flat"):
        raise ValueError(f"layout style {style!r} is invalid: use 'reference' or 'flat'")

    model = build_transformer_on_meta(config)
    blocks_per_chunk = config.depth // config.block_chunks
    shapes = {}
    for name, tensor in model.state_dict().items():
        key = flat_to_reference_key(name, blocks_per_chunk) if style == "reference" else name
        shapes[key] = tuple(tensor.shape)
    return shapes


def _describe_config(config: TransformerConfig) -> str:
    return (
        f"depth {config.depth} in {config.block_chunks} chunks, width {config.embed_dim}, "
        f"{config.num_heads} heads / {config.num_kv_heads} K/V heads, MLP {config.mlp_hidden}, "
        f"text {config.text_channels}"
    )


def _list_names(names: Sequence[str]) -> str:
    listed = ", ".join(names[:LISTED_KEYS])
    if len(names) > LISTED_KEYS:
        listed += f", ... and {len(names) - LISTED_KEYS} more"
    return listed


def describe_key_mismatch(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """Return one line per kind of problem (missing, unexpected, mis-shaped); empty if none."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    misshaped = [
        f"{key} {list(found[key])} (expected {list(shape)})"
        for key, shape in expected.items()
        if key in found and tuple(found[key]) != tuple(shape)
    ]

    lines = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if names:
            lines.append(f"{len(names)} {label}: {_list_names(names)}")
    return lines


def validate_transformer_shapes(
    shapes: Mapping[str, Any], config: TransformerConfig | None = None, source: Any = None
) -> TransformerConfig:
    """Check every tensor name and shape against the transformer; return the config used.

    ``config`` defaults to the one inferred from ``shapes``. Raises ValueError that lists
    the missing, unexpected and mis-shaped tensors (the first few of each, with counts).
    """
    shapes = _normalize_shapes(shapes)
    _reject_other_model(list(shapes), source)
    if config is None:
        config = config_from_state_dict(shapes)

    style = detect_block_layout(shapes, config.depth, config.block_chunks).style
    expected = expected_transformer_shapes(config, style)
    problems = describe_key_mismatch(expected, shapes)
    if problems:
        where = f"{source}: " if source is not None else ""
        raise ValueError(
            f"{where}checkpoint does not match the InfinityStar transformer "
            f"({_describe_config(config)}; {len(expected)} tensors expected, {len(shapes)} found): "
            + "; ".join(problems)
            + f". {EXPECTED_TRANSFORMER_FILES}"
        )
    return config


# ---------------------------------------------------------------------------------------
# Reading checkpoint files
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorEntry:
    """Location of one checkpoint tensor: a safetensors file, or memory (torch files)."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None
    file: Path | None = None
    tensor: torch.Tensor | None = None


class LazyStateDict(Mapping[str, torch.Tensor]):
    """A checkpoint's tensors, read from disk on access, one tensor per access.

    Safetensors files stay memory-mapped until ``close()`` (or the end of a ``with``
    block). Tensors of torch files were loaded by ``torch.load(mmap=True)`` where the file
    format allows it and are returned as stored.
    """

    def __init__(self, source: Path, entries: dict[str, TensorEntry], metadata: dict[str, str]):
        self.source = source
        self.metadata = metadata
        self._entries = entries
        self._handles: dict[Path, Any] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        entry = self._entries[key]
        if entry.tensor is not None:
            return entry.tensor
        return self._handle(entry.file).get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __enter__(self) -> "LazyStateDict":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: entry.shape for key, entry in self._entries.items()}

    def dtypes(self) -> dict[str, torch.dtype | None]:
        return {key: entry.dtype for key, entry in self._entries.items()}

    def meta_tensors(self) -> dict[str, torch.Tensor]:
        """Return name -> a meta-device tensor of the stored shape and dtype (no data read)."""
        return {
            key: torch.empty(entry.shape, dtype=entry.dtype or torch.float32, device="meta")
            for key, entry in self._entries.items()
        }

    def files(self) -> list[Path]:
        return sorted({entry.file for entry in self._entries.values() if entry.file is not None})

    def close(self) -> None:
        self._handles.clear()

    def _handle(self, path: Path):
        if path not in self._handles:
            self._handles[path] = _open_safetensors(path)
        return self._handles[path]


def _open_safetensors(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"cannot read {path}: {error}. The file is damaged, incomplete or not a "
            "safetensors file; download it again"
        ) from error


def _safetensors_entries(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Read the header of one safetensors file: name -> entry, and its metadata."""
    handle = _open_safetensors(path)
    entries = {}
    for key in handle.keys():
        view = handle.get_slice(key)
        dtype = _SAFETENSORS_DTYPES.get(view.get_dtype())
        entries[key] = TensorEntry(tuple(view.get_shape()), dtype, file=path)
    return entries, dict(handle.metadata() or {})


def _read_single_safetensors(path: Path) -> LazyStateDict:
    entries, metadata = _safetensors_entries(path)
    return LazyStateDict(path, entries, metadata)


def _read_shard_index(index_path: Path) -> dict[str, str]:
    """Return the weight map (tensor name -> shard file name) of a shard index."""
    try:
        index = json.loads(index_path.read_text())
        weight_map = index["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"{index_path} is not a valid shard index (JSON with a 'weight_map' object): {error}"
        ) from error
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path} has an empty or invalid 'weight_map'")
    return weight_map


def _read_sharded_safetensors(index_path: Path) -> LazyStateDict:
    """Read a shard index and the headers of all its shards; no tensor data is read."""
    folder = index_path.parent
    weight_map = _read_shard_index(index_path)
    shard_names = sorted(set(weight_map.values()))

    missing = [name for name in shard_names if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"incomplete checkpoint in {folder}: {len(missing)} of the {len(shard_names)} shard "
            f"files listed in {index_path.name} are missing: {', '.join(missing)}. "
            "Download the missing shards into the same folder"
        )

    entries: dict[str, TensorEntry] = {}
    metadata: dict[str, str] = {}
    for name in shard_names:
        shard_entries, shard_metadata = _safetensors_entries(folder / name)
        entries.update(shard_entries)
        metadata.update(shard_metadata)

    absent = [key for key, name in weight_map.items() if key not in entries]
    if absent:
        raise ValueError(
            f"{index_path} lists {len(absent)} tensors that its shards do not contain "
            f"({_list_names(absent)}); the shards are from another download or damaged. "
            "Download the folder again"
        )
    return LazyStateDict(folder, entries, metadata)


def load_torch_weights(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``; a file that needs full unpickling is rejected.

    Memory-maps the file when its format allows (torch >= 1.6 zip files).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} cannot be read safely: it stores Python objects besides tensors, and "
            "FastSTAR only loads torch files with weights_only=True (it never unpickles "
            "arbitrary objects). Re-save its state dict with torch.save(model.state_dict()) "
            "in code you trust, or convert it to .safetensors there"
        ) from error
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise ValueError(f"{path} is not a readable torch checkpoint: {error}") from error

    logger.debug("%s is in the legacy torch format; reading it without mmap", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} cannot be read safely: it stores Python objects besides tensors "
            "(weights_only=True failed). Re-save its state dict in code you trust"
        ) from error
    except (KeyError, EOFError, RuntimeError, ValueError) as error:
        raise ValueError(f"{path} is not a readable torch checkpoint ({error!r}): the file is damaged "
                         "or not a torch.save file") from error


def _unwrap_torch_checkpoint(obj: Any, kind: str, path: Path) -> Mapping:
    """Return the state dict inside a torch checkpoint object.

    kind 'transformer': ``obj['trainer']['gpt_fsdp']`` when present (a training
    checkpoint). kind 'vae': ``obj['vae']`` (the released layout; 'ema' is ignored).
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} contains a {type(obj).__name__}, not a state dict")

    if kind == "transformer" and isinstance(obj.get("trainer"), Mapping):
        trainer = obj["trainer"]
        if not isinstance(trainer.get("gpt_fsdp"), Mapping):
            raise ValueError(
                f"{path} is a training checkpoint without ['trainer']['gpt_fsdp'] "
                f"(entries: {sorted(trainer)[:6]})"
            )
        return trainer["gpt_fsdp"]
    if kind == "vae" and isinstance(obj.get("vae"), Mapping):
        return obj["vae"]
    return obj


def _read_torch_file(path: Path, kind: str) -> LazyStateDict:
    state = _unwrap_torch_checkpoint(load_torch_weights(path), kind, path)

    entries = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                f"expected a state dict of tensors"
            )
        entries[key] = TensorEntry(tuple(value.shape), value.dtype, tensor=value)
    return LazyStateDict(path, entries, {})


def _checkpoint_kind_of_file(path: Path) -> str:
    """Return 'sharded', 'safetensors' or 'torch' for a checkpoint path; raise if unsupported."""
    if path.name.endswith(".index.json"):
        return "sharded"
    if path.suffix == ".safetensors":
        return "safetensors"
    if path.suffix in TORCH_SUFFIXES:
        return "torch"
    raise ValueError(
        f"{path} has an unsupported file type {path.suffix!r}: use a .safetensors file, "
        f"a {SHARD_INDEX_NAME} (or its folder) or a torch {'/'.join(TORCH_SUFFIXES)} file"
    )


def _resolve_folder(folder: Path) -> Path:
    """Return the index or the single .safetensors file that a checkpoint folder contains."""
    index = folder / SHARD_INDEX_NAME
    if index.is_file():
        return index

    files = sorted(folder.glob("*.safetensors"))
    if len(files) == 1:
        return files[0]
    if not files:
        raise FileNotFoundError(
            f"folder {folder} contains neither {SHARD_INDEX_NAME} nor a .safetensors file; "
            f"{EXPECTED_TRANSFORMER_FILES}"
        )
    raise ValueError(
        f"folder {folder} contains {len(files)} .safetensors files but no {SHARD_INDEX_NAME}, "
        "so it is unclear which of them form one checkpoint; pass one file, or restore the index"
    )


def read_state_dict(path: "str | Path", kind: str = "transformer") -> LazyStateDict:
    """Open any supported checkpoint layout as a ``LazyStateDict``; no key checks.

    ``kind`` ('transformer' or 'vae') only chooses how a torch training checkpoint is
    unwrapped (``['trainer']['gpt_fsdp']`` or ``['vae']``).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        path = _resolve_folder(path)

    file_kind = _checkpoint_kind_of_file(path)
    if file_kind == "sharded":
        return _read_sharded_safetensors(path)
    if file_kind == "safetensors":
        return _read_single_safetensors(path)
    return _read_torch_file(path, kind)


def read_transformer_state_dict(path: "str | Path") -> LazyStateDict:
    """Open a transformer checkpoint and check every tensor name and shape.

    Returns a ``LazyStateDict`` in the checkpoint's own naming (reference or flat layout).
    Raises FileNotFoundError for a missing path or shard and ValueError for anything that
    is not a complete InfinityStar transformer.
    """
    state = read_state_dict(path, kind="transformer")
    try:
        validate_transformer_shapes(state.shapes(), source=Path(path))
    except ValueError:
        state.close()
        raise
    return state


def looks_like_vae(keys: Iterable[str]) -> bool:
    """Return True when a key set has the InfinityStar VAE's decoder and projection names."""
    keys = set(keys)
    return "decoder.conv_in.conv.weight" in keys and "proj_up.weight" in keys


def read_vae_state_dict(path: "str | Path") -> LazyStateDict:
    """Open a VAE checkpoint (released .pth or one .safetensors file).

    Raises ValueError when the file is the transformer or another model. The full key and
    shape check happens when the VAE is built (``load_vae``).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a folder; the VAE is one file: {EXPECTED_VAE_FILES}")

    state = read_state_dict(path, kind="vae")
    keys = list(state)
    if looks_like_vae(keys):
        return state

    state.close()
    if looks_like_transformer(keys):
        raise ValueError(f"{path} is the InfinityStar transformer, not the VAE; {EXPECTED_VAE_FILES}")
    sample = ", ".join(repr(key) for key in sorted(keys)[:3]) or "none"
    raise ValueError(
        f"{path} is not the InfinityStar video VAE: it has no 'decoder.conv_in.conv.weight' "
        f"and 'proj_up.weight' ({len(keys)} tensors, for example {sample}); {EXPECTED_VAE_FILES}"
    )


# ---------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    """Description of the checkpoint ``load_transformer`` loaded.

    ``resolution`` is '720p', '480p', or None when neither the file metadata nor the
    folder name shows it (the two releases have identical shapes, so callers must ask).
    ``dtype`` is the dtype of the blocks; the other parameters are float32.
    """

    config: TransformerConfig
    resolution: str | None
    source: Path
    dtype: torch.dtype
    parameter_count: int


def check_resolution(resolution: str | None) -> str | None:
    """Return a valid resolution name ('720p', '480p') or None; raise ValueError otherwise."""
    if resolution is None:
        return None
    value = str(resolution).lower()
    if value not in RESOLUTIONS:
        raise ValueError(f"resolution {resolution!r} is invalid: use '720p' or '480p'")
    return value


def detect_resolution(path: "str | Path", metadata: Mapping[str, str] | None = None) -> str | None:
    """Return '720p' or '480p' from the metadata, else from the name; None when neither shows it.

    The metadata key ``faststar.resolution`` (written by the converter) wins. Otherwise the
    folder or file name must contain exactly one of '720p' and '480p', as in the released
    ``infinitystar_8b_720p_weights``.
    """
    value = (metadata or {}).get(RESOLUTION_METADATA_KEY)
    if value:
        if value.lower() in RESOLUTIONS:
            return value.lower()
        logger.warning("ignoring invalid %s=%r in %s", RESOLUTION_METADATA_KEY, value, path)

    path = Path(path)
    name = path.parent.name if path.name == SHARD_INDEX_NAME else path.name
    found = {match.lower() + "p" for match in _RESOLUTION_IN_NAME.findall(name)}
    return found.pop() if len(found) == 1 else None


def is_block_key(name: str) -> bool:
    """Return True for a tensor of a transformer block, in either layout."""
    return bool(_FLAT_BLOCK_KEY.match(name) or _REFERENCE_BLOCK_KEY.match(name))


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace parameter ``name`` (for example ``blocks.3.attn.q_proj.weight``) by ``tensor``."""
    module_name, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    setattr(module, attribute, nn.Parameter(tensor, requires_grad=False))


def materialise_transformer(
    model: InfinityStarTransformer,
    state: Mapping[str, torch.Tensor],
    block_dtype: torch.dtype,
    device: "str | torch.device",
) -> None:
    """Fill a meta-device model with the tensors of a checked state dict, one at a time.

    Block parameters become ``block_dtype``; the others float32, like the reference.
    ``state`` may use either layout.
    """
    config = model.config
    style = detect_block_layout(state, config.depth, config.block_chunks).style
    blocks_per_chunk = config.depth // config.block_chunks

    for name, _ in list(model.named_parameters()):
        key = flat_to_reference_key(name, blocks_per_chunk) if style == "reference" else name
        dtype = block_dtype if is_block_key(name) else torch.float32
        _set_parameter(model, name, state[key].to(device=device, dtype=dtype))

    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise RuntimeError(f"tensors left on the meta device after loading: {_list_names(left)}")


def load_transformer(
    path: "str | Path",
    dtype: "torch.dtype | str" = torch.bfloat16,
    device: "str | torch.device" = "cpu",
    resolution: str | None = None,
) -> tuple[InfinityStarTransformer, CheckpointInfo]:
    """Load an InfinityStar transformer checkpoint into ``InfinityStarTransformer``.

    Checks every tensor first, builds the model on the meta device and then assigns the
    tensors one by one, converted to ``dtype`` (blocks) or float32 (everything else), on
    ``device``. ``resolution`` overrides what the metadata or folder name shows. Returns the
    model in eval mode with gradients off, and its ``CheckpointInfo``.
    """
    block_dtype = parse_dtype(dtype)
    resolution = check_resolution(resolution)
    source = Path(path).expanduser()

    with read_transformer_state_dict(source) as state:
        config = config_from_state_dict(state.shapes())
        model = build_transformer_on_meta(config)
        materialise_transformer(model, state, block_dtype, device)
        resolution = resolution or detect_resolution(source, state.metadata)

    model.eval()
    model.requires_grad_(False)
    info = CheckpointInfo(
        config=config,
        resolution=resolution,
        source=source,
        dtype=block_dtype,
        parameter_count=sum(parameter.numel() for parameter in model.parameters()),
    )
    logger.info(
        "loaded InfinityStar transformer from %s: %s, %s parameters, blocks in %s, resolution %s",
        source, _describe_config(config), format_count(info.parameter_count), dtype_name(block_dtype),
        resolution or "unknown",
    )
    return model, info


def load_vae(path: "str | Path", device: "str | torch.device" = "cpu"):
    """Load the InfinityStar video VAE (float32, eval mode) with strict key checking.

    Reads the released ``infinitystar_videovae.pth`` (``torch.load(weights_only=True)``,
    entry 'vae') or one .safetensors file. Raises ValueError naming the missing,
    unexpected or mis-shaped tensors when the file is not this VAE.
    """
    from .vae import InfinityStarVAE

    source = Path(path).expanduser()
    with read_vae_state_dict(source) as state:
        tensors = dict(state.items())

    try:
        return InfinityStarVAE.from_state_dict(tensors, device=torch.device(device))
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error


def format_count(count: int) -> str:
    """Format a parameter count in billions (8B model) or millions (demo model)."""
    return f"{count / 1e9:.3f}B" if count >= 1e8 else f"{count / 1e6:.3f}M"
