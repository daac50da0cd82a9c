"""Host tests: the pack inside a real ComfyUI server, started headless on the CPU.

Every workflow in workflows/ is converted to API format with the server's /object_info,
queued, and its outputs checked. The demo workflow runs as shipped, on the bundled demo
model; the others are pointed at the tiny models. Needs COMFYUI_PATH.
"""

import io
import json
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from . import harness, workflow_api

PACK_NODES = (
    "InfinityStarModelLoader", "InfinityStarVAELoader", "InfinityStarTextEncoderLoader", "InfinityStarTextEncode",
    "InfinityStarFastSTAR", "InfinityStarSampler", "InfinityStarDecode", "InfinityStarSaveVideo",
    "InfinityStarCompareVideos",
)
WORKFLOWS_DIR = harness.REPO_ROOT / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS_DIR.glob("*.json"))
# The tiny models generate 17 frames at 96x176 (or 1 frame); the examples ask for 81 or 161.
TINY_FRAMES = 17
TINY_SIZE = (96, 176)
# Input files the example workflows load, made for the tiny models.
FIRST_FRAME = "infinitystar_first_frame.png"
FIRST_CLIPS = "infinitystar_first_5s.mp4"
FIRST_CLIPS_FRAMES = 9  # the image clip and the first 2-latent-frame clip of the tiny schedule
# The workflow that runs as shipped, on the demo model bundled with the pack.
DEMO_WORKFLOW = "demo_text_to_video"
DEMO_CHOICE = "demo (bundled)"
DEMO_FRAMES = 17
DEMO_SIZE = (64, 64)


@pytest.fixture(scope="module")
def object_info(host):
    return host.server.get_json("/object_info")


