"""Checkpoint reading, key checking, loading and conversion (faststar.checkpoints, faststar.convert)."""

import errno
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from faststar import checkpoints, convert
from faststar.checkpoints import (
    config_from_state_dict,
    detect_resolution,
    flat_to_reference_key,
    load_transformer,
    read_transformer_state_dict,
    reference_to_flat_key,
    remap_flat_to_reference,
    remap_reference_to_flat,
    validate_transformer_shapes,
)
from faststar.convert import convert_checkpoint
from faststar.model import TransformerConfig
from tests.reference import tiny_config

TRANSFORMER_FILE = "tiny_transformer.safetensors"
VAE_FILE = "tiny_vae.safetensors"

# Released 8B model: 36 blocks in 6 chunks of 6, width 4096, 32 heads of 128, 8 K/V heads,
# MLP 16384, text 2048, 64-bit codes; 407 tensors and 8,768,382,112 parameters.
RELEASED_TENSORS = 407
RELEASED_PARAMETERS = 8_768_382_112


def released_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of the released 8B checkpoint, written out from the reference naming."""
    C, kv, mlp, head_dim = 4096, 1024, 16384, 128
    block = {
        "attn.q_proj.weight": (C, C),
        "attn.k_proj.weight": (kv, C),
        "attn.v_proj.weight": (kv, C),
        "attn.o_proj.weight": (C, C),
        "attn.q_norm.weight": (head_dim,),
        "attn.k_norm.weight": (head_dim,),
        "mlp.gate_proj.weight": (mlp, C),
        "mlp.up_proj.weight": (mlp, C),
        "mlp.down_proj.weight": (C, mlp),
        "input_layernorm.weight": (C,),
        "post_attention_layernorm.weight": (C,),
    }
    shapes = {
        "cfg_uncond": (512, 2048),
        "sos_token": (1, 1, C),
        "text_proj.weight": (C, 2048),
        "text_proj.bias": (C,),
        "word_embed.weight": (C, 64),
        "word_embed.bias": (C,),
        "norm_hidden_sates.weight": (C,),
        "head.weight": (128, C),
        "head.bias": (128,),
        "semantic_head2.weight": (32, C),
        "semantic_head2.bias": (32,),
    }
    for chunk in range(6):
        for index in range(6):
            for suffix, shape in block.items():
                shapes[f"block_chunks.{chunk}.module.{index}.{suffix}"] = shape
    return shapes


@pytest.fixture(scope="module")
def tiny_state(ref_dir) -> dict[str, torch.Tensor]:
    return load_file(str(ref_dir / TRANSFORMER_FILE))


def write_sharded(state: dict[str, torch.Tensor], folder: Path, shards: int = 2) -> Path:
    """Write ``state`` as a shard folder like the release: index json plus N shard files."""
    folder.mkdir(parents=True)
    names = list(state)
    per_shard = math.ceil(len(names) / shards)
    weight_map = {}
    for number in range(shards):
        shard_name = f"model-{number + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: state[name] for name in names[number * per_shard:(number + 1) * per_shard]}
        save_file(part, str(folder / shard_name), metadata={"format": "pt"})
        weight_map.update({name: shard_name for name in part})

    total = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / checkpoints.SHARD_INDEX_NAME).write_text(json.dumps(index, indent=2))
    return folder


def assert_model_matches(model, state, config, dtype=torch.float32):
    """Every file tensor equals the model tensor under its flat name (blocks rounded to dtype)."""
    per_chunk = config.depth // config.block_chunks
    loaded = model.state_dict()
    assert len(loaded) == len(state)
    for key, value in state.items():
        flat = reference_to_flat_key(key, per_chunk)
        expected = value.to(dtype) if flat.startswith("blocks.") else value
        assert loaded[flat].dtype == expected.dtype, key
        assert torch.equal(loaded[flat], expected), key


# --- key remapping and configuration ---------------------------------------------------


def test_remap_released_block_index():
    assert reference_to_flat_key("block_chunks.2.module.3.attn.q_proj.weight", 6) == "blocks.15.attn.q_proj.weight"
    assert flat_to_reference_key("blocks.35.mlp.up_proj.weight", 6) == "block_chunks.5.module.5.mlp.up_proj.weight"
    assert reference_to_flat_key("head.weight", 6) == "head.weight"


def test_remap_round_trip_keeps_every_key():
    shapes = released_shapes()
    flat = remap_reference_to_flat(shapes)
    assert len(flat) == RELEASED_TENSORS
    assert "blocks.35.post_attention_layernorm.weight" in flat
    assert remap_flat_to_reference(flat, block_chunks=6) == shapes


def test_remap_rejects_module_beyond_chunk():
    with pytest.raises(ValueError, match="block 6 inside chunk 0"):
        reference_to_flat_key("block_chunks.0.module.6.attn.q_proj.weight", 6)


def test_tiny_config_from_shapes(tiny_state, manifest):
    assert config_from_state_dict(tiny_state) == tiny_config(manifest)


def test_tiny_config_from_flat_shapes(tiny_state, manifest):
    flat = remap_reference_to_flat(tiny_state)
    block_chunks = manifest["files"][TRANSFORMER_FILE]["constructor_overrides"]["block_chunks"]

    config = config_from_state_dict(flat, block_chunks=block_chunks)

    assert config == tiny_config(manifest)


def test_released_shapes_validate_on_meta():
    shapes = released_shapes()
    assert len(shapes) == RELEASED_TENSORS

    config = validate_transformer_shapes(shapes)

    assert config == TransformerConfig()
    model = checkpoints.build_transformer_on_meta(config)
    assert all(parameter.is_meta for parameter in model.parameters())
    assert sum(parameter.numel() for parameter in model.parameters()) == RELEASED_PARAMETERS


def test_validator_names_missing_renamed_misshaped():
    shapes = released_shapes()
    missing = "block_chunks.1.module.2.mlp.down_proj.weight"
    renamed = "block_chunks.4.module.0.attn.k_norm.weight"
    misshaped = "text_proj.weight"
    del shapes[missing]
    shapes["block_chunks.4.module.0.attn.k_norm.scale"] = shapes.pop(renamed)
    shapes[misshaped] = (4096, 2047)

    with pytest.raises(ValueError) as caught:
        validate_transformer_shapes(shapes, TransformerConfig())

    message = str(caught.value)
    assert missing in message
    assert renamed in message
    assert "block_chunks.4.module.0.attn.k_norm.scale" in message
    assert f"{misshaped} [4096, 2047] (expected [4096, 2048])" in message
    assert "2 missing" in message
    assert "1 unexpected" in message
    assert "1 mis-shaped" in message


def test_validator_counts_beyond_listed_names():
    shapes = released_shapes()
    for index in range(6):
        del shapes[f"block_chunks.5.module.{index}.attn.q_proj.weight"]

    with pytest.raises(ValueError, match=r"6 missing: .*and 1 more"):
        validate_transformer_shapes(shapes, TransformerConfig())


def test_other_model_is_rejected(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
            "model.diffusion_model.out.2.weight": torch.zeros(4, 4, 3, 3),
        },
        str(path),
    )

    with pytest.raises(ValueError, match="is not an InfinityStar transformer checkpoint") as caught:
        read_transformer_state_dict(path)
    assert "infinitystar_8b_720p_weights" in str(caught.value)


def test_flat_block_names_alone_are_not_infinitystar():
    assert not checkpoints.looks_like_transformer(["blocks.0.attn.q_norm.weight", "blocks.0.mlp.fc1.weight"])


# --- loading -------------------------------------------------------------------------------


def test_tiny_transformer_loads_every_key(ref_dir, manifest, tiny_state):
    entry = manifest["files"][TRANSFORMER_FILE]

    model, info = load_transformer(ref_dir / TRANSFORMER_FILE, dtype=torch.float32)

    assert info.config == tiny_config(manifest)
    assert info.parameter_count == entry["n_params"]
    assert len(tiny_state) == entry["n_tensors"]
    assert info.dtype == torch.float32
    assert info.resolution is None
    assert not model.training
    assert not any(parameter.requires_grad for parameter in model.parameters())
    assert_model_matches(model, tiny_state, info.config)


def test_bf16_load_keeps_non_block_float32(ref_dir, tiny_state):
    model, info = load_transformer(ref_dir / TRANSFORMER_FILE, dtype="bf16")

    assert model.block_dtype == torch.bfloat16
    for name in ("cfg_uncond", "sos_token", "text_proj.weight", "word_embed.bias", "head.weight",
                 "semantic_head2.bias", "norm_hidden_sates.weight"):
        assert model.state_dict()[name].dtype == torch.float32, name
    assert_model_matches(model, tiny_state, info.config, dtype=torch.bfloat16)


def test_sharded_copy_loads_identically(ref_dir, tiny_state, tmp_path):
    folder = write_sharded(tiny_state, tmp_path / "infinitystar_8b_480p_weights")

    model, info = load_transformer(folder, dtype=torch.float32)
    reference, _ = load_transformer(ref_dir / TRANSFORMER_FILE, dtype=torch.float32)

    assert info.resolution == "480p"
    assert_model_matches(model, tiny_state, info.config)
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_sharded_state_dict_reads_lazily(tiny_state, tmp_path):
    folder = write_sharded(tiny_state, tmp_path / "weights")

    with read_transformer_state_dict(folder) as state:
        assert len(state.files()) == 2
        assert state.shapes()["cfg_uncond"] == tuple(tiny_state["cfg_uncond"].shape)
        assert torch.equal(state["head.bias"], tiny_state["head.bias"])


def test_missing_shard_is_named(tiny_state, tmp_path):
    folder = write_sharded(tiny_state, tmp_path / "weights")
    (folder / "model-00002-of-00002.safetensors").unlink()

    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors") as caught:
        load_transformer(folder)
    assert "1 of the 2 shard files" in str(caught.value)


def test_index_tensor_absent_from_shard(tiny_state, tmp_path):
    folder = write_sharded(tiny_state, tmp_path / "weights")
    index_path = folder / checkpoints.SHARD_INDEX_NAME
    index = json.loads(index_path.read_text())
    index["weight_map"]["extra.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))

    with pytest.raises(ValueError, match="extra.weight"):
        read_transformer_state_dict(folder)


def test_missing_tensor_in_file_is_rejected(tiny_state, tmp_path):
    state = dict(tiny_state)
    del state["block_chunks.1.module.0.mlp.up_proj.weight"]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))

    with pytest.raises(ValueError, match=r"1 missing: block_chunks\.1\.module\.0\.mlp\.up_proj\.weight"):
        load_transformer(path)


def test_flat_layout_file_loads(tiny_state, manifest, tmp_path):
    path = tmp_path / "flat.safetensors"
    save_file(remap_reference_to_flat(tiny_state), str(path))

    model, info = load_transformer(path, dtype=torch.float32)

    assert info.config.depth == tiny_config(manifest).depth
    assert_model_matches(model, tiny_state, tiny_config(manifest))


def test_torch_training_checkpoint_unwrapped(tiny_state, tmp_path):
    path = tmp_path / "trainer.pth"
    torch.save({"trainer": {"gpt_fsdp": dict(tiny_state)}}, path)

    model, info = load_transformer(path, dtype=torch.float32)

    assert_model_matches(model, tiny_state, info.config)


def test_unsafe_torch_file_is_rejected(tiny_state, tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state": dict(tiny_state), "hook": Path("not-a-tensor")}, path)

    with pytest.raises(ValueError, match="cannot be read safely"):
        load_transformer(path)


def test_missing_path_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_transformer(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("path", "metadata", "expected"),
    [
        ("/models/infinitystar_8b_720p_weights", None, "720p"),
        ("/models/infinitystar_8b_480p_weights/model.safetensors.index.json", None, "480p"),
        ("/models/infinitystar_8b.safetensors", {"faststar.resolution": "480p"}, "480p"),
        ("/models/infinitystar_8b_720p.safetensors", {"faststar.resolution": "480p"}, "480p"),
        ("/models/infinitystar_8b.safetensors", None, None),
        ("/models/infinitystar_720p_480p.safetensors", None, None),
        ("/models/model_1720px", None, None),
    ],
)
def test_detect_resolution(path, metadata, expected):
    assert detect_resolution(path, metadata) == expected


def test_invalid_resolution_rejected(ref_dir):
    with pytest.raises(ValueError, match="'1080p' is invalid"):
        load_transformer(ref_dir / TRANSFORMER_FILE, resolution="1080p")


# --- conversion ----------------------------------------------------------------------------


def test_convert_fp32_to_bf16_round_trip(ref_dir, tiny_state, tmp_path):
    dst = tmp_path / "tiny_bf16.safetensors"

    written = convert_checkpoint(ref_dir / TRANSFORMER_FILE, dst, dtype="bf16", resolution="720p")

    assert written == dst
    with safe_open(str(dst), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "pt"
    assert metadata["faststar.kind"] == "transformer"
    assert metadata["faststar.resolution"] == "720p"
    assert metadata["faststar.source_dtype"] == "float32"
    assert metadata["faststar.dtype"] == "bfloat16"

    converted = load_file(str(dst))
    assert list(converted) == list(tiny_state)
    assert converted["block_chunks.0.module.0.attn.q_proj.weight"].dtype == torch.bfloat16
    assert converted["text_proj.weight"].dtype == torch.float32

    model, info = load_transformer(dst, dtype=torch.bfloat16)
    assert info.resolution == "720p"
    assert_model_matches(model, tiny_state, info.config, dtype=torch.bfloat16)


def test_convert_sharded_source_keeps_resolution(tiny_state, tmp_path):
    folder = write_sharded(tiny_state, tmp_path / "infinitystar_8b_720p_weights")
    dst = tmp_path / "single.safetensors"

    convert_checkpoint(folder, dst, dtype="fp32")

    assert load_file(str(dst)).keys() == tiny_state.keys()
    with safe_open(str(dst), framework="pt") as handle:
        assert handle.metadata()["faststar.resolution"] == "720p"


def test_convert_refuses_to_overwrite(ref_dir, tmp_path):
    dst = tmp_path / "existing.safetensors"
    dst.write_bytes(b"keep me")

    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_checkpoint(ref_dir / TRANSFORMER_FILE, dst)
    assert dst.read_bytes() == b"keep me"

    convert_checkpoint(ref_dir / TRANSFORMER_FILE, dst, overwrite=True)
    assert len(load_file(str(dst))) == len(load_file(str(ref_dir / TRANSFORMER_FILE)))


def test_convert_full_disk_leaves_nothing(ref_dir, tmp_path, monkeypatch):
    real_tensor_bytes = convert._tensor_bytes
    calls = []

    def fail_on_third_tensor(tensor):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_tensor_bytes(tensor)

    monkeypatch.setattr(convert, "_tensor_bytes", fail_on_third_tensor)
    dst = tmp_path / "out.safetensors"

    with pytest.raises(OSError, match="disk filled up while writing") as caught:
        convert_checkpoint(ref_dir / TRANSFORMER_FILE, dst)

    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_convert_rejects_bad_destination(ref_dir, tmp_path):
    with pytest.raises(ValueError, match="must end in .safetensors"):
        convert_checkpoint(ref_dir / TRANSFORMER_FILE, tmp_path / "out.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_checkpoint(ref_dir / TRANSFORMER_FILE, tmp_path / "missing" / "out.safetensors")
    with pytest.raises(ValueError, match="dtype 'int8'"):
        convert_checkpoint(ref_dir / TRANSFORMER_FILE, tmp_path / "out.safetensors", dtype="int8")


# --- VAE ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vae_state(ref_dir) -> dict[str, torch.Tensor]:
    pytest.importorskip("faststar.vae")
    return load_file(str(ref_dir / VAE_FILE))


def assert_vae_matches(vae, state):
    loaded = vae.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_vae_loads_safetensors(ref_dir, tiny_vae_state, manifest):
    vae = checkpoints.load_vae(ref_dir / VAE_FILE)

    assert len(tiny_vae_state) == manifest["files"][VAE_FILE]["n_tensors"]
    assert_vae_matches(vae, tiny_vae_state)


def test_vae_loads_released_pth_layout(tiny_vae_state, tmp_path):
    path = tmp_path / "infinitystar_videovae.pth"
    torch.save({"vae": dict(tiny_vae_state), "ema": dict(tiny_vae_state)}, path)

    vae = checkpoints.load_vae(path)

    assert_vae_matches(vae, tiny_vae_state)


def test_vae_rejects_transformer(ref_dir, tiny_vae_state):
    with pytest.raises(ValueError, match="is the InfinityStar transformer, not the VAE"):
        checkpoints.load_vae(ref_dir / TRANSFORMER_FILE)


def test_vae_rejects_other_file(tmp_path, tiny_vae_state):
    path = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(path))

    with pytest.raises(ValueError, match="is not the InfinityStar video VAE"):
        checkpoints.load_vae(path)


def test_vae_rejects_missing_tensor(tmp_path, tiny_vae_state):
    state = dict(tiny_vae_state)
    del state["decoder.conv_out.conv.bias"]
    path = tmp_path / "vae.safetensors"
    save_file(state, str(path))

    with pytest.raises(ValueError, match="decoder.conv_out.conv.bias"):
        checkpoints.load_vae(path)


def test_vae_rejects_unsafe_pth(tmp_path, tiny_vae_state):
    path = tmp_path / "vae.pth"
    torch.save({"vae": dict(tiny_vae_state), "args": Path("x")}, path)

    with pytest.raises(ValueError, match="cannot be read safely"):
        checkpoints.load_vae(path)


def test_convert_vae_from_pth(tiny_vae_state, tmp_path):
    src = tmp_path / "infinitystar_videovae.pth"
    torch.save({"vae": dict(tiny_vae_state)}, src)
    dst = tmp_path / "vae_fp32.safetensors"

    convert_checkpoint(src, dst, dtype="fp32")

    with safe_open(str(dst), framework="pt") as handle:
        assert handle.metadata()["faststar.kind"] == "vae"
        assert "faststar.resolution" not in handle.metadata()
    converted = load_file(str(dst))
    for key, value in tiny_vae_state.items():
        assert converted[key].dtype == value.dtype, key
        assert torch.equal(converted[key], value), key
    assert_vae_matches(checkpoints.load_vae(dst), tiny_vae_state)
