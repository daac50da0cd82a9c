"""Convert an InfinityStar checkpoint into one .safetensors file (``python -m faststar convert``).

The transformer (released shard folder, one .safetensors file or a torch state dict) or
the video VAE (``infinitystar_videovae.pth``) is checked key by key and written tensor by
tensor, so the conversion needs about one tensor of memory, not one model. Floating
tensors are converted to the chosen dtype, except the transformer's tensors outside the
blocks (``text_proj``, ``word_embed``, ``head``, ``semantic_head2``, ``cfg_uncond``,
``sos_token``, ``norm_hidden_sates``), which stay float32 as the reference keeps them.
Tensor names are copied unchanged.

The output goes to a temporary file in the destination folder that is renamed at the
end, so a failed or cancelled conversion leaves no partial file behind.
"""

import argparse
import errno
import json
import logging
import os
import shutil
import struct
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import (
    LazyStateDict,
    RESOLUTION_METADATA_KEY,
    check_resolution,
    detect_resolution,
    dtype_name,
    is_block_key,
    looks_like_transformer,
    looks_like_vae,
    parse_dtype,
    read_state_dict,
    read_transformer_state_dict,
    read_vae_state_dict,
)

logger = logging.getLogger(__name__)

KINDS = ("transformer", "vae")

# safetensors dtype names (format specification of the safetensors package).
_SAFETENSORS_DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

