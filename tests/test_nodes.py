"""In-process tests of the node pack: schemas, loaders, text, FastSTAR, sampler and decode.

ComfyUI is imported in this process on the CPU (COMFYUI_PATH; skipped when unset) and the
nodes run on the tiny reference models.
"""

import dataclasses
from pathlib import Path

import pytest
import torch

from .host.harness import REPO_ROOT
from .host.node_fixtures import comfy, pack, tiny  # noqa: F401  (pytest fixtures)

PROMPT = "a red fox runs through fresh snow"


def run(node_class, **inputs):
    """Execute a V3 node as the executor does, on a locked clone of the class."""
    from comfy_api.latest import io

    clone = node_class.PREPARE_CLASS_CLONE({}) if hasattr(node_class, "PREPARE_CLASS_CLONE") else node_class
    output = clone.execute(**inputs)
    assert isinstance(output, io.NodeOutput)
    return output


def sampler_inputs(**changes):
    inputs = dict(resolution="auto", aspect_ratio="auto", frames=17, seed=7, guidance="apg", guidance_scale=34.0,
                  tau_image=1.0, tau_video=0.4)
    inputs.update(changes)
    return inputs


@pytest.fixture(scope="module")
def loaded(pack, tiny):
    """The tiny transformer, VAE and text encoder loaded through the loader nodes."""
    model = run(pack.loaders.ModelLoader, model_name=tiny.model, dtype="fp32", resolution="auto").result[0]
    vae = run(pack.loaders.VAELoader, vae_name=tiny.vae).result[0]
    encoder = run(pack.text.TextEncoderLoader, text_encoder_name=tiny.text_encoder, dtype="auto").result[0]
    positive = run(pack.text.TextEncode, text_encoder=encoder, prompt=PROMPT, duration_tag="5 s",
                   detail_suffix=True).result[0]
    return model, vae, encoder, positive


@pytest.fixture(scope="module")
def dense_run(pack, loaded):
    model, _, _, positive = loaded
    return run(pack.sampler.STARSampler, model=model, positive=positive, **sampler_inputs())


# ---------------------------------------------------------------------------------------
# Schemas, help pages, registration
# ---------------------------------------------------------------------------------------


def test_every_node_documented(pack):
    for node in pack.NODES:
        schema = node.GET_SCHEMA()
        assert schema.node_id.startswith("InfinityStar"), schema.node_id
        assert schema.description, f"{schema.node_id} has no description"
        for item in [*schema.inputs, *schema.outputs]:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"
        help_page = REPO_ROOT / "web" / "docs" / f"{schema.node_id}.md"
        assert help_page.is_file(), f"missing help page {help_page}"


def test_node_ids_unique_and_not_core(pack, comfy):
    import nodes as core_nodes

    ids = [node.GET_SCHEMA().node_id for node in pack.NODES]
    assert len(ids) == len(set(ids))
    assert not set(ids) & set(core_nodes.NODE_CLASS_MAPPINGS)


def test_faststar_node_exposes_every_knob(pack):
    faststar = pack.faststar_node
    schema = faststar.FastSTAR.GET_SCHEMA()
    inputs = {item.id for item in schema.inputs}
    covered = set(faststar.DIRECT_KNOBS.values()) | {"prune_ratios", "fusion_p", "restore_layers"}
    fields = {field.name for field in dataclasses.fields(pack.faststar_node.pruning.PruningConfig)}
    assert covered == fields
    assert set(faststar.DIRECT_KNOBS) <= inputs
    assert set(faststar.KEEP_RATIO_INPUTS) <= inputs
    assert schema.inputs[0].io_type == "INFINITYSTAR_MODEL"


def test_model_folder_keeps_yaml_paths(pack, comfy, tmp_path):
    folder_paths = comfy.folder_paths
    saved = folder_paths.folder_names_and_paths.pop("infinitystar")
    try:
        yaml_dir = str(tmp_path / "from_yaml")
        folder_paths.add_model_folder_path("infinitystar", yaml_dir)  # what extra_model_paths.yaml does
        pack.paths.register_model_folders()
        paths, extensions = folder_paths.folder_names_and_paths["infinitystar"]
        assert paths[0] == yaml_dir
        assert str(Path(folder_paths.models_dir) / "infinitystar") in paths
        assert ".safetensors" in extensions
    finally:
        folder_paths.folder_names_and_paths["infinitystar"] = saved


def test_loader_lists(pack, tiny):
    assert tiny.model in pack.paths.list_transformers()
    assert tiny.vae in pack.paths.list_vaes()
    assert tiny.text_encoder in pack.paths.list_text_encoders()


def test_loaders_offer_demo_first(pack, tiny):
    loaders = {pack.loaders.ModelLoader: ("model_name", tiny.model), pack.loaders.VAELoader: ("vae_name", tiny.vae),
               pack.text.TextEncoderLoader: ("text_encoder_name", tiny.text_encoder)}
    for node, (name, listed) in loaders.items():
        widget = next(item for item in node.GET_SCHEMA().inputs if item.id == name)
        assert widget.options[0] == pack.paths.DEMO_CHOICE
        assert listed in widget.options


