"""FastSTAR engine: InfinityStar inference and spatiotemporal token pruning.

This package does not import ComfyUI. The node pack in ``nodes/`` calls it.
"""

__version__ = "0.1.0"
