"""Temperature, classifier-free guidance (CFG) and adaptive projected guidance (APG).

Every function keeps the reference's operation order, because the sampled bits of a seeded
run depend on the last bits of the guided logits.
"""

import math

import torch
import torch.nn.functional as F


def apply_temperature(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Multiply by 1/tau, with the reciprocal taken in Python double precision."""
    return logits.mul(1 / tau)


def cfg_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain CFG: scale * cond + (1 - scale) * uncond."""
    return scale * cond + (1 - scale) * uncond


def apg_guidance(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    norm_threshold: float = 0.05,
    eta: float = 0.0,
) -> torch.Tensor:
    """Adaptive projected guidance over one scale's logits [B, L, 2d].

    The difference cond - uncond is clipped to an RMS of ``norm_threshold``, split into
    parts parallel and orthogonal to cond (in float64), and the orthogonal part plus
    ``eta`` times the parallel part is added ``scale - 1`` times. The norms run over all
    L x 2d entries of a row, so the statistics depend on which tokens are present.
    """
    diff = cond - uncond
    if norm_threshold > 0:
        count = diff.shape[-1] * diff.shape[-2]
        diff_norm = 1 / math.sqrt(count) * diff.norm(p=2, dim=[-1, -2], keepdim=True)
        scale_factor = torch.minimum(torch.ones_like(diff), norm_threshold / diff_norm)
        diff = diff * scale_factor

    parallel, orthogonal = _project(diff, cond)
    update = orthogonal + eta * parallel
    return cond + (scale - 1) * update


def _project(v: torch.Tensor, onto: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split v into parts parallel and orthogonal to ``onto`` over the last two dims, in float64."""
    dtype = v.dtype
    v64, onto64 = v.double(), onto.double()

    unit = F.normalize(onto64, dim=[-1, -2])
    parallel = (v64 * unit).sum(dim=[-1, -2], keepdim=True) * unit
    orthogonal = v64 - parallel
    return parallel.to(dtype), orthogonal.to(dtype)


def guide(logits: torch.Tensor, method: str, scale: float, norm_threshold: float = 0.05) -> torch.Tensor:
    """Combine the cond row(s) and uncond row(s) of logits [2B, L, 2d] into [B, L, 2d]."""
    half = logits.shape[0] // 2
    cond, uncond = logits[:half], logits[half:]

    if scale == 1:
        return cond
    if method == "apg":
        return apg_guidance(cond, uncond, scale, norm_threshold)
    if method == "cfg":
        return cfg_guidance(cond, uncond, scale)
    raise ValueError(f"guidance method {method!r} is unknown; use 'apg' or 'cfg'")
