"""In-process tests of the bundled demo model in the nodes: loaders, text, sampler and decode.

The demo weights ship in faststar/demo/weights, so these tests need no models folder.
"""

import pytest
import torch

from .host.node_fixtures import comfy, pack  # noqa: F401  (pytest fixtures)
from .test_nodes import run

DEMO_PROMPT = "a red circle moving right on a gray background"


def demo_sampler_inputs(pack, **changes):
    """Sampler widgets for the demo: 17 frames and the demo preset's own guidance and temperatures."""
    settings = pack.sampler.pipeline.model_preset(pack.routes.demo.PRESET_NAME).settings
    inputs = dict(resolution="auto", aspect_ratio="auto", frames=17, seed=5, guidance=settings.guidance,
                  guidance_scale=settings.guidance_scale, tau_image=settings.tau_image, tau_video=settings.tau_video)
    inputs.update(changes)
    return inputs


@pytest.fixture(scope="module")
def demo(pack):
    """The demo transformer, VAE, text encoder and prompt features, loaded through the loader nodes."""
    choice = pack.paths.DEMO_CHOICE
    model = run(pack.loaders.ModelLoader, model_name=choice, dtype="fp32", resolution="auto").result[0]
    vae = run(pack.loaders.VAELoader, vae_name=choice).result[0]
    encoder = run(pack.text.TextEncoderLoader, text_encoder_name=choice, dtype="auto").result[0]
    positive = run(pack.text.TextEncode, text_encoder=encoder, prompt=DEMO_PROMPT, duration_tag="none",
                   detail_suffix=False).result[0]
    return model, vae, encoder, positive


@pytest.fixture(scope="module")
def demo_codes(pack, demo):
    model, vae, _, positive = demo
    patched = run(pack.faststar_node.FastSTAR, model=model, preset="balanced",
                  **pack.routes.preset_inputs(pack.faststar_node.pruning.PRESETS["balanced"])).result[0]
    return run(pack.sampler.STARSampler, model=patched, positive=positive, vae=vae, **demo_sampler_inputs(pack))


def test_demo_model_runs_demo_preset(pack, demo):
    info = demo[0].get_attachment(pack.types.CHECKPOINT_INFO_KEY)

    assert info.config == pack.routes.demo.preset.TRANSFORMER_CONFIG
    assert pack.sampler.resolve_preset("auto", info) == pack.routes.demo.PRESET_NAME
    assert pack.sampler.resolve_preset("720p", info) == pack.routes.demo.PRESET_NAME


def test_demo_text_encode_takes_prompt_as_written(pack, demo):
    encoder = demo[2]
    decorated = run(pack.text.TextEncode, text_encoder=encoder, prompt=DEMO_PROMPT, duration_tag="5 s",
                    detail_suffix=True).result[0]

    features, extras = decorated[0]
    assert not encoder.decorate
    assert extras["infinitystar_prompt"] == DEMO_PROMPT
    assert features.shape == (1, pack.routes.demo.preset.TEXT_TOKENS, pack.routes.demo.preset.TEXT_CHANNELS)
    assert torch.equal(features, demo[3][0][0])


def test_demo_text_encode_rejects_unknown_words(pack, demo):
    with pytest.raises(ValueError) as error:
        run(pack.text.TextEncode, text_encoder=demo[2], prompt="a fox in the snow", duration_tag="none",
            detail_suffix=False)
    assert "fox" in str(error.value)
    assert "circle" in str(error.value)


def test_demo_sampler_with_faststar(demo_codes):
    codes, stats = demo_codes.result

    assert codes.settings.preset == "demo"
    assert codes.codes.shape[:3] == (1, 64, 5)
    assert stats["pruning"] == "partial"
    assert stats["tokens_refined"] < stats["tokens"]
    assert stats["estimated_speedup"] > 1.0


def test_demo_decode_matches_pixel_size(pack, demo, demo_codes):
    codes = demo_codes.result[0]

    frames, fps, _ = run(pack.decode.Decode, vae=demo[1], codes=codes, reference_postprocess=True,
                         heatmap=False).result

    assert frames.shape[0] == 17
    assert tuple(frames.shape[1:3]) == pack.sampler.pipeline.pixel_size(codes.settings)
    assert fps == 16.0
    assert frames.std() > 0.01


def test_demo_image_to_video(pack, demo):
    model, vae, _, positive = demo
    image = torch.rand(1, 72, 72, 3)

    codes = run(pack.sampler.STARSampler, model=model, positive=positive, vae=vae, image=image,
                **demo_sampler_inputs(pack)).result[0]

    assert codes.codes.shape[:3] == (1, 64, 5)


def test_demo_estimate_route(pack):
    payload = pack.routes.estimate_payload({"preset": "balanced", "resolution": "auto", "frames": 17,
                                            "model_name": pack.paths.DEMO_CHOICE})

    assert payload["preset"] == "demo"
    assert payload["video_frames"] == 17
    assert payload["speedup"] > 1.0
