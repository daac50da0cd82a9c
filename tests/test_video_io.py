"""Video writing: formats, metadata, quality, round trip, no overwrite and no partial files."""

import os
import stat

import numpy as np
import pytest

import faststar.video_io as video_io
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



def test_folder_as_output_names_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_video(moving_square(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_says_create_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="create it first"):
        write_video(moving_square(), tmp_path / "missing" / "clip.mp4")

def test_odd_size_rejected_without_files(tmp_path):
    with pytest.raises(ValueError, match="odd"):
        write_video(moving_square(height=33), tmp_path / "odd.mp4")
    assert list(tmp_path.iterdir()) == []


def test_failed_encode_leaves_no_partial_file(tmp_path, monkeypatch):
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


def test_mp4_keeps_custom_metadata_keys(tmp_path):
    import av

    metadata = {"workflow": '{"nodes": []}', "prompt": '{"1": {}}'}

    path = write_video(moving_square(), tmp_path / "custom.mp4", metadata=metadata)

    with av.open(str(path)) as container:
        assert container.metadata.get("workflow") == '{"nodes": []}'
        assert container.metadata.get("prompt") == '{"1": {}}'


def test_webm_keeps_metadata(tmp_path):
    import av

    path = write_video(moving_square(), tmp_path / "meta.webm", metadata={"workflow": "[1, 2]"})

    with av.open(str(path)) as container:
        # Matroska stores tag names in upper case.
        tags = {key.lower(): value for key, value in container.metadata.items()}
    assert tags["workflow"] == "[1, 2]"


def test_webp_metadata_in_exif(tmp_path):
    from PIL import Image

    metadata = {"workflow": '{"nodes": []}', "prompt": '{"1": {}}', "note": "plain text"}

    path = write_video(moving_square(), tmp_path / "meta.webp", metadata=metadata)

    with Image.open(path) as image:
        exif = image.getexif()
    assert exif[video_io.EXIF_PROMPT_TAG] == 'prompt:{"1": {}}'
    assert exif[0x010F] == 'workflow:{"nodes": []}'
    assert exif[0x010E] == "note:plain text"
    assert video_io.read_webp_metadata(path) == metadata


def test_webp_rejects_metadata_it_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="':'"):
        write_video(moving_square(), tmp_path / "colon.webp", metadata={"a:b": "x"})
    too_many = {f"key{index}": "x" for index in range(len(video_io.EXIF_EXTRA_TAGS) + 1)}
    with pytest.raises(ValueError, match="do not fit"):
        write_video(moving_square(), tmp_path / "many.webp", metadata=too_many)
    assert list(tmp_path.iterdir()) == []


def test_metadata_values_must_be_strings(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        write_video(moving_square(), tmp_path / "object.mp4", metadata={"workflow": {"nodes": []}})
    assert list(tmp_path.iterdir()) == []


def test_webp_accepts_odd_size(tmp_path):
    path = write_video(moving_square(height=33, width=47), tmp_path / "odd.webp")

    decoded, _ = read_video(path)
    assert decoded.shape == (9, 33, 47, 3)


def encoded_size(tmp_path, name, quality):
    return write_video(noise_frames(), tmp_path / name, quality=quality).stat().st_size


def noise_frames():
    return np.random.default_rng(0).random((4, 32, 48, 3), dtype=np.float32)


@pytest.mark.parametrize("extension, better, worse", [("mp4", 10, 40), ("webm", 10, 55), ("webp", 95, 5)])
def test_quality_changes_file_size(tmp_path, extension, better, worse):
    large = encoded_size(tmp_path, f"better.{extension}", better)
    small = encoded_size(tmp_path, f"worse.{extension}", worse)

    assert large > small


@pytest.mark.parametrize("extension, quality", [("mp4", 52), ("webm", -1), ("webp", 101), ("mp4", 2.5),
                                                ("webp", True)])
def test_quality_out_of_range_rejected(tmp_path, extension, quality):
    with pytest.raises(ValueError, match="quality"):
        write_video(moving_square(), tmp_path / f"bad.{extension}", quality=quality)
    assert list(tmp_path.iterdir()) == []


def test_free_name_skips_name_taken_during_encode(tmp_path, monkeypatch):
    taken = tmp_path / "clip_00004_.mp4"
    original = video_io._encode

    def encode_while_another_writer_saves(*args):
        original(*args)
        taken.write_bytes(b"appeared while encoding")

    monkeypatch.setattr(video_io, "_encode", encode_while_another_writer_saves)
    names = (tmp_path / f"clip_{counter:05}_.mp4" for counter in range(4, 10))

    path = video_io.write_video_to_free_name(moving_square(), names)

    assert path.name == "clip_00005_.mp4"
    assert taken.read_bytes() == b"appeared while encoding"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_00004_.mp4", "clip_00005_.mp4"]
    assert read_video(path)[0].shape[0] == 9


def test_file_created_during_encode_not_overwritten(tmp_path, monkeypatch):
    target = tmp_path / "race.mp4"
    original = video_io._encode

    def encode_while_another_writer_saves(*args):
        original(*args)
        target.write_bytes(b"keep me")

    monkeypatch.setattr(video_io, "_encode", encode_while_another_writer_saves)
    with pytest.raises(FileExistsError, match="race.mp4"):
        write_video(moving_square(), target)
    assert target.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["race.mp4"]


def test_free_name_with_every_name_taken(tmp_path):
    for counter in (1, 2):
        (tmp_path / f"clip_{counter:05}_.webp").write_bytes(b"old")
    names = [tmp_path / "clip_00001_.webp", tmp_path / "clip_00002_.webp"]

    with pytest.raises(FileExistsError, match="all 2 names"):
        video_io.write_video_to_free_name(moving_square(), names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_00001_.webp", "clip_00002_.webp"]


def test_free_name_rejects_mixed_candidates(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"old")
    names = [tmp_path / "a.mp4", tmp_path / "b.webm"]

    with pytest.raises(ValueError, match="one extension"):
        video_io.write_video_to_free_name(moving_square(), names)
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_cancel_during_encode_leaves_no_file(tmp_path, monkeypatch):
    original = video_io._encode_av

    class Cancelled(BaseException):
        """Stands for a host's cancel exception, raised inside the encoder loop."""

    def cancelled(pixels, *args):
        original(pixels[:2], *args)  # a partial file exists now
        raise Cancelled()

    monkeypatch.setattr(video_io, "_encode_av", cancelled)
    with pytest.raises(Cancelled):
        write_video(moving_square(), tmp_path / "cancelled.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extension", ["mp4", "webp"])
def test_every_format_follows_umask(tmp_path, extension):
    old = os.umask(0o027)
    try:
        path = write_video(moving_square(), tmp_path / f"shared.{extension}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_torch_frames_accepted(tmp_path):
    import torch

    frames = torch.from_numpy(moving_square())

    path = write_video(frames, tmp_path / "tensor.mp4")

    assert read_video(path)[0].shape == (9, 32, 48, 3)
