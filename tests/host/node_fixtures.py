"""pytest fixtures for in-process node tests: ComfyUI imported on the CPU, the pack, tiny models.

Test modules import the fixtures they use from here; pytest then finds them by name.
"""

from pathlib import Path
from types import SimpleNamespace

import pytest

from . import harness, tiny_models


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """ComfyUI imported in this process, with output and temp folders under tmp."""
    root = harness.require_comfyui()
    base = tmp_path_factory.mktemp("comfy")
    output_dir, temp_dir = base / "output", base / "temp"
    output_dir.mkdir()
    temp_dir.mkdir()
    folder_paths = harness.import_comfyui(output_dir, temp_dir)
    return SimpleNamespace(root=root, folder_paths=folder_paths, output_dir=output_dir, temp_dir=temp_dir)


@pytest.fixture(scope="session")
def pack(comfy):
    """The pack's nodes package, imported as ComfyUI imports a custom node folder."""
    return harness.load_pack()


@pytest.fixture(scope="session")
def tiny(comfy, pack, ref_dir, tmp_path_factory):
    """A models folder with the tiny models, registered first in ComfyUI's folder lists."""
    models_dir = tmp_path_factory.mktemp("models")
    channels = tiny_models.tiny_text_channels(ref_dir)
    names = tiny_models.build_models_folder(models_dir, ref_dir, comfy.root, channels)
    for folder in ("infinitystar", "vae", "text_encoders"):
        comfy.folder_paths.add_model_folder_path(folder, str(models_dir / folder), is_default=True)
    return SimpleNamespace(models_dir=Path(models_dir), text_channels=channels, **names)
