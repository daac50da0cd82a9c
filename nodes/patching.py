"""ModelPatcher helpers: wrapping engine modules so ComfyUI loads, offloads and frees them."""

import logging

import comfy.model_management
import comfy.model_patcher
import torch

from ..faststar import checkpoints

logger = logging.getLogger(__name__)

DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")


def patcher_class():
    """Return the class core loaders use for new patchers.

    Newer ComfyUI rebinds ``comfy.model_patcher.CoreModelPatcher`` at start-up, so it is
    looked up at call time, not at import time.
    """
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def wrap(module: torch.nn.Module, load_device, offload_device):
    """Wrap an engine module in a ModelPatcher that moves it between the two devices."""
    return patcher_class()(module, load_device=load_device, offload_device=offload_device)


class ModuleHolder(torch.nn.Module):
    """A plain container for a module whose class forbids the attributes ModelPatcher sets.

    ModelPatcher writes ``model.device`` and a few counters onto the module it wraps;
    Hugging Face models define ``device`` as a read-only property, so they are wrapped in
    this holder and move with it.
    """

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module


def load_to_device(*patchers) -> None:
    """Move the patchers' modules to their load devices, freeing memory of other models first.

    The engine modules are built from plain torch layers, which ComfyUI's partial
    (lowvram) loading cannot stream, so they are always loaded whole.
    """
    comfy.model_management.load_models_gpu(list(patchers), force_full_load=True)


def transformer_dtype(choice: str, device) -> torch.dtype:
    """Return the dtype of the transformer blocks: 'auto' is bf16 where the device supports it, else fp32.

    InfinityStar was trained in bf16. fp16 is offered but may overflow.
    """
    if choice == "auto":
        return torch.bfloat16 if comfy.model_management.should_use_bf16(device) else torch.float32
    return checkpoints.parse_dtype(choice)
