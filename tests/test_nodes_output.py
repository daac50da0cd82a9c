"""In-process tests of the output nodes: Save Video and Compare Videos."""

import json
import os
import stat

import av
import pytest
import torch
from PIL import Image

from .host.node_fixtures import comfy, pack  # noqa: F401  (pytest fixtures)
from .test_nodes import run

FRAMES = 6
HEIGHT, WIDTH = 48, 64
PROMPT_GRAPH = {"1": {"class_type": "InfinityStarSampler", "inputs": {"seed": 3}}}
WORKFLOW = {"nodes": [{"id": 1, "type": "InfinityStarSampler"}], "links": []}


def gradient_frames(frames=FRAMES, height=HEIGHT, width=WIDTH) -> torch.Tensor:
    """[F, H, W, 3] frames with a moving gradient, easy for any codec."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    video = [torch.stack([(x + y + t / frames) % 1, x.expand(height, width), y.expand(height, width)], dim=-1)
             for t in range(frames)]
    return torch.stack(video)


def save(pack, images, prefix, format="mp4 (h264)", quality=19):
    node = pack.save.SaveVideo.PREPARE_CLASS_CLONE({"PROMPT": PROMPT_GRAPH, "EXTRA_PNGINFO": {"workflow": WORKFLOW}})
    return node.execute(images=images, fps=16.0, filename_prefix=prefix, format=format, quality=quality)


def saved_path(comfy, output) -> str:
    entry = output.ui.as_dict()["images"][0]
    return os.path.join(comfy.output_dir, entry["subfolder"], entry["filename"])


@pytest.mark.parametrize("format, extension", [("mp4 (h264)", "mp4"), ("webm (vp9)", "webm")])
def test_save_av_formats(pack, comfy, format, extension):
    output = save(pack, gradient_frames(), f"fmt_{extension}/clip", format)
    path = saved_path(comfy, output)
    assert path.endswith(f"clip_00001_.{extension}")
    assert output.ui.as_dict()["animated"] == (True,)

    with av.open(path) as container:
        stream = container.streams.video[0]
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        # Matroska (webm) stores tag names in upper case.
        metadata = {key.lower(): value for key, value in container.metadata.items()}
        assert json.loads(metadata["workflow"]) == WORKFLOW
        assert json.loads(metadata["prompt"]) == PROMPT_GRAPH
    assert len(decoded) == FRAMES
    assert decoded[0].shape == (HEIGHT, WIDTH, 3)
    assert float(stream.average_rate) == pytest.approx(16.0)


def test_save_animated_webp_with_workflow(pack, comfy):
    output = save(pack, gradient_frames(), "fmt_webp/clip", "webp (animated)", quality=50)
    path = saved_path(comfy, output)
    with Image.open(path) as image:
        assert image.n_frames == FRAMES
        exif = image.getexif()
    assert exif[0x0110] == "prompt:" + json.dumps(PROMPT_GRAPH)
    assert exif[0x010F] == "workflow:" + json.dumps(WORKFLOW)


def test_save_returns_core_video(pack, comfy):
    output = save(pack, gradient_frames(), "core_video/clip")
    video = output.result[0]
    assert video.get_dimensions() == (WIDTH, HEIGHT)
    components = video.get_components()
    assert components.images.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert float(components.frame_rate) == 16.0


def test_save_never_overwrites(pack, comfy):
    folder = comfy.output_dir / "no_overwrite"
    folder.mkdir()
    existing = folder / "clip_00001_.mp4"
    existing.write_bytes(b"keep me")
    # A name taken after the counter was chosen is skipped too (the node reserves names atomically).
    first = save(pack, gradient_frames(), "no_overwrite/clip")
    second = save(pack, gradient_frames(), "no_overwrite/clip")
    assert existing.read_bytes() == b"keep me"
    assert os.path.basename(saved_path(comfy, first)) == "clip_00002_.mp4"
    assert os.path.basename(saved_path(comfy, second)) == "clip_00003_.mp4"


def test_save_skips_a_name_taken_while_encoding(pack, comfy, monkeypatch):
    folder = comfy.output_dir / "taken_late"
    original = pack.save.video_io._encode

    def encode_while_another_writer_saves(*args):
        original(*args)
        (folder / "clip_00001_.mp4").write_bytes(b"appeared while encoding")

    monkeypatch.setattr(pack.save.video_io, "_encode", encode_while_another_writer_saves)
    output = save(pack, gradient_frames(), "taken_late/clip")
    assert os.path.basename(saved_path(comfy, output)) == "clip_00002_.mp4"
    assert (folder / "clip_00001_.mp4").read_bytes() == b"appeared while encoding"
    assert sorted(os.listdir(folder)) == ["clip_00001_.mp4", "clip_00002_.mp4"]


def test_save_cancel_leaves_no_file(pack, comfy, monkeypatch):
    import comfy.model_management as mm

    original = pack.save.video_io._encode_av

    def cancelled(pixels, *args, **kwargs):
        original(pixels[:2], *args, **kwargs)  # a partial file exists now
        raise mm.InterruptProcessingException()

    monkeypatch.setattr(pack.save.video_io, "_encode_av", cancelled)
    with pytest.raises(mm.InterruptProcessingException):
        save(pack, gradient_frames(), "cancelled/clip")
    assert os.listdir(comfy.output_dir / "cancelled") == []


def test_save_file_follows_umask(pack, comfy):
    old = os.umask(0o022)
    try:
        output = save(pack, gradient_frames(), "umask/clip", "webp (animated)")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(saved_path(comfy, output)).st_mode) == 0o644


def test_save_mp4_quality_above_crf_range(pack, comfy):
    with pytest.raises(ValueError) as error:
        save(pack, gradient_frames(), "crf/clip", quality=60)
    assert "quality=60" in str(error.value)
    assert "0 to 51" in str(error.value)
    assert os.listdir(comfy.output_dir / "crf") == []


def test_save_odd_size_rejected(pack):
    with pytest.raises(ValueError) as error:
        save(pack, gradient_frames(height=47), "odd/clip")
    assert "64x47" in str(error.value)
    assert "even" in str(error.value)


def test_save_unwritable_folder(pack, comfy, monkeypatch):
    folder = comfy.output_dir / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    real_access = os.access
    if os.geteuid() == 0:
        # root ignores the mode bits; report the folder as not writable as a normal user would see it.
        monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(folder) else real_access(path, mode))
    try:
        with pytest.raises(PermissionError) as error:
            save(pack, gradient_frames(), "read_only/clip")
    finally:
        folder.chmod(0o755)
    assert str(folder) in str(error.value)
    assert "--output-directory" in str(error.value)


def test_compare_identical_and_different(pack):
    frames = gradient_frames()
    same = run(pack.compare.CompareVideos, reference=frames, candidate=frames.clone())
    psnr, ssim, side_by_side = same.result
    assert psnr == float("inf")
    assert ssim == pytest.approx(1.0)
    assert side_by_side.shape == (FRAMES, HEIGHT, 2 * WIDTH, 3)
    assert "identical" in same.ui.as_dict()["text"][0]

    noise = torch.randn(frames.shape, generator=torch.Generator().manual_seed(0))
    noisy = (frames + 0.05 * noise).clamp(0, 1)
    different = run(pack.compare.CompareVideos, reference=frames, candidate=noisy)
    psnr, ssim, _ = different.result
    assert 20 < psnr < 40
    assert ssim < 1.0
    assert f"PSNR {psnr:.2f} dB" in different.ui.as_dict()["text"][0]


def test_compare_shape_mismatch(pack):
    with pytest.raises(ValueError) as error:
        run(pack.compare.CompareVideos, reference=gradient_frames(), candidate=gradient_frames(frames=5))
    assert "(6, 48, 64, 3)" in str(error.value)
    assert "(5, 48, 64, 3)" in str(error.value)
