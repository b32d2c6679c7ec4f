"""Prompts: genlab's own byte-level tokenizer and a small Transformer text encoder, trained jointly
with the prior (no weights from a hub), and the cross-attention a U-Net attends to the text with
(as latent diffusion / Stable Diffusion do).

A prompt is lower-cased and its UTF-8 bytes become tokens 2..257 after a start token (1), padded
with 0 to the context. Nothing is fitted, so no word is unknown (a new word is new bytes), nothing
needs saving beside the weights, and a resumed run tokenizes exactly as before. The empty prompt,
the start token alone, is the unconditional model (prompt dropout trains it)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

PAD, START, VOCAB = 0, 1, 258
CONTEXT = 64  # tokens a prompt may take, its start token included (emoji names: up to ~60 bytes)


class PromptTooLong(UserWarning):
    """A prompt longer than the context was cut."""


def tokenize(prompts: list[str], context: int = CONTEXT, warn: bool = True) -> torch.Tensor:
    """Token ids [len(prompts), context] (int64). A prompt longer than the context is cut, with
    one warning naming the limit (`warn`)."""
    out = torch.zeros(len(prompts), context, dtype=torch.int64)
    cut = []
    for i, prompt in enumerate(prompts):
        data = list(" ".join(str(prompt).lower().split()).encode("utf-8"))
        if len(data) > context - 1:
            cut.append(prompt)
            data = data[:context - 1]
        out[i, 0] = START
        out[i, 1:1 + len(data)] = torch.tensor(data, dtype=torch.int64) + 2
    if cut and warn:
        warnings.warn(f"{len(cut)} prompt(s) longer than the text context of {context - 1} bytes were cut "
                      f"(e.g. {cut[0][:40]!r}...)", PromptTooLong, stacklevel=2)
    return out


def detokenize(tokens: torch.Tensor) -> list[str]:
    """The prompts token ids stand for (as tokenized: lower case, single spaces)."""
    return [bytes(int(t) - 2 for t in row if int(t) >= 2).decode("utf-8", errors="replace") for row in tokens]


def is_tokens(labels) -> bool:
    """Whether a condition is prompts' token ids [B, context] rather than class numbers [B]."""
    return isinstance(labels, torch.Tensor) and labels.dim() == 2


class TextEncoder(nn.Module):
    """token ids [B, L] -> (states [B, L, dim], key padding mask [B, L] (True: padding), pooled
    [B, dim], the mean of the prompt's states)."""

    def __init__(self, dim: int, layers: int = 2, heads: int = 4, context: int = CONTEXT):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, dim)
        self.positions = nn.Parameter(torch.zeros(context, dim))
        nn.init.normal_(self.positions, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor):
        pad = ids == PAD
        h = self.tokens(ids) + self.positions[:ids.shape[1]]
        h = self.norm(self.layers(h, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(1) / keep.sum(1).clamp(min=1)
        return h, pad, pooled


class CrossAttention(nn.Module):
    """A feature map attends to the text's states (queries from the pixels, keys and values from
    the tokens), residual."""

    def __init__(self, channels: int, text_dim: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(8, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(text_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)  # starts as the identity: the unconditional net is undisturbed
        nn.init.zeros_(self.proj.bias)

    def forward(self, x, states, pad):
        B, C, H, W = x.shape
        d = C // self.heads
        q = self.q(self.norm(x)).reshape(B, self.heads, d, H * W).transpose(-1, -2)
        k, v = self.kv(states).reshape(B, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        mask = ~pad[:, None, None, :]  # True: attend
        y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask)
        return x + self.proj(y.transpose(-1, -2).reshape(B, C, H, W))


def check_tokens(labels, n: int, device=None) -> torch.Tensor:
    """`n` prompts' token ids for a text-conditioned model (the empty prompt, unconditional, when
    `labels` is None)."""
    from genlab.errors import GenlabError

    if labels is None:
        labels = tokenize([""] * n)
    if not is_tokens(labels) or len(labels) != n:
        raise GenlabError(f"a text-conditioned model takes {n} prompts (token ids [{n}, {CONTEXT}]); pass prompt= "
                          "(or --prompt), not class numbers")
    return labels.to(device) if device is not None else labels


class TextCondition:
    """What a U-Net family conditioned on prompts shares: prompt dropout in training, and the
    unconditional branch of guidance (the empty prompt, or a negative prompt while sampling)."""

    def drop_prompts(self, y: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        y = y.clone()
        y[drop] = tokenize([""]).to(y.device)[0]
        return y

    def set_negative(self, negative_prompt: str) -> None:
        self._uncond = tokenize([negative_prompt or ""]).to(self.device)

    def uncond_like(self, y: torch.Tensor) -> torch.Tensor:
        uncond = getattr(self, "_uncond", None)
        if uncond is None:
            self.set_negative("")
            uncond = self._uncond
        return uncond.expand(len(y), -1)


def check_negative(family, negative_prompt: str) -> None:
    """Set a text model's negative prompt for the coming chain; refuse one for another model."""
    from genlab.errors import GenlabError

    if getattr(family, "takes_text", False):
        family.set_negative(negative_prompt)
    elif negative_prompt:
        raise GenlabError("negative_prompt is for a model trained on captions (--text); this one was not")
