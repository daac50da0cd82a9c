"""Parity of faststar.vae with the reference InfinityStar video VAE (tiny fixture model).

The fixture folder holds a tiny reference VAE state dict and its decode/encode outputs,
computed by the reference code in float32 on CPU. Shapes come from manifest.json.
"""

import pytest
import torch
from safetensors.torch import load_file

from faststar.vae import (
    InfinityStarVAE,
    VAEConfig,
    patchify,
    plan_decode_batches,
    plan_encode_batches,
    video_to_frames,
)

VAE_FILE = "tiny_vae.safetensors"
CASES_FILE = "tiny_vae_cases.safetensors"
OUTPUT_TOLERANCE = 1e-4
DECODER_INPUT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def vae_state_dict(ref_dir):
    return load_file(ref_dir / VAE_FILE)


@pytest.fixture(scope="module")
def cases(ref_dir):
    return load_file(ref_dir / CASES_FILE)


@pytest.fixture(scope="module")
def vae(vae_state_dict):
    return InfinityStarVAE.from_state_dict(vae_state_dict)


@pytest.fixture(scope="module")
def case_shapes(manifest):
    tensors = manifest["files"][CASES_FILE]["tensors"]["tensors"]
    return {name: tuple(shape) for name, (shape, _dtype) in tensors.items()}


def released_state_dict_shapes(manifest) -> dict:
    """Meta tensors with the shapes of the released VAE, built from the manifest widths."""
    widths = manifest["files"][VAE_FILE]["released_block_out_channels"]
    with torch.device("meta"):
        model = InfinityStarVAE(VAEConfig(block_out_channels=tuple(widths)))
    return model.state_dict()


def max_abs_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual - expected).abs().max().item()


# ---------------------------------------------------------------- configuration and loading


def test_config_inferred_from_tiny_state_dict(vae_state_dict, manifest):
    namespace = manifest["files"][VAE_FILE]["constructor_namespace"]
    config = VAEConfig.from_state_dict(vae_state_dict)

    assert list(config.block_out_channels) == namespace["block_out_channels"]
    assert config.latent_channels == namespace["latent_channels"]
    assert config.layers_per_block == namespace["layers_per_block"]
    assert list(config.spatial_compression_list) == namespace["spatial_compression_list"]
    assert list(config.temporal_compression_list) == namespace["temporal_compression_list"]
    assert config.codebook_dim == 4 * namespace["codebook_dim_low"]
    assert config.semantic_scale_dim == namespace["semantic_scale_dim"]
    assert config.detail_scale_dim == namespace["detail_scale_dim"]


def test_config_inferred_from_released_shapes(manifest):
    released = manifest["files"][VAE_FILE]["released_block_out_channels"]
    state_dict = released_state_dict_shapes(manifest)

    config = VAEConfig.from_state_dict(state_dict)

    assert list(config.block_out_channels) == released
    assert config == VAEConfig()
    assert len(state_dict) == manifest["files"][VAE_FILE]["n_tensors"]


def test_tiny_state_dict_loads_every_key(vae, vae_state_dict, manifest):
    loaded = vae.state_dict()

    assert set(loaded) == set(vae_state_dict)
    assert len(loaded) == manifest["files"][VAE_FILE]["n_tensors"]
    for key, tensor in vae_state_dict.items():
        assert torch.equal(loaded[key], tensor), key


def test_default_quantizer_masks_match_file(vae_state_dict):
    fresh = InfinityStarVAE(VAEConfig.from_state_dict(vae_state_dict)).state_dict()

    for key in [k for k in vae_state_dict if k.endswith(".mask")]:
        assert torch.equal(fresh[key], vae_state_dict[key]), key


# ---------------------------------------------------------------- decode parity


def test_decoder_input_matches_reference(vae, cases, case_shapes):
    decoder_input = vae.prepare_decoder_input(cases["decode.latent"])

    assert tuple(decoder_input.shape) == case_shapes["decode.decoder_input"]
    assert max_abs_error(decoder_input, cases["decode.decoder_input"]) <= DECODER_INPUT_TOLERANCE


