"""Session fixtures of the host tests: one real ComfyUI server for all of them."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from . import harness, tiny_models
from .server import ComfyServer


@pytest.fixture(scope="session")
def host(ref_dir, tmp_path_factory):
    """A ComfyUI server on 127.0.0.1 with this pack and the tiny models; skipped without COMFYUI_PATH."""
    root = harness.require_comfyui()
    work = Path(tmp_path_factory.mktemp("host"))
    models = work / "models"
    names = tiny_models.build_models_folder(models, ref_dir, root, tiny_models.tiny_text_channels(ref_dir))

    server = ComfyServer(root, work, models)
    server.start()
    try:
        yield SimpleNamespace(server=server, models=models, **names)
    finally:
        server.stop()