# Headroom the free-space check adds to the file size, for the header and file system.
_SPACE_MARGIN_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class TensorPlan:
    """One tensor of the output file: its name, shape and the dtype it is written in."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * self.dtype.itemsize


def detect_kind(src: "str | Path") -> str:
    """Return 'transformer' or 'vae' for a checkpoint path, from its tensor names."""
    with read_state_dict(src, kind="vae") as state:
        keys = list(state)
    if looks_like_vae(keys):
        return "vae"
    if looks_like_transformer(keys):
        return "transformer"

    with read_state_dict(src, kind="transformer") as state:
        if looks_like_transformer(list(state)):
            return "transformer"
    raise ValueError(
        f"{src} is neither the InfinityStar transformer nor its video VAE (no tensor has their "
        "names); pass the released infinitystar_8b_*_weights folder or infinitystar_videovae.pth"
    )


def plan_tensors(state: LazyStateDict, kind: str, dtype: torch.dtype) -> list[TensorPlan]:
    """Choose the output dtype of every tensor, in the order of the source."""
    plans = []
    for name, source_dtype in state.dtypes().items():
        if source_dtype is None or not source_dtype.is_floating_point:
            target = source_dtype
        elif kind == "transformer" and not is_block_key(name):
            target = torch.float32
        else:
            target = dtype
        if target not in _SAFETENSORS_DTYPE_NAMES:
            raise ValueError(f"tensor {name!r} has dtype {source_dtype}, which this converter cannot write")
        plans.append(TensorPlan(name, state.shapes()[name], target))
    return plans


def _source_dtype_label(state: LazyStateDict) -> str:
    """Return the floating dtype(s) of the source, for example 'float32' or 'bfloat16,float32'."""
    dtypes = state.dtypes().values()
    names = {dtype_name(dtype) for dtype in dtypes if dtype is not None and dtype.is_floating_point}
    return ",".join(sorted(names)) or "none"


def safetensors_header(plans: list[TensorPlan], metadata: Mapping[str, str]) -> bytes:
    """Return the length prefix and JSON header of a safetensors file holding ``plans`` in order.

    The header is padded with spaces to a multiple of 8 bytes, as the safetensors package
    writes it, so the tensor data that follows is 8-byte aligned.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for plan in plans:
        header[plan.name] = {
            "dtype": _SAFETENSORS_DTYPE_NAMES[plan.dtype],
            "shape": list(plan.shape),
            "data_offsets": [offset, offset + plan.nbytes],
        }
        offset += plan.nbytes

    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """Return the raw little-endian bytes of a CPU tensor in C order."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def _write_tensors(
    handle, state: LazyStateDict, plans: list[TensorPlan], metadata: Mapping[str, str]
) -> None:
    handle.write(safetensors_header(plans, metadata))
    for index, plan in enumerate(plans, start=1):
        tensor = state[plan.name].to(plan.dtype)
        if tuple(tensor.shape) != plan.shape:
            raise ValueError(
                f"tensor {plan.name!r} has shape {tuple(tensor.shape)} but its header declares "
                f"{plan.shape}; the source file is damaged"
            )
        handle.write(_tensor_bytes(tensor))
        logger.debug("wrote %s (%d/%d)", plan.name, index, len(plans))


def _check_free_space(folder: Path, needed: int, dst: Path) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + _SPACE_MARGIN_BYTES:
        raise OSError(
            errno.ENOSPC,
            f"not enough free disk space to write {dst}: it needs {needed / 1e9:.2f} GB and "
            f"{folder} has {free / 1e9:.2f} GB free; free some space or choose another folder",
        )


def _disk_full_error(error: OSError, dst: Path) -> OSError:
    return OSError(
        error.errno,
        f"the disk filled up while writing {dst} ({error.strerror}); nothing was written. "
        "Free some space or choose another folder, then convert again",
    )


def write_safetensors_atomically(
    dst: Path, state: LazyStateDict, plans: list[TensorPlan], metadata: Mapping[str, str]
) -> None:
    """Stream ``plans`` from ``state`` into ``dst`` through a temporary file in its folder.

    The temporary file is renamed to ``dst`` only after everything was written and flushed
    to disk; on any error or interruption it is deleted.
    """
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian, so the converter needs a little-endian machine")

    temporary = dst.parent / f".{dst.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
    try:
        with open(temporary, "xb") as handle:
            _write_tensors(handle, state, plans, metadata)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, dst)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full_error(error, dst) from error
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    if dst.suffix != ".safetensors":
        raise ValueError(f"destination {dst} must end in .safetensors")
    if dst.is_dir():
        raise IsADirectoryError(f"destination {dst} is a folder; give a file name ending in .safetensors")
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"destination folder {dst.parent} does not exist; create it first")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"source and destination are the same file ({dst}); choose another destination")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} already exists; pass overwrite=True (--overwrite) to replace it")


def _open_checked(src: Path, kind: str) -> LazyStateDict:
    """Open ``src`` as ``kind`` and check every key against the model."""
    if kind == "transformer":
        return read_transformer_state_dict(src)

    state = read_vae_state_dict(src)
    try:
        _validate_vae_keys(state)
    except ValueError:
        state.close()
        raise
    return state


def _validate_vae_keys(state: LazyStateDict) -> None:
    """Check the VAE tensors against ``InfinityStarVAE`` built on the meta device."""
    from .vae import InfinityStarVAE, VAEConfig, validate_state_dict

    shapes = state.meta_tensors()
    try:
        config = VAEConfig.from_state_dict(shapes)
        with torch.device("meta"):
            model = InfinityStarVAE(config)
        validate_state_dict(model, shapes)
    except ValueError as error:
        raise ValueError(f"{state.source}: {error}") from error


def convert_checkpoint(
    src: "str | Path",
    dst: "str | Path",
    dtype: "str | torch.dtype" = "bf16",
    kind: str = "auto",
    overwrite: bool = False,
    resolution: str | None = None,
) -> Path:
    """Write the checkpoint ``src`` as one .safetensors file ``dst`` and return ``dst``.

    ``kind`` is 'transformer', 'vae' or 'auto' (from the tensor names). ``dtype`` applies to
    floating tensors, except the transformer's float32 tensors outside the blocks. The
    metadata contains ``format=pt``, ``faststar.kind``, ``faststar.dtype``,
    ``faststar.source_dtype`` and, for a transformer whose resolution is given or shown by
    the source's name or metadata, ``faststar.resolution``. Raises FileExistsError when ``dst``
    exists and ``overwrite`` is False.
    """
    src = Path(src).expanduser()
    dst = Path(dst).expanduser()
    target_dtype = parse_dtype(dtype)
    resolution = check_resolution(resolution)
    if kind not in (*KINDS, "auto"):
        raise ValueError(f"kind {kind!r} is invalid: use 'transformer', 'vae' or 'auto'")

    _check_destination(src, dst, overwrite)
    if kind == "auto":
        kind = detect_kind(src)

    with _open_checked(src, kind) as state:
        plans = plan_tensors(state, kind, target_dtype)
        metadata = {
            "format": "pt",
            "faststar.kind": kind,
            "faststar.dtype": dtype_name(target_dtype),
            "faststar.source_dtype": _source_dtype_label(state),
        }
        if kind == "transformer":
            resolution = resolution or detect_resolution(src, state.metadata)
            if resolution:
                metadata[RESOLUTION_METADATA_KEY] = resolution

        total = sum(plan.nbytes for plan in plans)
        _check_free_space(dst.parent, total, dst)
        logger.info("converting %s (%s, %d tensors, %.2f GB) to %s", src, kind, len(plans), total / 1e9, dst)
        write_safetensors_atomically(dst, state, plans, metadata)

    logger.info("wrote %s", dst)
    return dst


# ---------------------------------------------------------------------------------------
# Command line: python -m faststar convert
# ---------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src",
        help="source checkpoint: the released infinitystar_8b_720p_weights/ (or _480p_) folder, "
        "infinitystar_videovae.pth, a .safetensors file or a torch .pth state dict",
    )
    parser.add_argument("dst", help="output file, ending in .safetensors")
    parser.add_argument(
        "--dtype",
        choices=("bf16", "fp16", "fp32"),
        default="bf16",
        help="dtype of the written floating tensors (default: bf16); the transformer's "
        "tensors outside the blocks stay fp32",
    )
    parser.add_argument(
        "--kind",
        choices=("auto", *KINDS),
        default="auto",
        help="what the source is (default: auto, from its tensor names)",
    )
    parser.add_argument(
        "--resolution",
        choices=("720p", "480p"),
        default=None,
        help="record which release the transformer is; by default it is read from the source "
        "folder name or metadata, and left out when neither shows it",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace dst if it exists")


def run(args: argparse.Namespace) -> int:
    dst = convert_checkpoint(
        args.src,
        args.dst,
        dtype=args.dtype,
        kind=args.kind,
        overwrite=args.overwrite,
        resolution=args.resolution,
    )
    print(f"wrote {dst} ({dst.stat().st_size / 1e9:.3f} GB)")
    return 0
