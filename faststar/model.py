"""InfinityStar transformer: Qwen-style blocks over one scale's tokens at a time.

A step forwards only the tokens of the current scale. Each block attends to three key sets
that the caller names: cached K/V of earlier forwards (the text prefix ``"t0"``, the last
scale of the previous clip, interactive conditions) and the step's own tokens. There is no
cross-attention, no AdaLN and no attention mask: attention is bidirectional over that set.

Blocks run through a pluggable *block processor* (see ``BlockProcessor``), so token pruning
can wrap a block's attention and MLP branches without copying the model.
"""

import logging
from dataclasses import dataclass
from typing import Hashable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope

logger = logging.getLogger(__name__)

CacheKey = Hashable


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of an InfinityStar transformer. Defaults are the released 8B model."""

    embed_dim: int = 4096
    depth: int = 36
    num_heads: int = 32
    num_kv_heads: int = 8
    mlp_hidden: int = 16384
    text_channels: int = 2048
    text_maxlen: int = 512
    code_dim: int = 64
    semantic_bits: int = 16
    detail_bits: int = 64
    block_chunks: int = 6
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def __post_init__(self):
        if self.embed_dim % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"num_kv_heads={self.num_kv_heads}: heads must divide the width and "
                "K/V heads must divide the query heads"
            )
        if self.depth % self.block_chunks:
            raise ValueError(f"depth={self.depth} is not a multiple of block_chunks={self.block_chunks}")


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight, computed in float32 and cast back."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class KVCache:
    """Per-layer K/V of earlier forwards, stored under a key (``"t0"``, a scale index, ...).

    Tensors are [B, H_kv, L, head_dim] after q/k-norm and RoPE, before GQA expansion.
    """

    def __init__(self, depth: int):
        self.depth = depth
        self._store: dict[CacheKey, list] = {}

    def put(self, key: CacheKey, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self._store.setdefault(key, [None] * self.depth)[layer] = (k, v)

    def get(self, key: CacheKey, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self._store.get(key)
        if entry is None or entry[layer] is None:
            raise KeyError(f"no cached K/V under {key!r} for layer {layer}")
        return entry[layer]

    def drop(self, key: CacheKey) -> None:
        self._store.pop(key, None)

    def keys(self) -> list[CacheKey]:
        return list(self._store)

    def length(self, key: CacheKey) -> int:
        return self.get(key, 0)[0].shape[2]

    def clear(self) -> None:
        self._store.clear()


@dataclass
class AttentionInputs:
    """Inputs of a block's attention besides the hidden states.

    ``rope`` is cos/sin [2, L, head_dim/2] for the L query tokens. Keys are the cached
    K/V under each of ``context`` (in order), then the tokens' own K/V, which are stored
    under ``store_key`` when it is not None.
    """

    rope: torch.Tensor
    cache: KVCache
    context: Sequence[CacheKey] = ()
    store_key: CacheKey | None = None

    def select(self, keep_idx: torch.Tensor) -> "AttentionInputs":
        """Return the inputs for the token subset ``keep_idx`` [K] (RoPE rows gathered)."""
        return AttentionInputs(self.rope[:, keep_idx], self.cache, self.context, self.store_key)


class Attention(nn.Module):
    """Grouped-query self-attention with q/k RMSNorm and 4-axis RoPE, no biases."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        kv_width = config.num_kv_heads * config.head_dim

        self.q_proj = nn.Linear(config.embed_dim, config.embed_dim, bias=False)
        self.k_proj = nn.Linear(config.embed_dim, kv_width, bias=False)
        self.v_proj = nn.Linear(config.embed_dim, kv_width, bias=False)
        self.o_proj = nn.Linear(config.embed_dim, config.embed_dim, bias=False)
        self.q_norm = RMSNorm(config.head_dim, config.norm_eps)
        self.k_norm = RMSNorm(config.head_dim, config.norm_eps)

    def forward(self, x: torch.Tensor, inputs: AttentionInputs, layer: int) -> torch.Tensor:
        B, L, C = x.shape

        # q [B, H, L, D]; k, v [B, H_kv, L, D]
        q = self.q_norm(self.q_proj(x).view(B, L, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, L, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rope(q, inputs.rope)
        k = apply_rope(k, inputs.rope)

        if inputs.store_key is not None:
            inputs.cache.put(inputs.store_key, layer, k, v)

        context = [inputs.cache.get(key, layer) for key in inputs.context]
        keys = torch.cat([ck for ck, _ in context] + [k], dim=2)
        values = torch.cat([cv for _, cv in context] + [v], dim=2)

        out = F.scaled_dot_product_attention(
            q, keys.to(q.dtype), values.to(q.dtype), enable_gqa=self.num_kv_heads != self.num_heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(B, L, C))


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), the Qwen MLP."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.embed_dim, config.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(config.embed_dim, config.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden, config.embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm block: h = x + attn(norm(x)); y = h + mlp(norm(h))."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.embed_dim, config.norm_eps)
        self.attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.embed_dim, config.norm_eps)
        self.mlp = SwiGLU(config)

    def attention_branch(self, x: torch.Tensor, inputs: AttentionInputs, layer: int) -> torch.Tensor:
        return self.attn(self.input_layernorm(x), inputs, layer)

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.post_attention_layernorm(x))

    def forward(self, x: torch.Tensor, inputs: AttentionInputs, layer: int) -> torch.Tensor:
        x = x + self.attention_branch(x, inputs, layer)
        return x + self.mlp_branch(x)