@pytest.fixture(scope="module")
def input_files(host):
    """The image and the video the example workflows load, sized for the tiny models."""
    height, width = TINY_SIZE
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    Image.fromarray(frame).save(host.server.input_dir / FIRST_FRAME)

    with av.open(str(host.server.input_dir / FIRST_CLIPS), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(16))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(FIRST_CLIPS_FRAMES):
            shifted = np.roll(frame, shift=4 * index, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(shifted, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return FIRST_FRAME, FIRST_CLIPS


def for_tiny_models(prompt: dict, host) -> dict:
    """Point an example prompt at the tiny models: file names, resolution and frame count."""
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "InfinityStarModelLoader":
            inputs["model_name"] = host.model
        elif kind == "InfinityStarVAELoader":
            inputs["vae_name"] = host.vae
        elif kind == "InfinityStarTextEncoderLoader":
            inputs["text_encoder_name"] = host.text_encoder
        elif kind == "InfinityStarSampler":
            inputs["resolution"] = "auto"
            inputs["frames"] = TINY_FRAMES if inputs["frames"] > 1 else 1
    return prompt


def load_workflow(path):
    return json.loads(path.read_text())


def prompt_for_test(path, workflow: dict, object_info: dict, host) -> dict:
    """The API prompt of a workflow: the demo workflow as shipped, the others on the tiny models."""
    prompt = workflow_api.to_api(workflow, object_info)
    return prompt if path.stem == DEMO_WORKFLOW else for_tiny_models(prompt, host)


def saved_videos(result: dict, host) -> list[tuple[str, bytes]]:
    files = []
    for output in result["history"]["outputs"].values():
        for entry in output.get("images", []):
            if entry["type"] == "output":
                files.append((entry["filename"], host.server.view(entry)))
    return files


def decode_video(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


# ---------------------------------------------------------------------------------------


def test_pack_nodes_registered(host, object_info):
    for node_id in PACK_NODES:
        assert node_id in object_info, f"{node_id} missing from /object_info"
        definition = object_info[node_id]
        assert definition["description"]
        for section in ("required", "optional"):
            for name, spec in definition["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_pack_imported_cleanly(host, object_info):
    log = host.server.log_text()
    pack_lines = [line for line in log.splitlines() if "custom_nodes/faststar" in line]
    assert pack_lines, "the pack was not loaded from custom_nodes"
    assert not any("IMPORT FAILED" in line for line in pack_lines), "\n".join(pack_lines)
    assert "Cannot import" not in "\n".join(pack_lines)
    assert "Error while calling comfy_entrypoint" not in log


def test_templates_list_every_workflow(host):
    templates = host.server.get_json("/workflow_templates")
    assert sorted(templates["faststar"]) == sorted(path.stem for path in WORKFLOW_FILES)
    assert len(WORKFLOW_FILES) == 5
    assert DEMO_WORKFLOW in templates["faststar"]


def test_model_folders_listed(host):
    assert host.model in host.server.get_json("/models/infinitystar")


def test_loaders_list_demo_first(object_info):
    widgets = {"InfinityStarModelLoader": "model_name", "InfinityStarVAELoader": "vae_name",
               "InfinityStarTextEncoderLoader": "text_encoder_name"}
    for node_id, name in widgets.items():
        spec = object_info[node_id]["input"]["required"][name]
        choices = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
        assert choices[0] == DEMO_CHOICE, node_id


def test_web_extension_and_help_served(host):
    extensions = host.server.get_json("/extensions")
    assert "/extensions/faststar/js/faststar.js" in extensions
    status, page = host.server.request("/extensions/faststar/docs/InfinityStarFastSTAR.md")
    assert status == 200
    assert b"FastSTAR" in page


def test_estimate_routes(host):
    presets = host.server.get_json("/faststar/presets")
    assert presets["balanced"]["keep_ratio_last"] == pytest.approx(0.4)
    status, payload = host.server.request("/faststar/estimate", {"preset": "balanced", "resolution": "480p",
                                                                 "frames": 161})
    assert status == 200
    estimate = json.loads(payload)
    assert estimate["speedup"] > 1.0
    status, payload = host.server.request("/faststar/estimate", {"preset": "balanced", "frames": 80})
    assert status == 400
    assert "80" in json.loads(payload)["error"]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[path.stem for path in WORKFLOW_FILES])
def test_workflow_runs_end_to_end(host, object_info, input_files, path):
    workflow = load_workflow(path)
    assert workflow_api.missing_node_types(workflow, object_info) == []
    prompt = prompt_for_test(path, workflow, object_info, host)

    result = host.server.run_prompt(prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
    assert result["queued"], result
    assert result["status"] == "success", (result["messages"][-3:], host.server.log_tail())

    types = [message["type"] for message in result["messages"]]
    assert "progress" in types
    assert result["previews"] > 0, "no live preview was sent"
    samplers = [node_id for node_id, node in prompt.items() if node["class_type"] == "InfinityStarSampler"]
    for node_id in samplers:
        stats = result["history"]["outputs"][node_id]["faststar_stats"][0]
        assert stats["tokens"] > 0
        assert stats["seconds"] > 0

    videos = saved_videos(result, host)
    assert videos, "no video was saved"
    for name, data in videos:
        frames = decode_video(data)
        assert frames.shape[1] % 2 == 0
        assert frames.shape[2] % 2 == 0
        if "heatmap" not in name:
            assert frames.shape[0] == TINY_FRAMES, name
        with av.open(io.BytesIO(data)) as container:
            assert json.loads(container.metadata["workflow"]) == workflow

    if path.stem == "dense_vs_faststar_720p":
        check_dense_against_faststar(prompt, result)
    if path.stem == DEMO_WORKFLOW:
        check_demo_run(prompt, result, videos)


def check_demo_run(prompt: dict, result: dict, videos: list[tuple[str, bytes]]) -> None:
    """The shipped demo workflow ran the demo model with FastSTAR and saved a 64x64 video."""
    loaders = [node for node in prompt.values() if node["class_type"].endswith("Loader")]
    assert len(loaders) == 3
    assert all(DEMO_CHOICE in node["inputs"].values() for node in loaders)

    sampler_id = next(node_id for node_id, node in prompt.items() if node["class_type"] == "InfinityStarSampler")
    stats = result["history"]["outputs"][sampler_id]["faststar_stats"][0]
    assert stats["pruning"] == "partial"
    assert stats["estimated_speedup"] > 1.0
    frames = decode_video(videos[0][1])
    assert frames.shape[:3] == (DEMO_FRAMES, *DEMO_SIZE)


def check_dense_against_faststar(prompt: dict, result: dict) -> None:
    """The compare node scored the two runs, and only the FastSTAR run pruned."""
    outputs = result["history"]["outputs"]
    compare_id = next(node_id for node_id, node in prompt.items() if node["class_type"] == "InfinityStarCompareVideos")
    text = outputs[compare_id]["text"][0]
    assert "PSNR" in text
    assert "SSIM" in text
    assert f"over {TINY_FRAMES} frames" in text

    speedups = sorted(outputs[node_id]["faststar_stats"][0]["estimated_speedup"]
                      for node_id, node in prompt.items() if node["class_type"] == "InfinityStarSampler")
    assert speedups[0] == 1.0
    assert speedups[1] > 1.0


def test_runtime_error_reaches_client(host, object_info):
    workflow = load_workflow(WORKFLOWS_DIR / "text_to_video_720p.json")
    prompt = for_tiny_models(workflow_api.to_api(workflow, object_info), host)
    sampler = next(node for node in prompt.values() if node["class_type"] == "InfinityStarSampler")
    sampler["inputs"]["frames"] = 81
    result = host.server.run_prompt(prompt)
    assert result["status"] == "error"
    error = next(message for message in result["messages"] if message["type"] == "execution_error")
    assert error["data"]["node_type"] == "InfinityStarSampler"
    assert "video_frames=81" in error["data"]["exception_message"]


def test_cancel_stops_run_and_leaves_no_file(host, object_info):
    workflow = load_workflow(WORKFLOWS_DIR / "text_to_video_720p.json")
    prompt = for_tiny_models(workflow_api.to_api(workflow, object_info), host)
    save = next(node for node in prompt.values() if node["class_type"] == "InfinityStarSaveVideo")
    save["inputs"]["filename_prefix"] = "cancelled/run"
    sampler_id = next(node_id for node_id, node in prompt.items() if node["class_type"] == "InfinityStarSampler")
    prompt[sampler_id]["inputs"]["seed"] = 12345  # not cached from the other tests

    def cancel_when_sampler_starts(message):
        # The sampler, decode and save of the tiny models take about a second, much longer than
        # the request, so Cancel lands while one of them runs (the in-process tests pin the step).
        if message["type"] == "executing" and message["data"].get("node") == sampler_id:
            host.server.interrupt()

    result = host.server.run_prompt(prompt, on_message=cancel_when_sampler_starts)
    assert "execution_interrupted" in [message["type"] for message in result["messages"]]
    assert result["status"] == "error"
    cancelled = host.server.output_dir / "cancelled"
    assert not cancelled.exists() or not any(cancelled.iterdir()), list(cancelled.iterdir())

    again = host.server.run_prompt(prompt)
    assert again["status"] == "success"
