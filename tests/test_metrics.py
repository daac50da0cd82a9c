"""PSNR and SSIM between videos: closed-form cases and a direct per-window SSIM."""

import math

import pytest
import torch

from faststar.metrics import gaussian_window, psnr, ssim


def test_psnr_known_value_float():
    reference = torch.zeros(2, 8, 8, 3)
    video = torch.full((2, 8, 8, 3), 0.1)
    scores = psnr(video, reference)
    assert scores.per_frame == pytest.approx((20.0, 20.0))
    assert scores.mean == pytest.approx(20.0)


def test_psnr_uint8_uses_255_range():
    reference = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    video = torch.full((1, 4, 4, 3), 51, dtype=torch.uint8)
    assert psnr(video, reference).mean == pytest.approx(20 * math.log10(255 / 51))


def test_psnr_per_frame_and_identical_frames():
    reference = torch.rand(3, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    video = reference.clone()
    video[1] += 0.01
    scores = psnr(video, reference)
    assert scores.per_frame[0] == math.inf
    assert scores.per_frame[2] == math.inf
    assert scores.per_frame[1] == pytest.approx(40.0, abs=1e-4)


def test_ssim_identical_is_one():
    video = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    assert ssim(video, video).per_frame == pytest.approx((1.0, 1.0))


def test_ssim_constant_frames_closed_form():
    # Constant frames have no variance: SSIM = (2ab + c1) / (a^2 + b^2 + c1).
    a, b = 0.3, 0.6
    c1 = (0.01 * 1.0) ** 2
    video = torch.full((1, 12, 12), a)
    reference = torch.full((1, 12, 12), b)
    assert ssim(video, reference).mean == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


def direct_ssim(x: torch.Tensor, y: torch.Tensor, size=11, sigma=1.5, data_range=1.0) -> float:
    """SSIM of two grey images [H, W] with an explicit 2-D window at every valid position."""
    g = gaussian_window(size, sigma)
    weights = g[:, None] * g[None, :]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            px, py = x[i:i + size, j:j + size].double(), y[i:i + size, j:j + size].double()
            mx, my = (weights * px).sum(), (weights * py).sum()
            vx = (weights * px * px).sum() - mx**2
            vy = (weights * py * py).sum() - my**2
            cov = (weights * px * py).sum() - mx * my
            values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(torch.stack(values).mean())


def test_ssim_matches_direct_window_computation():
    generator = torch.Generator().manual_seed(2)
    reference = torch.rand(2, 15, 14, 2, generator=generator)
    video = (reference + 0.1 * torch.randn(2, 15, 14, 2, generator=generator)).clamp(0, 1)
    scores = ssim(video, reference)
    for frame in range(2):
        expected = sum(direct_ssim(video[frame, :, :, c], reference[frame, :, :, c]) for c in range(2)) / 2
        assert scores.per_frame[frame] == pytest.approx(expected, abs=1e-10)


def test_ssim_falls_with_noise_and_is_symmetric():
    generator = torch.Generator().manual_seed(3)
    reference = torch.rand(1, 24, 24, 3, generator=generator)
    noise = torch.randn(1, 24, 24, 3, generator=generator)
    slight = (reference + 0.02 * noise).clamp(0, 1)
    strong = (reference + 0.2 * noise).clamp(0, 1)
    assert 1.0 > ssim(slight, reference).mean > ssim(strong, reference).mean
    assert ssim(strong, reference).mean == pytest.approx(ssim(reference, strong).mean)


def test_small_frames_shrink_the_window():
    generator = torch.Generator().manual_seed(4)
    reference = torch.rand(1, 6, 9, generator=generator)
    video = torch.rand(1, 6, 9, generator=generator)
    expected = direct_ssim(video[0], reference[0], size=5)
    assert ssim(video, reference).mean == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("video, reference, message", [
    (torch.zeros(2, 4, 4, 3), torch.zeros(2, 4, 5, 3), "differs from reference"),
    (torch.zeros(4, 4), torch.zeros(4, 4), "expected a video"),
])
def test_bad_input_raises(video, reference, message):
    with pytest.raises(ValueError, match=message):
        psnr(video, reference)
    with pytest.raises(ValueError, match=message):
        ssim(video, reference)


def test_invalid_data_range_raises():
    with pytest.raises(ValueError, match="data_range"):
        psnr(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), data_range=0)
