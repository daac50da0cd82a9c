"""Text nodes: the text encoder loader (Flan-T5 or the demo model's) and the prompt encoder.

The prompt encoder returns core CONDITIONING (a list of ``[features [1, L, C], extras]``),
so core conditioning nodes can sit between it and the sampler. The encoder itself is
not a core CLIP: core CLIPLoader would build Flan-T5-XL as AuraFlow's Pile-T5 (another
relative-position layout and tokenizer), so it has a type of its own.

The demo model's text encoder is a small transformer over the words of its caption
grammar, not T5. It takes the prompt as written, without the reference's decoration.
"""

import logging

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..faststar import text_encoder
from ..faststar.demo import weights as demo_weights
from . import paths, patching
from .types import InfinityStarTextEncoder, LoadedTextEncoder

logger = logging.getLogger(__name__)

CATEGORY = "InfinityStar"
TEXT_DTYPE_CHOICES = ("auto", "fp16", "bf16", "fp32")
DURATION_TAGS = {"5 s": 5, "10 s": 10, "none": None}
# Key under which the prompt as fed to T5 is kept in the CONDITIONING extras.
PROMPT_EXTRA_KEY = "infinitystar_prompt"


class TextEncoderLoader(io.ComfyNode):
    """Load the Flan-T5-XL encoder and its tokenizer, or the demo model's text encoder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfinityStarTextEncoderLoader",
            display_name="Load InfinityStar Text Encoder",
            category=f"{CATEGORY}/loaders",
            description=(
                "Loads the text encoder: 'demo (bundled)', the demo model's own small encoder, or the "
                "Flan-T5-XL encoder of InfinityStar from a Hugging Face folder (config.json, tokenizer files, "
                "safetensors weights) in models/text_encoders or models/infinitystar, for example "
                "text_encoder/flan-t5-xl-official from the InfinityStar release. Works offline."
            ),
            inputs=[
                io.Combo.Input(
                    "text_encoder_name", options=paths.with_demo(paths.list_text_encoders()),
                    tooltip="'demo (bundled)' for the demo model's encoder, or a folder with config.json, the "
                            "tokenizer files and the Flan-T5 encoder weights.",
                ),
                io.Combo.Input(
                    "dtype", options=list(TEXT_DTYPE_CHOICES), default="auto",
                    tooltip="Weight dtype of Flan-T5. auto: fp16 on CUDA, run under bf16 autocast as the "
                            "reference does, and fp32 elsewhere (CPUs lack fast fp16). The demo encoder "
                            "always runs in fp32.",
                ),
            ],
            outputs=[InfinityStarTextEncoder.Output("text_encoder", tooltip="The text encoder and its tokenizer.")],
        )

    @classmethod
    def execute(cls, text_encoder_name, dtype) -> io.NodeOutput:
        load_device = mm.text_encoder_device()
        offload_device = mm.text_encoder_offload_device()
        if text_encoder_name == paths.DEMO_CHOICE:
            return io.NodeOutput(_load_demo_encoder(dtype, load_device, offload_device))

        path = paths.resolve(paths.TEXT_ENCODER_FOLDERS, text_encoder_name)
        weight_dtype, autocast_dtype = _text_dtypes(dtype, load_device)

        encoder = text_encoder.TextEncoder.load(
            path, device=offload_device, dtype=weight_dtype, autocast_dtype=autocast_dtype,
        )
        patcher = patching.wrap(patching.ModuleHolder(encoder.model), load_device, offload_device)
        return io.NodeOutput(LoadedTextEncoder(encoder, patcher, path))


def _load_demo_encoder(dtype: str, load_device, offload_device) -> LoadedTextEncoder:
    """Load the demo model's text encoder from the weights shipped with the pack."""
    if dtype != "auto":
        logger.info("the demo text encoder runs in fp32; dtype %s is ignored", dtype)
    path = paths.demo_file(demo_weights.TEXT_ENCODER_FILE)
    encoder = demo_weights.load_text_encoder(path, device=offload_device)
    patcher = patching.wrap(patching.ModuleHolder(encoder), load_device, offload_device)
    return LoadedTextEncoder(encoder, patcher, path, decorate=False)


