"""Model folders of the pack and the lists the loader nodes offer.

The InfinityStar release is a model repository with the transformer as a folder of
safetensors shards, the VAE as a .pth file and Flan-T5-XL as a Hugging Face folder.
ComfyUI's ``get_filename_list`` lists files only, so folders are listed here. Each loader
also offers the demo model, whose weights ship inside the pack (``faststar/demo/weights``).

Where each loader looks:

| loader | folder names (``models/<name>`` plus extra_model_paths.yaml) |
|---|---|
| transformer | ``infinitystar`` |
| VAE | ``infinitystar``, ``vae`` |
| text encoder | ``infinitystar``, ``text_encoders`` |
"""

import logging
import os

import folder_paths

from ..faststar.demo import weights as demo_weights

logger = logging.getLogger(__name__)

TRANSFORMER_FOLDER = "infinitystar"
VAE_FOLDERS = ("infinitystar", "vae")
TEXT_ENCODER_FOLDERS = ("infinitystar", "text_encoders")

SHARD_INDEX_NAME = "model.safetensors.index.json"
TRANSFORMER_EXTENSIONS = {".safetensors"}
VAE_EXTENSIONS = {".pth", ".pt", ".safetensors"}
# Files a Hugging Face model folder contains beside its weights.
HF_CONFIG_NAME = "config.json"

# Folder depth below a base folder that the listings search for sharded and Hugging Face folders.
MAX_FOLDER_DEPTH = 3

# The loaders' first choice: the demo model shipped in faststar/demo/weights.
DEMO_CHOICE = "demo (bundled)"


def register_model_folders() -> None:
    """Add models/infinitystar to ComfyUI's folder registry, keeping paths from the YAML.

    extra_model_paths.yaml is applied before custom nodes are imported, so an entry
    ``infinitystar: some/dir`` may already exist. ``add_model_folder_path`` appends the
    default folder to it; the extension set is then replaced on the existing entry.
    """
    default_dir = os.path.join(folder_paths.models_dir, TRANSFORMER_FOLDER)
    folder_paths.add_model_folder_path(TRANSFORMER_FOLDER, default_dir)

    paths, _ = folder_paths.folder_names_and_paths[TRANSFORMER_FOLDER]
    folder_paths.folder_names_and_paths[TRANSFORMER_FOLDER] = (paths, set(TRANSFORMER_EXTENSIONS) | {".pth"})
    logger.debug("infinitystar model folders: %s", paths)


def _base_dirs(folder_names) -> list[str]:
    dirs = []
    for name in folder_names:
        if name not in folder_paths.folder_names_and_paths:
            continue
        for path in folder_paths.get_folder_paths(name):
            if os.path.isdir(path) and path not in dirs:
                dirs.append(path)
    return dirs


def _walk(base: str):
    """Yield (relative dir, dir names, file names) below base, at most MAX_FOLDER_DEPTH deep."""
    for root, dirs, files in os.walk(base, followlinks=True):
        relative = os.path.relpath(root, base)
        depth = 0 if relative == "." else relative.count(os.sep) + 1
        if depth >= MAX_FOLDER_DEPTH:
            dirs[:] = []
        dirs.sort()
        yield ("" if relative == "." else relative), dirs, sorted(files)


def _join(relative: str, name: str) -> str:
    return name if not relative else f"{relative}/{name}".replace(os.sep, "/")


def list_transformers() -> list[str]:
    """Sharded folders (with model.safetensors.index.json) and single .safetensors files."""
    entries = []
    for base in _base_dirs([TRANSFORMER_FOLDER]):
        for relative, _, files in _walk(base):
            if SHARD_INDEX_NAME in files:
                if relative:
                    entries.append(relative.replace(os.sep, "/"))
                continue
            if HF_CONFIG_NAME in files:
                continue  # a text encoder folder, not a transformer
            for name in files:
                if os.path.splitext(name)[1] in TRANSFORMER_EXTENSIONS and not _inside_sharded(base, relative):
                    entries.append(_join(relative, name))
    return sorted(set(entries))


def _inside_sharded(base: str, relative: str) -> bool:
    parts = relative.split(os.sep) if relative else []
    for end in range(len(parts), 0, -1):
        if os.path.isfile(os.path.join(base, *parts[:end], SHARD_INDEX_NAME)):
            return True
    return os.path.isfile(os.path.join(base, SHARD_INDEX_NAME))


def list_vaes() -> list[str]:
    """VAE weight files (.pth, .pt, .safetensors) outside sharded and Hugging Face folders."""
    entries = []
    for base in _base_dirs(VAE_FOLDERS):
        for relative, _, files in _walk(base):
            if SHARD_INDEX_NAME in files or HF_CONFIG_NAME in files or _inside_sharded(base, relative):
                continue
            for name in files:
                if os.path.splitext(name)[1] in VAE_EXTENSIONS:
                    entries.append(_join(relative, name))
    return sorted(set(entries))


def list_text_encoders() -> list[str]:
    """Hugging Face model folders (with config.json) that can hold Flan-T5."""
    entries = []
    for base in _base_dirs(TEXT_ENCODER_FOLDERS):
        for relative, _, files in _walk(base):
            if relative and HF_CONFIG_NAME in files:
                entries.append(relative.replace(os.sep, "/"))
    return sorted(set(entries))


def resolve(folder_names, name: str) -> str:
    """Return the full path of a listed entry, or raise FileNotFoundError naming the folders."""
    if not name or os.path.isabs(name) or ".." in name.split("/"):
        raise FileNotFoundError(f"invalid model name {name!r}: pick an entry from the list")
    bases = _base_dirs(folder_names)
    for base in bases:
        path = os.path.join(base, *name.split("/"))
        if os.path.exists(path):
            return path
    searched = ", ".join(bases) or ", ".join(f"models/{folder}" for folder in folder_names)
    raise FileNotFoundError(f"model {name!r} not found in {searched}: put it there or refresh the list")


def with_demo(entries: list[str]) -> list[str]:
    """Return a loader's choices: the bundled demo model first, then the listed entries."""
    return [DEMO_CHOICE, *entries]


def demo_file(file_name: str) -> str:
    """Return the path of one shipped demo weight file, or raise FileNotFoundError naming it."""
    path = demo_weights.WEIGHTS_DIR / file_name
    if not path.is_file():
        raise FileNotFoundError(
            f"the demo model file {path} is missing: reinstall the pack, or export the weights with "
            "`python -m faststar.demo.export`"
        )
    return str(path)


def resolve_transformer(name: str) -> str:
    """Return the path of a transformer choice: the demo's file or a listed entry."""
    if name == DEMO_CHOICE:
        return demo_file(demo_weights.TRANSFORMER_FILE)
    return resolve([TRANSFORMER_FOLDER], name)


def resolve_vae(name: str) -> str:
    """Return the path of a VAE choice: the demo's file or a listed entry."""
    if name == DEMO_CHOICE:
        return demo_file(demo_weights.VAE_FILE)
    return resolve(VAE_FOLDERS, name)
