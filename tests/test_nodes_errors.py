"""In-process tests of bad input: every case fails with a message that names the value and the fix."""

import json

import pytest
import torch

from .host.node_fixtures import comfy, pack, tiny  # noqa: F401  (pytest fixtures)
from .test_nodes import PROMPT, run, sampler_inputs


@pytest.fixture(scope="module")
def model_and_text(pack, tiny):
    model = run(pack.loaders.ModelLoader, model_name=tiny.model, dtype="fp32", resolution="auto").result[0]
    positive = [[torch.randn(1, 7, tiny.text_channels) * 0.3, {"pooled_output": None}]]
    return model, positive


@pytest.fixture(scope="module")
def vae(pack, tiny):
    return run(pack.loaders.VAELoader, vae_name=tiny.vae).result[0]


def test_checkpoint_of_another_model(pack, tiny):
    other = tiny.models_dir / "infinitystar" / "other_model.safetensors"
    other.write_bytes((tiny.models_dir / "vae" / tiny.vae).read_bytes())
    try:
        with pytest.raises(ValueError) as error:
            run(pack.loaders.ModelLoader, model_name="other_model.safetensors", dtype="fp32", resolution="auto")
    finally:
        other.unlink()
    assert "other_model.safetensors" in str(error.value)
    assert "not an InfinityStar transformer" in str(error.value)


def test_partial_shard_set(pack, tiny):
    from safetensors.torch import load_file, save_file

    folder = tiny.models_dir / "infinitystar" / "tiny_sharded"
    folder.mkdir()
    state = load_file(tiny.models_dir / "infinitystar" / tiny.model)
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, names in shards.items():
        save_file({key: state[key] for key in names}, folder / name, metadata={"format": "pt"})
    weight_map = {key: name for name, names in shards.items() for key in names}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    loaded = run(pack.loaders.ModelLoader, model_name="tiny_sharded", dtype="fp32", resolution="auto").result[0]
    assert loaded.model_size() > 0

    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as error:
        run(pack.loaders.ModelLoader, model_name="tiny_sharded", dtype="fp32", resolution="auto")
    assert "model-00002-of-00002.safetensors" in str(error.value)
    assert "Download the missing shards" in str(error.value)


def test_vae_file_of_another_model(pack, tiny):
    wrong = tiny.models_dir / "vae" / "not_the_vae.safetensors"
    wrong.write_bytes((tiny.models_dir / "infinitystar" / tiny.model).read_bytes())
    try:
        with pytest.raises(ValueError) as error:
            run(pack.loaders.VAELoader, vae_name="not_the_vae.safetensors")
    finally:
        wrong.unlink()
    assert "not_the_vae.safetensors" in str(error.value)
    assert "not the VAE" in str(error.value)


def test_missing_model_file(pack, tiny):
    with pytest.raises(FileNotFoundError) as error:
        run(pack.loaders.ModelLoader, model_name="gone.safetensors", dtype="fp32", resolution="auto")
    assert "gone.safetensors" in str(error.value)


@pytest.mark.parametrize("image, words", [
    (torch.rand(1, 8, 14, 3), ["14x8", "smaller than one 16-pixel latent cell"]),
    (torch.rand(2, 96, 176, 3), ["batch of 2", "ImageFromBatch"]),
    (torch.rand(1, 176, 96, 3), ["96x176", "h/w 1.833", "aspect_ratio", "auto"]),
    (torch.rand(96, 176, 3), ["IMAGE [N, H, W, 3]"]),
])
def test_bad_image_for_image_to_video(pack, model_and_text, vae, image, words):
    model, positive = model_and_text
    aspect = pack.sampler.aspect_label(0.562)
    with pytest.raises(ValueError) as error:
        run(pack.sampler.STARSampler, model=model, positive=positive, vae=vae, image=image,
            **sampler_inputs(aspect_ratio=aspect))
    for word in words:
        assert word in str(error.value)


def test_image_to_video_needs_vae(pack, model_and_text):
    model, positive = model_and_text
    with pytest.raises(ValueError) as error:
        run(pack.sampler.STARSampler, model=model, positive=positive, image=torch.rand(1, 96, 176, 3),
            **sampler_inputs())
    assert "need the VAE" in str(error.value)


