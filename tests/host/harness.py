"""Shared set-up for tests that need ComfyUI: finding it, importing it, loading the pack.

ComfyUI is found through the COMFYUI_PATH environment variable (a ComfyUI checkout whose
requirements scripts/setup_comfyui_host.sh installed). When it is unset or the folder is
missing, every test that needs it is skipped with a reason that names the cause.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Module name under which the tests import the pack, as ComfyUI would import a folder.
PACK_MODULE_NAME = "faststar_comfyui_pack"
# Folder that setup_comfyui_host.sh fills when the python has no working torchvision.
HOST_SITE_FOLDER = "faststar_host_site"


def comfyui_path() -> Path | None:
    """Return the ComfyUI folder named by COMFYUI_PATH, or None when unset."""
    value = os.environ.get("COMFYUI_PATH", "").strip()
    return Path(value).expanduser().resolve() if value else None


def comfyui_skip_reason() -> str | None:
    """Return why ComfyUI tests cannot run here, or None when they can."""
    path = comfyui_path()
    if path is None:
        return "COMFYUI_PATH is not set: point it at a ComfyUI checkout prepared by scripts/setup_comfyui_host.sh"
    if not (path / "main.py").is_file():
        return f"COMFYUI_PATH={path} is not a ComfyUI folder (no main.py)"
    return None


def require_comfyui() -> Path:
    """Skip the calling test when ComfyUI is unavailable; return its folder otherwise."""
    reason = comfyui_skip_reason()
    if reason:
        pytest.skip(reason)
    return comfyui_path()


def host_site_dir(root: Path) -> Path | None:
    """The torchvision folder the setup script wrote, when it wrote one."""
    site = root / HOST_SITE_FOLDER
    return site if site.is_dir() else None


def host_pythonpath(root: Path) -> str:
    """PYTHONPATH for a ComfyUI server process: the host site folder, then the caller's path."""
    parts = []
    site = host_site_dir(root)
    if site is not None:
        parts.append(str(site))
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


def _load_host_site(root: Path) -> None:
    site = host_site_dir(root)
    if site is None:
        return
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    if "faststar_host_sitecustomize" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("faststar_host_sitecustomize", site / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


def import_comfyui(output_dir: Path, temp_dir: Path):
    """Import ComfyUI in this process on the CPU and point its output and temp folders at tmp.

    comfy.cli_args.args.cpu must be set before comfy.model_management is imported, or
    ComfyUI looks for a CUDA device. Returns the folder_paths module.
    """
    root = require_comfyui()
    _load_host_site(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))

    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu on purpose)
    import folder_paths

    folder_paths.set_output_directory(str(output_dir))
    folder_paths.set_temp_directory(str(temp_dir))
    return folder_paths


def load_pack():
    """Import the repository as a ComfyUI pack (module PACK_MODULE_NAME) and its nodes package."""
    if PACK_MODULE_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK_MODULE_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_MODULE_NAME] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{PACK_MODULE_NAME}.nodes")