def _text_dtypes(choice: str, device) -> tuple[torch.dtype, torch.dtype | None]:
    """(weight dtype, autocast dtype) for a dtype choice on the load device."""
    on_cuda = torch.device(device).type == "cuda"
    if choice == "auto":
        return (torch.float16, torch.bfloat16) if on_cuda else (torch.float32, None)
    weight = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[choice]
    return weight, None


class TextEncode(io.ComfyNode):
    """Encode a prompt the way the InfinityStar scripts do."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfinityStarTextEncode",
            display_name="InfinityStar Text Encode",
            category=CATEGORY,
            description=(
                "Encodes a prompt with Flan-T5 after the InfinityStar decoration: a duration tag in front "
                "(<<<t=5s>>>) and a detail suffix at the end. Returns CONDITIONING with one [1, L, C] "
                "tensor of the prompt's tokens, end-of-text included, without padding. The demo encoder "
                "takes the prompt as written (no decoration), in its caption grammar: "
                "'a <colour> <shape> <motion> [on a <background> background]'."
            ),
            inputs=[
                InfinityStarTextEncoder.Input("text_encoder", tooltip="The encoder from Load InfinityStar Text Encoder."),
                io.String.Input(
                    "prompt", multiline=True, dynamic_prompts=True, default="",
                    tooltip="What the video shows. Long prompts are truncated to 512 tokens. The demo model "
                            "knows only its caption grammar, e.g. 'a red circle moving right on a gray "
                            "background'; other words raise an error that lists the vocabulary.",
                ),
                io.Combo.Input(
                    "duration_tag", options=list(DURATION_TAGS), default="5 s",
                    tooltip="Length tag put in front of the prompt. Match the sampler: 81 frames is 5 s, "
                            "161 frames is 10 s; 'none' leaves the tag out (images). Not used by the demo "
                            "encoder.",
                ),
                io.Boolean.Input(
                    "detail_suffix", default=True,
                    tooltip=f"Append '{text_encoder.DETAIL_SUFFIX}' as the reference scripts do. Not used by "
                            "the demo encoder.",
                ),
            ],
            outputs=[io.Conditioning.Output("conditioning", tooltip="The prompt features for the STAR sampler.")],
        )

    @classmethod
    def execute(cls, text_encoder, prompt, duration_tag, detail_suffix) -> io.NodeOutput:
        if duration_tag not in DURATION_TAGS:
            raise ValueError(f"duration_tag {duration_tag!r} is invalid: use one of {list(DURATION_TAGS)}")
        seconds = DURATION_TAGS[duration_tag]
        if text_encoder.decorate:
            decorated = text_encoder_prompt(prompt, seconds, detail_suffix)
        else:
            if seconds is not None or detail_suffix:
                logger.info("the demo text encoder takes the prompt as written; duration tag and detail "
                            "suffix are left out")
            decorated = prompt

        patching.load_to_device(text_encoder.patcher)
        features = text_encoder.encoder.encode(decorated)  # [L, C]
        features = features.to(mm.intermediate_device())[None]  # [1, L, C]
        logger.debug("encoded %d prompt tokens", features.shape[1])
        return io.NodeOutput([[features, {"pooled_output": None, PROMPT_EXTRA_KEY: decorated}]])


def text_encoder_prompt(prompt: str, seconds: int | None, detail_suffix: bool) -> str:
    """Decorate the prompt as the reference scripts do before T5 encodes it."""
    return text_encoder.decorate_prompt(
        prompt, duration_seconds=seconds or 5, add_duration_tag=seconds is not None, add_suffix=detail_suffix,
    )