def test_unsupported_frame_count(pack, model_and_text):
    model, positive = model_and_text
    with pytest.raises(ValueError) as error:
        run(pack.sampler.STARSampler, model=model, positive=positive, **sampler_inputs(frames=81))
    assert "video_frames=81" in str(error.value)
    assert "[1, 17]" in str(error.value)


def test_small_model_ignores_resolution(pack, model_and_text, caplog):
    model, positive = model_and_text
    with caplog.at_level("INFO", logger=pack.sampler.__name__):
        codes = run(pack.sampler.STARSampler, model=model, positive=positive,
                    **sampler_inputs(resolution="720p")).result[0]
    assert codes.settings.preset == "tiny"
    assert "ignores resolution 720p" in caplog.text


def released_info(pack, resolution, name="infinitystar_8b_weights"):
    from pathlib import Path
    from types import SimpleNamespace

    return SimpleNamespace(config=pack.sampler.RELEASED_ARCHITECTURE, resolution=resolution,
                           source=Path("/models/infinitystar") / name)


@pytest.mark.parametrize("widget, files, expected", [
    ("720p", None, "720p"), ("480p", None, "480p"), ("auto", "480p", "480p"), ("480p", "480p", "480p"),
])
def test_released_model_resolution(pack, widget, files, expected):
    assert pack.sampler.resolve_preset(widget, released_info(pack, files)) == expected


def test_released_model_resolution_conflict(pack):
    with pytest.raises(ValueError) as error:
        pack.sampler.resolve_preset("720p", released_info(pack, "480p", "infinitystar_8b_480p_weights"))
    assert "resolution 720p does not match" in str(error.value)
    assert "infinitystar_8b_480p_weights" in str(error.value)
    assert "choose 480p (or auto)" in str(error.value)


def test_released_model_resolution_unknown(pack):
    with pytest.raises(ValueError) as error:
        pack.sampler.resolve_preset("auto", released_info(pack, None))
    assert "720p or the 480p" in str(error.value)
    assert "choose the resolution" in str(error.value)


def test_unknown_model_size_rejected(pack):
    from dataclasses import replace

    info = released_info(pack, None, "mystery.safetensors")
    info.config = replace(pack.sampler.RELEASED_ARCHITECTURE, depth=12, block_chunks=4)
    with pytest.raises(ValueError) as error:
        pack.sampler.resolve_preset("720p", info)
    assert "mystery.safetensors" in str(error.value)
    assert "depth 12" in str(error.value)
    assert "demo (bundled)" in str(error.value)


def test_text_features_of_wrong_width(pack, model_and_text):
    model, _ = model_and_text
    wrong = [[torch.randn(1, 7, 2048), {}]]
    with pytest.raises(ValueError) as error:
        run(pack.sampler.STARSampler, model=model, positive=wrong, **sampler_inputs())
    assert "2048 channels" in str(error.value)
    assert "expects 32" in str(error.value)


def test_out_of_memory_message(pack, model_and_text, monkeypatch):
    model, positive = model_and_text

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pack.sampler.pipeline, "generate", exhausted)
    with pytest.raises(torch.OutOfMemoryError) as error:
        run(pack.sampler.STARSampler, model=model, positive=positive, **sampler_inputs())
    message = str(error.value)
    assert "Tried to allocate 20.00 GiB" in message
    assert "480p" in message
    assert "fp16" in message
    assert "'fast' preset" in message


def test_cancel_mid_run_unpatches_model(pack, model_and_text, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    model, positive = model_and_text
    restore = run(pack.faststar_node.FastSTAR, model=model, preset="fastvar",
                  **{name: value for name, value in pack.routes.preset_inputs(
                      pack.faststar_node.pruning.PRESETS["fastvar"]).items()}).result[0]
    processor_before = model.model.block_processor
    steps_seen = []

    def hook(value, total, preview, node_id=None):
        steps_seen.append(value)
        if value == 12:
            mm.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    with pytest.raises(mm.InterruptProcessingException):
        run(pack.sampler.STARSampler, model=restore, positive=positive, **sampler_inputs())
    assert steps_seen[-1] == 12, "the run went on after Cancel"
    assert model.model.block_processor is processor_before
    assert not mm.processing_interrupted()