class BlockProcessor(Protocol):
    """Runs one block; the default is ``block(x, inputs, layer)``.

    A processor may run the block on a subset of the tokens and fill the rest, as long as
    it returns hidden states of the length the next block expects.
    """

    def __call__(self, block: Block, x: torch.Tensor, inputs: AttentionInputs, layer: int) -> torch.Tensor: ...


def run_block(block: Block, x: torch.Tensor, inputs: AttentionInputs, layer: int) -> torch.Tensor:
    return block(x, inputs, layer)


class InfinityStarTransformer(nn.Module):
    """The InfinityStar decoder-only transformer (flat ``blocks.{i}`` layout)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        C = config.embed_dim

        self.cfg_uncond = nn.Parameter(torch.zeros(config.text_maxlen, config.text_channels))
        self.sos_token = nn.Parameter(torch.zeros(1, 1, C))  # in the checkpoints, unused
        self.text_proj = nn.Linear(config.text_channels, C)
        self.word_embed = nn.Linear(config.code_dim, C)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm_hidden_sates = RMSNorm(C, config.norm_eps)  # the misspelling is the checkpoint key
        self.head = nn.Linear(C, 2 * config.detail_bits)
        self.semantic_head2 = nn.Linear(C, 2 * config.semantic_bits)

        # Dense blocks unless a pruning method installs a processor for one run.
        self.block_processor: BlockProcessor | None = None

    @property
    def block_dtype(self) -> torch.dtype:
        return self.blocks[0].attn.q_proj.weight.dtype

    def embed_text(self, text_features: torch.Tensor, negative: torch.Tensor | None = None) -> torch.Tensor:
        """Project the prompt [L, C_text] and its unconditional row to prefix tokens [2, L, C].

        Without a ``negative`` the unconditional row is the learned ``cfg_uncond[:L]``.
        """
        length = text_features.shape[0]
        if length > self.config.text_maxlen:
            raise ValueError(
                f"prompt has {length} tokens; the model takes at most {self.config.text_maxlen}"
            )
        if negative is None:
            negative = self.cfg_uncond[:length]
        elif negative.shape != text_features.shape:
            raise ValueError(
                f"negative prompt features {tuple(negative.shape)} must have the prompt's shape "
                f"{tuple(text_features.shape)}"
            )

        rows = torch.stack([text_features, negative]).to(self.text_proj.weight)
        return self.text_proj(rows)

    def embed_codes(self, codes: torch.Tensor, batch: int = 2) -> torch.Tensor:
        """Embed input codes [L, code_dim] as tokens [batch, L, C]; all guidance rows share them."""
        tokens = self.word_embed(codes.to(self.word_embed.weight))
        return tokens.unsqueeze(0).expand(batch, -1, -1)

    def forward_blocks(self, x: torch.Tensor, inputs: AttentionInputs) -> torch.Tensor:
        """Run every block over tokens [B, L, C] and return the last hidden states."""
        processor = self.block_processor or run_block
        x = x.to(self.block_dtype)
        for layer, block in enumerate(self.blocks):
            x = processor(block, x, inputs, layer)
        return x

    def logits(self, hidden: torch.Tensor, semantic: bool) -> torch.Tensor:
        """Bit logits [B, L, 2*bits] in float32: 2 columns per bit, column 2j+1 means bit j = 1."""
        normed = self.norm_hidden_sates(hidden).float()
        head = self.semantic_head2 if semantic else self.head
        with torch.autocast(device_type=normed.device.type, enabled=False):
            return F.linear(normed, head.weight.float(), head.bias.float())
