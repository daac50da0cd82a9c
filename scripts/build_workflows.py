"""Write the example workflows in workflows/ as UI-format graphs.

The graphs are described below by node, widget values (by input name) and links. The
node definitions (input order, widget inputs, defaults, output slots) come from a running
ComfyUI server's /object_info, so the positional ``widgets_values`` follow the nodes' real
input order.

Usage: python scripts/build_workflows.py http://127.0.0.1:8188 [output folder]
The server must have this pack loaded. The output folder defaults to workflows/.
"""

import json
import sys
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from faststar.demo import preset as demo_preset  # noqa: E402  (after the path set-up)

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Inputs whose frontend widget has a second, hidden value (the upload button's mode).
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
COLUMN_WIDTH = 380
ROW_HEIGHT = 300
# Height of what the pack's web extension and multiline widgets add to a node.
EXTRA_HEIGHT = {"InfinityStarFastSTAR": 170, "InfinityStarSampler": 60, "InfinityStarTextEncode": 90}

MODEL_720P = "infinitystar_8b_720p_weights"
MODEL_480P = "infinitystar_8b_480p_weights"
VAE = "infinitystar_videovae.pth"
TEXT_ENCODER = "flan-t5-xl-official"
PROMPT = ("A red fox trots through fresh snow in a birch forest at sunrise, its breath steaming, "
          "the camera tracking alongside at ground level.")
# The loaders' choice for the demo model shipped with the pack (nodes/paths.py DEMO_CHOICE).
DEMO_CHOICE = "demo (bundled)"
# A caption in the demo model's grammar: a <colour> <shape> <motion> [on a <background> background].
DEMO_PROMPT = "a red circle moving right on a gray background"


def loaders(model_name: str) -> list:
    return [
        ("model", "InfinityStarModelLoader", {"model_name": model_name}, (0, 0)),
        ("text_encoder", "InfinityStarTextEncoderLoader", {"text_encoder_name": TEXT_ENCODER}, (0, 1)),
        ("vae", "InfinityStarVAELoader", {"vae_name": VAE}, (0, 2)),
    ]


def text(duration: str, position=(2, 1.6)) -> tuple:
    return ("prompt", "InfinityStarTextEncode", {"prompt": PROMPT, "duration_tag": duration}, position)


def demo_sampler_values() -> dict:
    """Sampler widgets for the demo model: its frame count, guidance and temperatures."""
    settings = demo_preset.DEMO_PRESET.settings
    return {"resolution": "auto", "frames": demo_preset.VIDEO_FRAMES, "guidance": settings.guidance,
            "guidance_scale": settings.guidance_scale, "tau_image": settings.tau_image,
            "tau_video": settings.tau_video}


GRAPHS = {
    "demo_text_to_video": {
        "nodes": [
            ("model", "InfinityStarModelLoader", {"model_name": DEMO_CHOICE}, (0, 0)),
            ("text_encoder", "InfinityStarTextEncoderLoader", {"text_encoder_name": DEMO_CHOICE}, (0, 1)),
            ("vae", "InfinityStarVAELoader", {"vae_name": DEMO_CHOICE}, (0, 2)),
            ("prompt", "InfinityStarTextEncode",
             {"prompt": DEMO_PROMPT, "duration_tag": "none", "detail_suffix": False}, (2, 1.6)),
            ("faststar", "InfinityStarFastSTAR", {"preset": "balanced"}, (1, 0)),
            ("sampler", "InfinityStarSampler", demo_sampler_values(), (2, 0)),
            ("decode", "InfinityStarDecode", {}, (3, 0)),
            ("save", "InfinityStarSaveVideo", {"filename_prefix": "InfinityStar/demo_t2v"}, (4, 0)),
        ],
        "links": [
            ("model", 0, "faststar", "model"), ("faststar", 0, "sampler", "model"),
            ("text_encoder", 0, "prompt", "text_encoder"), ("prompt", 0, "sampler", "positive"),
            ("vae", 0, "sampler", "vae"), ("vae", 0, "decode", "vae"), ("sampler", 0, "decode", "codes"),
            ("decode", 0, "save", "images"), ("decode", 1, "save", "fps"),
        ],
    },
    "text_to_video_720p": {
        "nodes": [
            *loaders(MODEL_720P),
            text("5 s"),
            ("faststar", "InfinityStarFastSTAR", {"preset": "balanced"}, (1, 0)),
            ("sampler", "InfinityStarSampler", {"resolution": "720p", "frames": 81}, (2, 0)),
            ("decode", "InfinityStarDecode", {}, (3, 0)),
            ("save", "InfinityStarSaveVideo", {"filename_prefix": "InfinityStar/t2v_720p"}, (4, 0)),
        ],
        "links": [
            ("model", 0, "faststar", "model"), ("faststar", 0, "sampler", "model"),
            ("text_encoder", 0, "prompt", "text_encoder"), ("prompt", 0, "sampler", "positive"),
            ("vae", 0, "sampler", "vae"), ("vae", 0, "decode", "vae"), ("sampler", 0, "decode", "codes"),
            ("decode", 0, "save", "images"), ("decode", 1, "save", "fps"),
        ],
    },
    "image_to_video_720p": {
        "nodes": [
            *loaders(MODEL_720P),
            text("5 s"),
            ("image", "LoadImage", {"image": "infinitystar_first_frame.png"}, (3, 0.8)),
            ("faststar", "InfinityStarFastSTAR", {"preset": "balanced"}, (1, 0)),
            ("sampler", "InfinityStarSampler", {"resolution": "720p", "frames": 81}, (2, 0)),
            ("decode", "InfinityStarDecode", {}, (3, 0)),
            ("save", "InfinityStarSaveVideo", {"filename_prefix": "InfinityStar/i2v_720p"}, (4, 0)),
        ],
        "links": [
            ("model", 0, "faststar", "model"), ("faststar", 0, "sampler", "model"),
            ("text_encoder", 0, "prompt", "text_encoder"), ("prompt", 0, "sampler", "positive"),
            ("vae", 0, "sampler", "vae"), ("image", 0, "sampler", "image"),
            ("vae", 0, "decode", "vae"), ("sampler", 0, "decode", "codes"),
            ("decode", 0, "save", "images"), ("decode", 1, "save", "fps"),
        ],
    },
    "video_continuation_480p_10s": {
        "nodes": [
            *loaders(MODEL_480P),
            text("10 s"),
            ("video", "LoadVideo", {"file": "infinitystar_first_5s.mp4"}, (3, 0.8)),
            ("components", "GetVideoComponents", {}, (4, 0.8)),
            ("faststar", "InfinityStarFastSTAR", {"preset": "balanced"}, (1, 0)),
            ("sampler", "InfinityStarSampler", {"resolution": "480p", "frames": 161}, (2, 0)),
            ("decode", "InfinityStarDecode", {}, (3, 0)),
            ("save", "InfinityStarSaveVideo", {"filename_prefix": "InfinityStar/continuation_480p"}, (4, 0)),
        ],
        "links": [
            ("model", 0, "faststar", "model"), ("faststar", 0, "sampler", "model"),
            ("text_encoder", 0, "prompt", "text_encoder"), ("prompt", 0, "sampler", "positive"),
            ("vae", 0, "sampler", "vae"), ("video", 0, "components", "video"), ("components", 0, "sampler", "video"),
            ("vae", 0, "decode", "vae"), ("sampler", 0, "decode", "codes"),
            ("decode", 0, "save", "images"), ("decode", 1, "save", "fps"),
        ],
    },
    "dense_vs_faststar_720p": {
        "nodes": [
            *loaders(MODEL_720P),
            text("5 s", position=(1, 3)),
            ("faststar", "InfinityStarFastSTAR", {"preset": "balanced"}, (1, 0)),
            ("dense_sampler", "InfinityStarSampler", {"resolution": "720p", "frames": 81}, (2, 1.6)),
            ("faststar_sampler", "InfinityStarSampler", {"resolution": "720p", "frames": 81}, (2, 0)),
            ("dense_decode", "InfinityStarDecode", {}, (3, 1.6)),
            ("faststar_decode", "InfinityStarDecode", {"heatmap": True}, (3, 0)),
            ("compare", "InfinityStarCompareVideos", {}, (4, 0)),
            ("save", "InfinityStarSaveVideo", {"filename_prefix": "InfinityStar/dense_vs_faststar"}, (5, 0)),
            ("save_heatmap", "InfinityStarSaveVideo", {"filename_prefix": "InfinityStar/faststar_heatmap"}, (4, 1.0)),
        ],
        "links": [
            ("model", 0, "faststar", "model"), ("faststar", 0, "faststar_sampler", "model"),
            ("model", 0, "dense_sampler", "model"),
            ("text_encoder", 0, "prompt", "text_encoder"),
            ("prompt", 0, "faststar_sampler", "positive"), ("prompt", 0, "dense_sampler", "positive"),
            ("vae", 0, "faststar_sampler", "vae"), ("vae", 0, "dense_sampler", "vae"),
            ("vae", 0, "dense_decode", "vae"), ("vae", 0, "faststar_decode", "vae"),
            ("dense_sampler", 0, "dense_decode", "codes"), ("faststar_sampler", 0, "faststar_decode", "codes"),
            ("dense_decode", 0, "compare", "reference"), ("faststar_decode", 0, "compare", "candidate"),
            ("compare", 2, "save", "images"), ("dense_decode", 1, "save", "fps"),
            ("faststar_decode", 2, "save_heatmap", "images"), ("faststar_decode", 1, "save_heatmap", "fps"),
        ],
    },
}


def ordered_inputs(definition: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) of every input in the frontend's order: required, then optional.

    A combo's choices are in options["options"] for V3 nodes and in the spec's first
    element for V1 nodes; both end up in options["options"] here.
    """
    result = []
    for section in ("required", "optional"):
        inputs = definition["input"].get(section, {})
        order = definition.get("input_order", {}).get(section, list(inputs))
        for name in order:
            spec = inputs[name]
            options = dict(spec[1]) if len(spec) > 1 else {}
            if isinstance(spec[0], list):
                kind = "COMBO"
                options["options"] = spec[0]
            else:
                kind = spec[0]
            result.append((name, kind, options))
    return result


def widget_values(definition: dict, values: dict) -> list:
    """Positional widgets_values: one per widget input, plus control and upload companions."""
    result = []
    for name, kind, options in ordered_inputs(definition):
        if kind not in WIDGET_TYPES:
            continue
        if name in values:
            value = values[name]
        elif "default" in options:
            value = options["default"]
        else:
            choices = options.get("options") or [""]
            value = choices[0]
        result.append(value)
        if options.get("control_after_generate"):
            result.append("fixed")
        if any(options.get(flag) for flag in UPLOAD_OPTIONS):
            result.append("image")
    return result


def build_graph(spec: dict, object_info: dict) -> dict:
    """Build one UI-format workflow from a graph description."""
    ids = {key: index + 1 for index, (key, *_) in enumerate(spec["nodes"])}
    nodes = {}
    for key, node_type, values, (column, row) in spec["nodes"]:
        definition = object_info[node_type]
        socket_inputs = [(name, kind) for name, kind, _ in ordered_inputs(definition) if kind not in WIDGET_TYPES]
        nodes[key] = {
            "id": ids[key],
            "type": node_type,
            "pos": [column * COLUMN_WIDTH, row * ROW_HEIGHT],
            "size": [340, 80 + 26 * len(widget_values(definition, values)) + EXTRA_HEIGHT.get(node_type, 0)],
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": [{"name": name, "type": kind, "link": None} for name, kind in socket_inputs],
            "outputs": [
                {"name": name, "type": kind, "links": [], "slot_index": slot}
                for slot, (name, kind) in enumerate(zip(definition["output_name"], definition["output"]))
            ],
            "properties": {"Node name for S&R": node_type},
            "widgets_values": widget_values(definition, values),
        }

    links = []
    for link_id, (source, slot, target, input_name) in enumerate(spec["links"], start=1):
        output = nodes[source]["outputs"][slot]
        target_inputs = nodes[target]["inputs"]
        slots = [i for i, item in enumerate(target_inputs) if item["name"] == input_name]
        if not slots:
            # A link into a widget input: the frontend lists it as an input that names its widget,
            # and the widget keeps its place in widgets_values.
            widget_type = _input_type(object_info[nodes[target]["type"]], input_name)
            target_inputs.append({"name": input_name, "type": widget_type, "widget": {"name": input_name},
                                  "link": None})
            slots = [len(target_inputs) - 1]
        target_slot = slots[0]
        output["links"].append(link_id)
        target_inputs[target_slot]["link"] = link_id
        links.append([link_id, ids[source], slot, ids[target], target_slot, output["type"]])

    for order, node in enumerate(_execution_order(nodes, links)):
        node["order"] = order
    return {
        "last_node_id": len(nodes),
        "last_link_id": len(links),
        "nodes": sorted(nodes.values(), key=lambda node: node["id"]),
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}},
        "version": 0.4,
    }


def _input_type(definition: dict, name: str) -> str:
    return next(kind for input_name, kind, _ in ordered_inputs(definition) if input_name == name)


def _execution_order(nodes: dict, links: list) -> list[dict]:
    by_id = {node["id"]: node for node in nodes.values()}
    parents = {node_id: {link[1] for link in links if link[3] == node_id} for node_id in by_id}
    done, order = set(), []
    while len(order) < len(by_id):
        ready = sorted(node_id for node_id in by_id if node_id not in done and parents[node_id] <= done)
        for node_id in ready:
            done.add(node_id)
            order.append(by_id[node_id])
    return order


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    with urllib.request.urlopen(argv[0].rstrip("/") + "/object_info", timeout=60) as response:
        object_info = json.load(response)
    folder = Path(argv[1]) if len(argv) > 1 else REPO_ROOT / "workflows"
    folder.mkdir(parents=True, exist_ok=True)
    for name, spec in GRAPHS.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(build_graph(spec, object_info), indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
