"""Shared pytest fixtures: the reference fixture folder and its manifest."""

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "infinitystar_reference"


def reference_dir() -> Path:
    """Return the reference fixture folder: $FASTSTAR_REFERENCE_DIR or the shared default."""
    return Path(os.environ.get("FASTSTAR_REFERENCE_DIR", DEFAULT_REFERENCE_DIR))


@pytest.fixture(scope="session")
def ref_dir() -> Path:
    path = reference_dir()
    if not (path / "manifest.json").is_file():
        pytest.fail(
            f"reference fixtures not found in {path}: set FASTSTAR_REFERENCE_DIR "
            "to a folder that contains manifest.json"
        )
    return path


@pytest.fixture(scope="session")
def manifest(ref_dir) -> dict:
    with open(ref_dir / "manifest.json") as f:
        return json.load(f)
