"""Video writing: formats, round trip, no overwrite and no partial files."""

import numpy as np
import pytest

from faststar.video_io import read_video, unused_path, write_video


def moving_square(frames=9, height=32, width=48):
    video = np.zeros((frames, height, width, 3), dtype=np.float32)
    for f in range(frames):
        video[f, 8:20, 2 + 3 * f: 14 + 3 * f, 0] = 1.0
    return video


@pytest.mark.parametrize("extension", ["mp4", "webm", "webp"])
def test_write_formats_round_trip(tmp_path, extension):
    video = moving_square()

    path = write_video(video, tmp_path / f"clip.{extension}", fps=16)

    decoded, fps = read_video(path)
    assert decoded.shape == (9, 32, 48, 3)
    assert abs(fps - 16) < 0.5
    assert np.abs(decoded.astype(np.float32) / 255 - video).mean() < 0.05


def test_metadata_is_stored(tmp_path):
    import av

    path = write_video(moving_square(), tmp_path / "meta.mp4", metadata={"comment": "workflow json"})

    with av.open(str(path)) as container:
        assert container.metadata.get("comment") == "workflow json"


def test_existing_file_is_not_overwritten(tmp_path):
    target = tmp_path / "taken.mp4"
    target.write_bytes(b"keep me")

    with pytest.raises(FileExistsError, match="taken.mp4"):
        write_video(moving_square(), target)
    assert target.read_bytes() == b"keep me"


def test_odd_size_rejected_without_files(tmp_path):
    with pytest.raises(ValueError, match="odd"):
        write_video(moving_square(height=33), tmp_path / "odd.mp4")
    assert list(tmp_path.iterdir()) == []


def test_failed_encode_leaves_no_partial_file(tmp_path, monkeypatch):
    import faststar.video_io as video_io

    def broken_encode(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(video_io, "_encode", broken_encode)
    with pytest.raises(OSError, match="No space"):
        write_video(moving_square(), tmp_path / "full.mp4")
    assert list(tmp_path.iterdir()) == []


def test_unused_path_skips_existing(tmp_path):
    (tmp_path / "faststar_00001.mp4").write_bytes(b"")

    assert unused_path(tmp_path, "faststar", "mp4").name == "faststar_00002.mp4"


def test_written_file_follows_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = write_video(moving_square(), tmp_path / "shared.mp4")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("fps", [0, -5, float("nan")])
def test_invalid_fps_rejected(tmp_path, fps):
    with pytest.raises(ValueError, match="fps"):
        write_video(moving_square(), tmp_path / "rate.mp4", fps=fps)
    assert list(tmp_path.iterdir()) == []


def test_empty_and_nan_frames_rejected(tmp_path):
    with pytest.raises(ValueError, match="F >= 1"):
        write_video(np.zeros((0, 32, 48, 3), dtype=np.float32), tmp_path / "empty.mp4")
    with pytest.raises(ValueError, match="NaN"):
        write_video(np.full((2, 32, 48, 3), np.nan, dtype=np.float32), tmp_path / "nan.mp4")
    assert list(tmp_path.iterdir()) == []


def test_format_must_match_extension(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        write_video(moving_square(), tmp_path / "clip.mp4", format="webm")
    assert write_video(moving_square(), tmp_path / "clip.MP4", format="MP4").exists()


def test_dangling_link_is_not_replaced(tmp_path):
    link = tmp_path / "link.mp4"
    link.symlink_to(tmp_path / "missing-target.mp4")

    with pytest.raises(FileExistsError):
        write_video(moving_square(), link)
    assert link.is_symlink()
