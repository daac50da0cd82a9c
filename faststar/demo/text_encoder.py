"""The demo text encoder: word embeddings and two small transformer layers over the grammar.

It stands where T5 stands for the released model: ``encode(prompt)`` returns per-token
features [TEXT_TOKENS, TEXT_CHANNELS] that feed the transformer's ``text_proj``. It is
trained from scratch together with the demo transformer, so it needs no external weights.
The vocabulary is the caption grammar's words; a prompt is lower-cased, split on spaces
and padded to ``TEXT_TOKENS`` tokens with a learned padding token.
"""

import logging

import torch
from torch import nn

from .data import BACKGROUNDS, COLOURS, MOTIONS, SHAPES
from .preset import TEXT_CHANNELS, TEXT_TOKENS

logger = logging.getLogger(__name__)

PAD = "<pad>"


def vocabulary() -> list[str]:
    """Return every word the grammar uses, after the padding token, in a fixed order."""
    words = ["a", "on", "background", *COLOURS, *SHAPES, *BACKGROUNDS]
    for motion in MOTIONS:
        words.extend(motion.split())
    unique = list(dict.fromkeys(words))
    return [PAD, *unique]


VOCABULARY = vocabulary()
WORD_IDS = {word: index for index, word in enumerate(VOCABULARY)}


def tokenize(prompt: str) -> torch.Tensor:
    """Token ids [TEXT_TOKENS] of a prompt, padded; raise ValueError for unknown or too many words."""
    words = prompt.lower().strip().rstrip(".").split()
    if not words:
        raise ValueError("the prompt is empty; describe a video, e.g. 'a red circle moving right'")
    unknown = [word for word in words if word not in WORD_IDS]
    if unknown:
        raise ValueError(
            f"the demo model does not know the words {unknown} in {prompt!r}; it knows {VOCABULARY[1:]}"
        )
    if len(words) > TEXT_TOKENS:
        raise ValueError(f"the prompt {prompt!r} has {len(words)} words; the demo model takes at most {TEXT_TOKENS}")

    ids = [WORD_IDS[word] for word in words] + [WORD_IDS[PAD]] * (TEXT_TOKENS - len(words))
    return torch.tensor(ids, dtype=torch.long)


class DemoTextEncoder(nn.Module):
    """Token ids [B, TEXT_TOKENS] -> features [B, TEXT_TOKENS, TEXT_CHANNELS]."""

    def __init__(self, channels: int = TEXT_CHANNELS, layers: int = 2, heads: int = 4):
        super().__init__()
        self.token_embed = nn.Embedding(len(VOCABULARY), channels)
        self.position_embed = nn.Parameter(torch.zeros(TEXT_TOKENS, channels))
        layer = nn.TransformerEncoderLayer(channels, heads, dim_feedforward=2 * channels, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(channels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embed(ids) + self.position_embed
        return self.norm(self.layers(x))

    @torch.no_grad()
    def encode(self, prompt: str) -> torch.Tensor:
        """Features [TEXT_TOKENS, TEXT_CHANNELS] of one prompt, float32 on the encoder's device."""
        ids = tokenize(prompt).to(self.token_embed.weight.device)
        return self.forward(ids[None])[0].float()
