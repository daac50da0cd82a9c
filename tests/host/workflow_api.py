"""Convert UI-format workflows (what the editor saves) to API format (what POST /prompt takes).

The conversion follows the frontend's rules with the server's /object_info. Widget values
are positional in the node's input order (required, then optional). An input with
``control_after_generate`` is followed by the control mode, and an upload combo by the
upload button's value. A linked input takes ``[source node id, output slot]``.
"""

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
# Frontend-only node types that never reach the server.
VIRTUAL_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def input_specs(definition: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) per input, in the order the frontend creates the widgets."""
    specs = []
    for section in ("required", "optional"):
        inputs = definition["input"].get(section, {})
        for name in definition.get("input_order", {}).get(section, list(inputs)):
            spec = inputs[name]
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            specs.append((name, kind, spec[1] if len(spec) > 1 else {}))
    return specs


def missing_node_types(workflow: dict, object_info: dict) -> list[str]:
    """Node types of the workflow that the server does not know."""
    return sorted({node["type"] for node in workflow["nodes"]
                   if node["type"] not in object_info and node["type"] not in VIRTUAL_TYPES})


def to_api(workflow: dict, object_info: dict) -> dict:
    """Return the API-format prompt of a UI-format workflow (muted and bypassed nodes left out)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_TYPES or node.get("mode", 0) != 0:
            continue
        definition = object_info[node["type"]]
        linked = {item["name"]: links[item["link"]] for item in node.get("inputs", []) if item.get("link") is not None}
        values = list(node.get("widgets_values") or [])

        inputs = {}
        for name, kind, options in input_specs(definition):
            if kind in WIDGET_TYPES:
                value = values.pop(0) if values else options.get("default")
                if options.get("control_after_generate") and values:
                    values.pop(0)
                if any(options.get(flag) for flag in UPLOAD_OPTIONS) and values:
                    values.pop(0)
                inputs[name] = value
            if name in linked:
                link = linked[name]
                inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title", node["type"])}}
    return prompt
