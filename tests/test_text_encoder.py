"""Text encoder: prompt decoration and a tiny random T5 loaded through the real loading code.

The tokenizer is a small Unigram model built with the ``tokenizers`` package (no download),
saved with ``save_pretrained`` like the released folder and loaded by ``AutoTokenizer``.
"""

import string
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from faststar.text_encoder import DETAIL_SUFFIX, TextEncoder, decorate_prompt, t5_config_from_state_dict  # noqa: E402

WORDS = ("a", "cat", "dog", "on", "the", "big", "photo", "close-up", "scale", "detail")
PROMPT = "a big cat on the photo"


def build_tokenizer(folder: Path):
    """Save a T5-style tokenizer: <pad>=0, </s>=1, <unk>=2, '▁' word boundaries, '</s>' appended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = ["▁" + word for word in WORDS] + ["▁"] + list(string.ascii_lowercase + string.digits + "<>=,.-")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(piece, -float(len(piece) == 1)) for piece in pieces]

    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=512
    )
    fast.save_pretrained(str(folder))
    return len(vocab)


def tiny_t5_config(vocab_size: int):
    return transformers.T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        is_encoder_decoder=False,
    )


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> Path:
    """A folder laid out like text_encoder/flan-t5-xl-official/, with sharded weights."""
    folder = tmp_path_factory.mktemp("flan-t5-tiny")
    vocab_size = build_tokenizer(folder)

    torch.manual_seed(0)
    model = transformers.T5EncoderModel(tiny_t5_config(vocab_size))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    model.save_pretrained(str(folder), max_shard_size="20KB")
    return folder


@pytest.fixture(scope="module")
def encoder(t5_folder) -> TextEncoder:
    return TextEncoder.load(t5_folder, device="cpu", dtype=torch.float32)


def reference_features(encoder: TextEncoder, prompt: str) -> torch.Tensor:
    """Features computed directly with transformers, as the reference encode_prompt does."""
    tokens = encoder.tokenizer(
        text=[prompt], max_length=512, padding="max_length", truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        output = encoder.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
    hidden = output.last_hidden_state
    return hidden[0, : int(tokens.attention_mask.sum())].float()


# --- prompt decoration ---------------------------------------------------------------------


def test_decorate_prompt_reference_order():
    assert decorate_prompt("a cat") == "<<<t=5s>>>a cat, Close-up on big objects, emphasize scale and detail"


def test_decorate_prompt_ten_seconds():
    assert decorate_prompt("a cat", duration_seconds=10) == "<<<t=10s>>>a cat" + DETAIL_SUFFIX


def test_decorate_prompt_options_off():
    assert decorate_prompt("a cat", add_duration_tag=False) == "a cat" + DETAIL_SUFFIX
    assert decorate_prompt("a cat", add_suffix=False) == "<<<t=5s>>>a cat"
    assert decorate_prompt("a cat", add_duration_tag=False, add_suffix=False) == "a cat"


@pytest.mark.parametrize("duration", [0, -5, 2.5])
def test_decorate_prompt_rejects_duration(duration):
    with pytest.raises(ValueError, match="duration_seconds"):
        decorate_prompt("a cat", duration_seconds=duration)


# --- encoding --------------------------------------------------------------------------------


def test_encode_shape_and_eos(encoder):
    ids = encoder.tokenizer(PROMPT).input_ids

    features = encoder.encode(PROMPT)

    assert ids[-1] == encoder.tokenizer.eos_token_id
    assert features.shape == (len(ids), 32)
    assert features.dtype == torch.float32


def test_encode_matches_transformers(encoder):
    features = encoder.encode(PROMPT)

    assert encoder.autocast_dtype is None
    assert torch.equal(features, reference_features(encoder, PROMPT))


def test_padding_does_not_change_features(encoder):
    ids = torch.tensor([encoder.tokenizer(PROMPT).input_ids])
    with torch.no_grad():
        unpadded = encoder.model(input_ids=ids).last_hidden_state[0]

    torch.testing.assert_close(encoder.encode(PROMPT), unpadded, rtol=1e-5, atol=1e-5)


def test_long_prompt_truncated_with_eos(encoder):
    prompt = " ".join(["cat"] * 600)

    input_ids, mask = encoder.tokenize(prompt)
    features = encoder.encode(prompt)

    assert features.shape == (512, 32)
    assert int(mask.sum()) == 512
    assert int(input_ids[0, -1]) == encoder.tokenizer.eos_token_id


def test_empty_prompt_keeps_eos_row(encoder):
    assert encoder.encode("").shape == (1, 32)


def test_encode_rejects_non_string(encoder):
    with pytest.raises(ValueError, match="prompt must be a string"):
        encoder.encode(["a cat"])


def test_decorated_prompt_encodes(encoder):
    assert encoder.encode(decorate_prompt(PROMPT)).shape[0] > encoder.encode(PROMPT).shape[0]


def test_bf16_autocast_encode(t5_folder, encoder):
    autocast = TextEncoder.load(t5_folder, dtype=torch.float32, autocast_dtype=torch.bfloat16)

    features = autocast.encode(PROMPT)

    assert features.dtype == torch.float32
    assert features.shape == encoder.encode(PROMPT).shape
    assert not torch.equal(features, encoder.encode(PROMPT))


def test_invalid_autocast_rejected(t5_folder):
    with pytest.raises(ValueError, match="autocast_dtype='bf16' is invalid"):
        TextEncoder.load(t5_folder, autocast_dtype="bf16")


# --- single-file weights --------------------------------------------------------------------


def encoder_weights_file(encoder: TextEncoder, path: Path, with_decoder: bool = False) -> Path:
    state = {key: value.clone() for key, value in encoder.model.state_dict().items()}
    del state["encoder.embed_tokens.weight"]  # tied to shared.weight; files store it once
    if with_decoder:
        state["decoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(32, 32)
        state["lm_head.weight"] = torch.zeros(4, 32)
    save_file(state, str(path))
    return path


def test_single_file_with_tokenizer_folder(encoder, t5_folder, tmp_path):
    path = encoder_weights_file(encoder, tmp_path / "t5_encoder.safetensors")

    loaded = TextEncoder.load(path, tokenizer_path=t5_folder, dtype=torch.float32)

    assert torch.equal(loaded.encode(PROMPT), encoder.encode(PROMPT))
    assert loaded.model.shared.weight.data_ptr() == loaded.model.encoder.embed_tokens.weight.data_ptr()


def test_single_file_beside_tokenizer_and_config(encoder, tmp_path):
    build_tokenizer(tmp_path)
    encoder.model.config.save_pretrained(str(tmp_path))
    path = encoder_weights_file(encoder, tmp_path / "t5_full.safetensors", with_decoder=True)

    loaded = TextEncoder.load(path, dtype=torch.float32)

    assert torch.equal(loaded.encode(PROMPT), encoder.encode(PROMPT))


def test_config_inferred_from_shapes(encoder):
    config = t5_config_from_state_dict(encoder.model.state_dict())

    for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets"):
        assert getattr(config, name) == getattr(encoder.model.config, name), name
    assert config.is_gated_act


def test_single_file_without_tokenizer(encoder, tmp_path):
    path = encoder_weights_file(encoder, tmp_path / "t5_encoder.safetensors")

    with pytest.raises(FileNotFoundError, match="no T5 tokenizer"):
        TextEncoder.load(path)


def test_non_t5_file_rejected(t5_folder, tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(path))

    with pytest.raises(ValueError, match="is not a T5 encoder"):
        TextEncoder.load(path, tokenizer_path=t5_folder)


def test_missing_path_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="text encoder not found"):
        TextEncoder.load(tmp_path / "nowhere")