def test_sharded_folder_listed_once(pack, tiny):
    folder = tiny.models_dir / "infinitystar" / "sharded_720p"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"")
    try:
        listed = pack.paths.list_transformers()
        assert "sharded_720p" in listed
        assert not any(name.startswith("sharded_720p/") for name in listed)
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


# ---------------------------------------------------------------------------------------
# Loaders and text
# ---------------------------------------------------------------------------------------


def test_model_loader_wraps_patcher(pack, loaded):
    import comfy.model_patcher

    model = loaded[0]
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    info = model.get_attachment(pack.types.CHECKPOINT_INFO_KEY)
    assert info.config.text_channels == 32
    assert model.model_size() > 0
    assert pack.sampler.resolve_preset("auto", info) == "tiny"


def test_model_loader_resolution_override(pack, tiny):
    model = run(pack.loaders.ModelLoader, model_name=tiny.model, dtype="fp32", resolution="480p").result[0]
    assert model.get_attachment(pack.types.CHECKPOINT_INFO_KEY).resolution == "480p"


def test_text_encode_conditioning(pack, loaded, tiny):
    positive = loaded[3]
    features, extras = positive[0]
    assert features.shape[0] == 1
    assert features.shape[2] == tiny.text_channels
    assert extras["infinitystar_prompt"].startswith("<<<t=5s>>>" + PROMPT)
    assert extras["infinitystar_prompt"].endswith(pack.text.text_encoder.DETAIL_SUFFIX)


def test_text_encode_without_decoration(pack, loaded):
    encoder = loaded[2]
    plain = run(pack.text.TextEncode, text_encoder=encoder, prompt=PROMPT, duration_tag="none",
                detail_suffix=False).result[0]
    assert plain[0][1]["infinitystar_prompt"] == PROMPT
    assert plain[0][0].shape[1] < loaded[3][0][0].shape[1]


# ---------------------------------------------------------------------------------------
# FastSTAR node
# ---------------------------------------------------------------------------------------


def faststar_inputs(pack, preset="custom", **changes):
    values = pack.routes.preset_inputs(pack.faststar_node.pruning.PRESETS["balanced"])
    values.update(changes)
    return dict(preset=preset, **values)


def test_faststar_preset_patches_clone(pack, loaded):
    model = loaded[0]
    patched = run(pack.faststar_node.FastSTAR, model=model, **faststar_inputs(pack, preset="fast")).result[0]
    assert patched is not model
    assert patched.model is model.model
    config = patched.model_options["transformer_options"]["faststar"]
    assert config == pack.faststar_node.pruning.PRESETS["fast"]
    assert "faststar" not in model.model_options.get("transformer_options", {})


def test_faststar_custom_knobs(pack, loaded):
    knobs = faststar_inputs(pack, keep_ratio_last=0.25, keep_ratio_2nd_last=1.0, keep_ratio_3rd_last=0.5,
                            keep_ratio_4th_last=1.0, score="spatial", per_frame=True, fusion_p=0.0)
    patched = run(pack.faststar_node.FastSTAR, model=loaded[0], **knobs).result[0]
    config = patched.model_options["transformer_options"]["faststar"]
    assert config.prune_ratios == (0.5, 0.0, 0.75)
    assert config.score == "spatial"
    assert config.per_frame
    assert config.fusion_p == float("inf")


def test_faststar_keep_ratio_one_returns_model(pack, loaded):
    model = loaded[0]
    knobs = faststar_inputs(pack, keep_ratio_last=1.0, keep_ratio_2nd_last=1.0, keep_ratio_3rd_last=1.0)
    assert run(pack.faststar_node.FastSTAR, model=model, **knobs).result[0] is model
    assert run(pack.faststar_node.FastSTAR, model=model, **faststar_inputs(pack, preset="off")).result[0] is model


@pytest.mark.parametrize("changes, words", [
    ({"keep_ratio_last": 0.0}, ["keep ratio 0.0", "last scale", "method 'skip'"]),
    ({"method": "skip", "keep_ratio_last": 0.5, "keep_ratio_2nd_last": 1.0, "keep_ratio_3rd_last": 1.0},
     ["keep ratio 0.5 for the last scale", "method 'skip'", "0.0"]),
    ({"method": "skip", "keep_ratio_last": 1.0, "keep_ratio_2nd_last": 0.0, "keep_ratio_3rd_last": 1.0},
     ["skip", "final scales"]),
])
def test_faststar_invalid_keep_ratios(pack, loaded, changes, words):
    with pytest.raises(ValueError) as error:
        run(pack.faststar_node.FastSTAR, model=loaded[0], **faststar_inputs(pack, **changes))
    for word in words:
        assert word in str(error.value)


# ---------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------


def test_sampler_text_to_video(dense_run):
    codes, stats = dense_run.result
    assert tuple(codes.codes.shape) == (1, 64, 5, 6, 11)
    assert codes.settings.preset == "tiny"
    assert stats["tokens_refined"] == stats["tokens"] > 0
    assert stats["estimated_speedup"] == 1.0
    assert dense_run.ui["faststar_stats"][0] is stats


