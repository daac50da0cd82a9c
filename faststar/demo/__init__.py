"""The demo model: a small InfinityStar trained here on procedural videos of moving shapes.

``load_demo()`` loads the shipped weights (transformer, VAE, text encoder) through the
same loaders as the released checkpoints and returns them with the name of the 'demo'
generation preset. See MODEL_CARD.md for the data, sizes, training and results.
"""

from .preset import DEMO_PRESET, PRESET_NAME, register_demo_preset
from .weights import WEIGHTS_DIR, DemoModel, load_demo

__all__ = ["DEMO_PRESET", "PRESET_NAME", "WEIGHTS_DIR", "DemoModel", "load_demo", "register_demo_preset"]