def test_decode_matches_reference(vae, cases, case_shapes):
    video = vae.decode(cases["decode.latent"])

    assert tuple(video.shape) == case_shapes["decode.output"]
    assert video.dtype == torch.float32
    assert max_abs_error(video, cases["decode.output"]) <= OUTPUT_TOLERANCE


def test_decode_frame_count_formula(vae, case_shapes):
    latent_frames = case_shapes["decode.latent"][2]

    assert vae.config.num_video_frames(latent_frames) == case_shapes["decode.output"][2]


def test_decode_rejects_two_latent_frames(vae, case_shapes):
    _, channels, _, height, width = case_shapes["decode.latent"]
    codes = torch.zeros(1, channels, 2, height, width)

    with pytest.raises(ValueError, match="2 latent frames") as error:
        vae.decode(codes)
    assert "5 video frames" in str(error.value)
    with pytest.raises(ValueError, match="2 latent frames"):
        vae.iter_decode(codes)


def test_decode_rejects_wrong_channels(vae, case_shapes):
    _, channels, frames, height, width = case_shapes["decode.latent"]

    with pytest.raises(ValueError, match=f"B, {channels}, T"):
        vae.decode(torch.zeros(1, channels // 4, frames, height, width))


def test_decode_plan_released_lengths():
    plan_21 = plan_decode_batches(21)
    plan_41 = plan_decode_batches(41)

    assert (plan_21[0].start, plan_21[0].stop) == (0, 3)
    assert [(b.start, b.stop) for b in plan_21[1:]] == [(s, s + 2) for s in range(3, 21, 2)]
    assert len(plan_41) == 20
    assert not any(batch.split_first for batch in plan_21 + plan_41)


def test_decode_plan_even_length():
    plan = plan_decode_batches(6)

    assert [(b.start, b.stop, b.split_first) for b in plan] == [(0, 4, True), (4, 6, False)]
    assert [(b.start, b.stop) for b in plan_decode_batches(1)] == [(0, 1)]


@pytest.mark.parametrize("extra_frames", [0, 1])
def test_chunked_decode_equals_one_shot(vae, cases, extra_frames):
    # With split_first for even lengths, one decoder pass over all frames receives the same
    # per-frame inputs as the batched decode, so the outputs agree.
    latent = cases["decode.latent"]
    generator = torch.Generator().manual_seed(0)
    extra = torch.randn(*latent.shape[:2], extra_frames, *latent.shape[3:], generator=generator)
    codes = torch.cat([latent, extra], dim=2)
    split_first = codes.shape[2] % 2 == 0

    chunked = vae.decode(codes)
    with torch.no_grad():
        one_shot = vae.decoder(vae.prepare_decoder_input(codes), {}, split_first=split_first)

    assert len(plan_decode_batches(codes.shape[2])) > 1
    assert chunked.shape == one_shot.shape
    assert max_abs_error(chunked, one_shot) <= 1e-5


def test_decode_without_carried_cache_differs(vae, cases):
    latent = vae.prepare_decoder_input(cases["decode.latent"])
    plan = plan_decode_batches(latent.shape[2])

    with torch.no_grad():
        fresh = [vae.decoder(latent[:, :, b.start:b.stop], {}, b.split_first) for b in plan]

    assert max_abs_error(torch.cat(fresh, dim=2), cases["decode.output"]) > 1e-3


def test_iter_decode_chunks_concatenate(vae, cases):
    chunks = list(vae.iter_decode(cases["decode.latent"]))
    plan = plan_decode_batches(cases["decode.latent"].shape[2])

    assert len(chunks) == len(plan)
    assert chunks[0].shape[2] == vae.config.num_video_frames(plan[0].stop - plan[0].start)
    assert max_abs_error(torch.cat(chunks, dim=2), cases["decode.output"]) <= OUTPUT_TOLERANCE


def test_decode_callback_reports_and_cancels(vae, cases):
    total = len(plan_decode_batches(cases["decode.latent"].shape[2]))
    reports = []

    vae.decode(cases["decode.latent"], chunk_callback=lambda done, count: reports.append((done, count)))
    assert reports == [(index, total) for index in range(1, total + 1)]

    class Cancelled(Exception):
        pass

    def cancel_after_first(done, count):
        reports.append((done, count))
        raise Cancelled

    reports.clear()
    with pytest.raises(Cancelled):
        vae.decode(cases["decode.latent"], chunk_callback=cancel_after_first)
    assert reports == [(1, total)]


def test_decode_41_latent_frames(vae):
    codes = torch.randn(1, vae.config.codebook_dim, 41, 1, 1, generator=torch.Generator().manual_seed(1))

    video = vae.decode(codes)

    assert video.shape[2] == vae.config.num_video_frames(41) == 161
    assert torch.isfinite(video).all()


def test_decode_bf16_autocast_option(vae, cases):
    video = vae.decode(cases["decode.latent"], autocast_dtype=torch.bfloat16)
    reference = cases["decode.output"]

    assert video.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")
    assert max_abs_error(video, reference) <= 0.05 * reference.abs().max().item()
    with pytest.raises(ValueError, match="autocast_dtype"):
        vae.decode(cases["decode.latent"], autocast_dtype=torch.float64)


# ---------------------------------------------------------------- encode parity


def test_encode_matches_reference(vae, cases, case_shapes):
    moments = vae.encode(cases["encode.video"])

    assert tuple(moments.shape) == case_shapes["encode.encoder_output"]
    assert max_abs_error(moments, cases["encode.encoder_output"]) <= OUTPUT_TOLERANCE


def test_patchified_mean_matches_reference(vae, cases, case_shapes):
    moments = patchify(vae.encode(cases["encode.video"]))
    mean = moments[:, : vae.config.codebook_dim]

    assert tuple(mean.shape) == case_shapes["encode.patchified_mean"]
    assert max_abs_error(mean, cases["encode.patchified_mean"]) <= OUTPUT_TOLERANCE


def test_raw_features_mean_matches_reference(vae, cases, case_shapes):
    features = vae.encode_raw_features(cases["encode.video"])

    assert tuple(features.shape) == case_shapes["encode.raw_features_mean"]
    assert max_abs_error(features, cases["encode.raw_features_mean"]) <= OUTPUT_TOLERANCE


def test_raw_features_seeded_sample(vae, cases):
    video = cases["encode.video"]
    first = vae.encode_raw_features(video, sample=True, generator=torch.Generator().manual_seed(7))
    second = vae.encode_raw_features(video, sample=True, generator=torch.Generator().manual_seed(7))

    moments = patchify(vae.encode(video))
    mean, logvar = moments.chunk(2, dim=1)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
    sample = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * noise
    with torch.no_grad():
        expected = vae.proj_down(sample.movedim(1, -1)).movedim(-1, 1) * vae.scale_learnable_parameters[0]

    assert torch.equal(first, second)
    assert max_abs_error(first, expected) <= 1e-5
    assert max_abs_error(first, cases["encode.raw_features_mean"]) > 1e-3


def test_raw_features_rejects_unused_generator(vae, cases):
    with pytest.raises(ValueError, match="sample=True"):
        vae.encode_raw_features(cases["encode.video"], generator=torch.Generator())


def test_encode_plan_from_case(cases, vae):
    frames = cases["encode.video"].shape[2]
    per_batch = vae.config.sample_frames_per_batch
    plan = plan_encode_batches(frames, per_batch)

    assert plan[0].stop == per_batch + frames % per_batch
    assert plan[-1].stop == frames
    assert all(b.stop - b.start == per_batch for b in plan[1:])
    assert [(b.start, b.stop) for b in plan_encode_batches(1, per_batch)] == [(0, 1)]


def test_chunked_encode_equals_one_shot(vae, cases):
    video = cases["encode.video"]

    with torch.no_grad():
        one_shot = vae.encoder(video, {})

    assert len(plan_encode_batches(video.shape[2], vae.config.sample_frames_per_batch)) > 1
    assert max_abs_error(vae.encode(video), one_shot) <= 1e-5


def test_encode_rejects_bad_frame_count(vae, cases):
    video = cases["encode.video"]
    bad = video[:, :, : video.shape[2] - 2]

    with pytest.raises(ValueError, match=f"{bad.shape[2]} frames"):
        vae.encode(bad)


def test_encode_rejects_odd_size(vae, cases):
    video = cases["encode.video"]
    multiple = vae.config.spatial_compression
    cropped = video[..., : video.shape[3] - multiple // 2, :]

    with pytest.raises(ValueError, match=f"multiples of {multiple}"):
        vae.encode(cropped)
    with pytest.raises(ValueError, match=f"multiples of {multiple}"):
        vae.encode_raw_features(cropped)


def test_encode_rejects_wrong_channels(vae, cases):
    with pytest.raises(ValueError, match="B, 3, F, H, W"):
        vae.encode(cases["encode.video"][:, :1])


# ---------------------------------------------------------------- state dict errors


def test_mismatched_state_dict_names_keys(vae_state_dict):
    broken = dict(vae_state_dict)
    del broken["proj_up.bias"]
    broken["decoder.extra.weight"] = torch.zeros(1)
    broken["proj_down.weight"] = torch.zeros(64, 32)

    with pytest.raises(ValueError) as error:
        InfinityStarVAE.from_state_dict(broken)
    message = str(error.value)

    assert "1 missing keys: proj_up.bias" in message
    assert "1 unexpected keys: decoder.extra.weight" in message
    assert "proj_down.weight [64, 32] (expected [64, 64])" in message
    assert "infinitystar_videovae.pth" in message


def test_many_missing_keys_are_counted(vae_state_dict):
    decoder_keys = [key for key in vae_state_dict if key.startswith("decoder.up_blocks.0.")]
    broken = {k: v for k, v in vae_state_dict.items() if k not in decoder_keys}

    with pytest.raises(ValueError, match=f"{len(decoder_keys)} missing keys: .* and {len(decoder_keys) - 3} more"):
        InfinityStarVAE.from_state_dict(broken)


def test_foreign_state_dict_rejected():
    transformer_like = {"word_embed.weight": torch.zeros(128, 64), "head.weight": torch.zeros(128, 128)}

    with pytest.raises(ValueError, match="not an InfinityStar video VAE state dict"):
        InfinityStarVAE.from_state_dict(transformer_like)


def test_whole_checkpoint_rejected(vae_state_dict):
    with pytest.raises(ValueError, match=r"checkpoint\['vae'\]"):
        InfinityStarVAE.from_state_dict({"vae": vae_state_dict, "ema": vae_state_dict})


# ---------------------------------------------------------------- post-processing


def test_video_to_frames_default(cases):
    video = cases["decode.output"]
    batch, _, frames, height, width = video.shape

    result = video_to_frames(video)

    assert result.shape == (batch * frames, height, width, 3)
    assert result.min() >= 0
    assert result.max() <= 1
    expected = ((video[0, :, 2].permute(1, 2, 0) + 1) / 2).clamp(0, 1)
    assert torch.equal(result[2], expected)


def test_video_to_frames_reference_quirks():
    video = torch.tensor([-1.0, 0.0, 0.999, 2.0]).view(1, 1, 4, 1, 1).expand(1, 3, 4, 1, 1)

    result = video_to_frames(video, reference_postprocess=True)[:, 0, 0, 0]

    # 0.0 maps to 0.5 -> 127.5 -> 127 (truncated), and frame 0 repeats frame 1.
    assert result.tolist() == pytest.approx([127 / 255, 127 / 255, 254 / 255, 1.0])
    single = video_to_frames(video[:, :, :1], reference_postprocess=True)
    assert single.shape[0] == 1
    assert single.max() == 0