def test_sampler_repeatable_and_seeded(pack, loaded, dense_run):
    model, _, _, positive = loaded
    again = run(pack.sampler.STARSampler, model=model, positive=positive, **sampler_inputs()).result[0]
    other = run(pack.sampler.STARSampler, model=model, positive=positive, **sampler_inputs(seed=8)).result[0]
    assert torch.equal(again.codes, dense_run.result[0].codes)
    assert not torch.equal(other.codes, dense_run.result[0].codes)


def test_sampler_keep_ratio_one_is_dense(pack, loaded, dense_run):
    model, _, _, positive = loaded
    knobs = faststar_inputs(pack, keep_ratio_last=1.0, keep_ratio_2nd_last=1.0, keep_ratio_3rd_last=1.0)
    same = run(pack.faststar_node.FastSTAR, model=model, **knobs).result[0]
    codes = run(pack.sampler.STARSampler, model=same, positive=positive, **sampler_inputs()).result[0]
    assert torch.equal(codes.codes, dense_run.result[0].codes)


@pytest.fixture(scope="module")
def pruned_run(pack, loaded):
    model, _, _, positive = loaded
    patched = run(pack.faststar_node.FastSTAR, model=model, **faststar_inputs(pack, preset="balanced")).result[0]
    return run(pack.sampler.STARSampler, model=patched, positive=positive, **sampler_inputs())


def test_sampler_with_faststar(pruned_run, dense_run):
    codes, stats = pruned_run.result
    assert stats["pruning"] == "partial"
    assert stats["tokens_refined"] < stats["tokens"]
    assert stats["estimated_speedup"] > 1.0
    assert stats["per_scale"], "no pruned step reported"
    assert codes.codes.shape == dense_run.result[0].codes.shape


def test_sampler_image_only(pack, loaded):
    model, _, _, positive = loaded
    codes = run(pack.sampler.STARSampler, model=model, positive=positive, **sampler_inputs(frames=1)).result[0]
    assert codes.codes.shape[2] == 1


def test_sampler_image_to_video(pack, loaded):
    model, vae, _, positive = loaded
    image = torch.rand(1, 120, 220, 3)  # h/w 0.545, nearest the 0.562 template
    codes = run(pack.sampler.STARSampler, model=model, positive=positive, vae=vae, image=image,
                **sampler_inputs()).result[0]
    assert tuple(codes.codes.shape) == (1, 64, 5, 6, 11)


def test_sampler_video_continuation(pack, loaded):
    model, vae, _, positive = loaded
    video = torch.rand(9, 96, 176, 3)  # 9 frames = the image and the first 2-latent-frame clip
    codes = run(pack.sampler.STARSampler, model=model, positive=positive, vae=vae, video=video,
                **sampler_inputs()).result[0]
    assert tuple(codes.codes.shape) == (1, 64, 5, 6, 11)


def test_estimate_payload(pack):
    balanced = pack.routes.estimate_payload({"preset": "balanced", "resolution": "720p", "frames": 81})
    dense = pack.routes.estimate_payload({"preset": "custom", "resolution": "720p", "frames": 81, "knobs": {
        "keep_ratio_last": 1.0, "keep_ratio_2nd_last": 1.0, "keep_ratio_3rd_last": 1.0}})
    assert balanced["speedup"] > 1.5
    assert dense["speedup"] == pytest.approx(1.0)
    pruned = [scale for scale in balanced["scales"] if scale["keep_ratio"] < 1.0]
    # 81 frames at 720p are the image clip and one video clip of 15 scales. The balanced preset
    # prunes that clip's last three scales by 50 / 50 / 60 %.
    assert [scale["rel_si"] for scale in pruned] == [12, 13, 14]
    assert all(scale["clip"] == 1 for scale in pruned)
    assert [round(scale["keep_ratio"], 2) for scale in pruned] == [0.5, 0.5, 0.4]


# ---------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decoded(pack, loaded, pruned_run):
    vae = loaded[1]
    return run(pack.decode.Decode, vae=vae, codes=pruned_run.result[0], reference_postprocess=True, heatmap=True)


def test_decode_frames(decoded):
    frames, fps, _ = decoded.result
    assert tuple(frames.shape) == (17, 96, 176, 3)
    assert frames.min() >= 0
    assert frames.max() <= 1
    assert fps == 16.0
    assert torch.equal(frames[0], frames[1])  # the reference's first-frame rule


def test_decode_heatmap(decoded, pruned_run):
    heatmap = decoded.result[2]
    pruned_steps = len(pruned_run.result[1]["per_scale"])  # each adds one map per latent frame
    assert heatmap.shape[1:] == (96, 176, 3)
    assert heatmap.shape[0] >= pruned_steps
    assert set(heatmap.unique().tolist()) <= {0.0, 1.0}
    assert 0 < heatmap.mean() < 1


def test_decode_heatmap_off_blocks(pack, loaded, dense_run):
    from comfy_execution.graph_utils import ExecutionBlocker

    output = run(pack.decode.Decode, vae=loaded[1], codes=dense_run.result[0], reference_postprocess=False,
                 heatmap=True)
    assert isinstance(output.result[2], ExecutionBlocker)
