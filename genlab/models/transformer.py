"""An autoregressive Transformer over pixels (Image GPT: Chen et al. 2020; Vaswani et al. 2017,
https://arxiv.org/abs/1706.03762).

Each pixel is quantised to one of `levels` intensities and the image read in raster order (row by
row, channels of a pixel together) as a sequence x_1 ... x_T. A causal Transformer predicts

    p(x) = prod_t p(x_t | x_<t, y)

from a start token (the class token y for a conditional model) followed by x_1 ... x_{T-1}, so
training is one parallel pass with teacher forcing and the likelihood is exact:
log p(x) = -sum_t CE(logits_t, x_t) nats per image.

Quantisation (the likelihood's data convention): level = floor(x * levels / 256) of the uint8
pixel x; with 256 levels the NLL is of the 8-bit images themselves (comparable with other 8-bit
NLLs in bits/dim), with 2 levels of images thresholded at 128. Samples show each level at the
centre of its intensity bin.

Sampling runs one position per step with a key/value cache (each step attends to the cached keys
and values of the positions before it); `sample(..., cache=False)` recomputes the whole prefix each
step and is the reference the cached path is tested against.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import option
from genlab.core.runtime import LazyOptimizer, Runtime
from genlab.errors import GenlabError
from genlab.models import common
from genlab.models.text import CONTEXT, TextCondition, TextEncoder, check_negative, check_tokens

LEVELS = (2, 4, 8, 16, 256)
# Classifier-free guidance (Ho & Salimans 2022) on next-token logits, as autoregressive image models
# use it (Yu et al. 2022, Parti; Sun et al. 2024, LlamaGen): training replaces a share of the class
# tokens by a "no class" token, and sampling runs both and draws from l_u + s (l_c - l_u).
LABEL_DROPOUT = "share of training class tokens replaced by a 'no class' token (conditional; > 0 allows --guidance)"
TRAIN_GUIDABLE = "a model that also learnt to draw without a class: train it with --conditional --label-dropout 0.1"
GUIDANCE = "classifier-free guidance on the logits, l_u + s (l_c - l_u): 1 = the conditional model, 0 = no class"
SAMPLE_CHUNK = 256  # images decoded together: bounds the key/value cache's memory


@dataclass
class TransformerConfig:
    """A pixel Transformer's recipe."""

    name: str = option("transformer", "model family (listed at the end of --help)", flag="--model")
    levels: int = option(16, "intensity levels each pixel is quantised to (the vocabulary)",
                         choices=LEVELS)
    d_model: int = option(64, "width of the residual stream")
    layers: int = option(4, "Transformer blocks")
    heads: int = option(4, "attention heads (must divide d_model)")
    positional: str = option("learned", "positional encoding", choices=("learned", "sinusoidal"))
    dropout: float = option(0.0, "dropout on attention and MLP outputs")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(0.01, "AdamW weight decay of the weight matrices")
    conditional: bool = option(False, "class-conditional: the start token is a class token")
    label_dropout: float = option(0.0, LABEL_DROPOUT)
    guidance: float = option(1.0, GUIDANCE, resumable=True)
    temperature: float = option(1.0, "sampling temperature (logits / T)", resumable=True)
    top_k: int = option(0, "sample only among the k most likely levels (0: all)", resumable=True)

    def validate(self) -> None:
        for name in ("d_model", "layers", "heads"):
            if getattr(self, name) <= 0:
                raise GenlabError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise GenlabError(f"heads ({self.heads}) must divide d_model ({self.d_model})")
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise GenlabError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if not 0 <= self.dropout < 1:
            raise GenlabError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise GenlabError(f"lr must be positive, got {self.lr}")
        check_guidance(self)
        check_sampling(self.temperature, self.top_k, self.levels)


def check_sampling(temperature: float, top_k: int, levels: int) -> None:
    if temperature <= 0:
        raise GenlabError(f"temperature must be positive, got {temperature}")
    if not 0 <= top_k <= levels:
        raise GenlabError(f"top_k must lie in 0..{levels} (0: no cut), got {top_k}")


def check_guidance(config) -> None:
    """A recipe's label dropout and guidance scale (the pixel and latent Transformers share them);
    with --text the label dropout is prompt dropout."""
    text = bool(getattr(config, "text", False))
    if text and config.conditional:
        raise GenlabError("--text and --conditional both condition the model: choose one (captions name the "
                          "class where the data has one)")
    if not 0 <= config.label_dropout < 1:
        raise GenlabError(f"label_dropout must lie in [0, 1), got {config.label_dropout}")
    if config.label_dropout and not (config.conditional or text):
        raise GenlabError("--label-dropout trains a class-conditional model to also draw without a class: "
                          "give --conditional with it, or leave it out")
    if config.guidance != 1:
        check_guided(config.guidance, bool((config.conditional or text) and config.label_dropout))


def check_guided(guidance: float, unconditional_known: bool) -> None:
    if guidance < 0:
        raise GenlabError(f"guidance must be >= 0 (1: the conditional model as trained), got {guidance}")
    if guidance != 1 and not unconditional_known:
        raise GenlabError(f"guidance {guidance} needs {TRAIN_GUIDABLE} (or sample with guidance 1)")


# ---------------------------------------------------------------- network

def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """The fixed encoding of Vaswani et al.: sin/cos at geometric frequencies [length, dim]."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor):
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        return [t.view(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v)]  # (B, nh, T, hs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All positions at once, each attending to itself and the positions before it."""
        B, T, D = x.shape
        q, k, v = self._split(x)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))

    def prime(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """A prefix (x [B, P, D], the prompt's states) at positions 0..P-1: its keys and values fill
        the start of the cache; its outputs are forward's."""
        B, P, D = x.shape
        q, k, v = self._split(x)
        cache["k"][:, :, :P], cache["v"][:, :, :P] = k, v
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, P, D))

    def step(self, x: torch.Tensor, cache: dict, t: int) -> torch.Tensor:
        """Position t alone (x [B, 1, D]): its key and value join the cache, its query attends to
        positions 0..t. No mask is needed: the cache holds only the past."""
        B, _, D = x.shape
        q, k, v = self._split(x)
        cache["k"][:, :, t:t + 1], cache["v"][:, :, t:t + 1] = k, v
        keys, values = cache["k"][:, :, :t + 1], cache["v"][:, :, :t + 1]  # (B, nh, t+1, hs)
        # softmax(q k^T / sqrt(hs)) v written out: for a single query PyTorch's fused CPU kernel
        # is ~20x slower than these two batched matrix products
        att = (q @ keys.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, 1, t+1)
        y = att.softmax(-1) @ values  # (B, nh, 1, hs)
        return self.proj(y.transpose(1, 2).reshape(B, 1, D))


class Block(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))

    def step(self, x, cache, t):
        x = x + self.attn.step(self.ln1(x), cache, t)
        return x + self.mlp(self.ln2(x))

    def prime(self, x, cache):
        x = x + self.attn.prime(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class PixelTransformer(nn.Module):
    """tokens [B, T] (start token, then pixels 1..T-1) -> logits [B, T, levels]. With `text`, a
    prompt's token ids [B, CONTEXT] are encoded by a text encoder of its own and its states go
    before the start token as a prefix every position attends to (the prefix LM of Parti and
    DALL-E's text-then-image sequence); the logits are of the image positions only."""

    def __init__(self, length: int, levels: int, starts: int, cfg: TransformerConfig, text: bool = False):
        super().__init__()
        self.length, self.levels = length, levels
        self.embed = nn.Embedding(levels + starts, cfg.d_model)  # levels, then the start/class tokens
        if cfg.positional == "learned":
            self.pos = nn.Parameter(torch.randn(length, cfg.d_model) * 0.02)
        else:
            self.register_buffer("pos", sinusoidal_positions(length, cfg.d_model), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, levels)
        self.text = TextEncoder(cfg.d_model, heads=cfg.heads) if text else None
        self.prefix = CONTEXT if text else 0  # positions the prompt takes before the start token

    def forward(self, tokens: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(tokens) + self.pos[:tokens.shape[1]]
        if self.text is not None:
            h = torch.cat([self.text(prompts)[0].to(h.dtype), h], 1)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h[:, self.prefix:]))

    def prime(self, prompts: torch.Tensor, cache: list[dict]) -> None:
        """Fill the cache's first positions with the prompt's (a text model, before step 0)."""
        h = self.text(prompts)[0]
        for block, c in zip(self.blocks, cache):
            h = block.prime(h, c)

    def new_cache(self, batch: int, device) -> list[dict]:
        d = self.embed.embedding_dim
        nh = self.blocks[0].attn.heads
        shape = (batch, nh, self.prefix + self.length, d // nh)
        # empty, not zeros: step t writes position t before anything reads it (0.4 s of 10,000 latent samples)
        return [{"k": torch.empty(shape, device=device), "v": torch.empty(shape, device=device)} for _ in self.blocks]

    def step(self, token: torch.Tensor, cache: list[dict], t: int) -> torch.Tensor:
        """Logits [B, levels] of position t from the token at t [B] and the cache of 0..t-1."""
        h = self.embed(token)[:, None] + self.pos[t]
        for block, c in zip(self.blocks, cache):
            h = block.step(h, c, self.prefix + t)
        return self.head(self.ln_f(h))[:, 0]


def draw(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """One level per row by inverse-CDF sampling with the given uniforms u [B] (drawn up front from
    the caller's generator, so the cached and uncached samplers consume the same randomness)."""
    logits = logits.float() / temperature
    if top_k:
        kth = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    cdf = logits.softmax(1).cumsum(1)
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1).clamp(max=logits.shape[1] - 1)


# ---------------------------------------------------------------- the family

@dataclass
class TransformerSampling:
    temperature: float = option(1.0, "divide the logits by T; below 1: sharper, less varied")
    top_k: int = option(0, "draw each pixel among its k most likely levels (0: all)")


@dataclass
class GuidedSampling(TransformerSampling):
    """The options of a model trained with label dropout: guidance too (the others are not offered it)."""

    guidance: float = option(1.0, "classifier-free guidance scale: 1 the conditional model, 0 no class")


@dataclass
class PromptSampling(TransformerSampling):
    """The options of a model trained on captions with prompt dropout: guidance and a negative prompt."""

    guidance: float = option(1.0, "classifier-free guidance scale: 1 the prompt's model, 0 the empty prompt's")
    negative_prompt: str = option("", "what guidance steers away from (the prompt of its unconditional branch; "
                                  "empty: the unconditional model)")


class Transformer(TextCondition):
    """A pixel Transformer as a genlab family: the network and one AdamW optimiser."""

    SamplingOptions = GuidedSampling
    sample_chunk = SAMPLE_CHUNK

    def sequence(self) -> tuple[int, int]:
        """(length, vocabulary) of the sequences modelled: every pixel, `levels` intensities."""
        return math.prod(self.image_shape), self.config.levels

    def __init__(self, config: TransformerConfig, image_shape, num_classes: int, runtime: Runtime | None = None):
        self.config = config
        self.rt = runtime or Runtime()
        self.device = self.rt.device
        self.image_shape = tuple(image_shape)
        self.conditional_classes = common.conditional_classes(config.conditional, num_classes)
        self.length, self.vocab = self.sequence()
        # a prompt (--text) goes before the start token as a prefix; prompt dropout gives guidance's
        # unconditional branch, the empty prompt
        self.takes_text = bool(getattr(config, "text", False))
        # a model trained with label dropout has one start token more: "no class", after the classes
        self.guidable = bool((self.conditional_classes or self.takes_text) and config.label_dropout)
        starts = (self.conditional_classes or 1) + (self.guidable and not self.takes_text)
        self.net = PixelTransformer(self.length, self.vocab, starts, config, self.takes_text).to(self.device)
        embeddings = ("embed", "pos", "text.tokens", "text.positions")
        decay = [p for n, p in self.net.named_parameters() if p.dim() >= 2 and not n.startswith(embeddings)]
        no_decay = [p for n, p in self.net.named_parameters() if not any(p is q for q in decay)]
        self.opt = LazyOptimizer(torch.optim.AdamW, [{"params": decay, "weight_decay": config.weight_decay},
                                                     {"params": no_decay, "weight_decay": 0.0}],
                                 lr=config.lr, betas=(0.9, 0.95))

    @property
    def likelihood_dims(self) -> int:
        """The likelihood is of every pixel value (bits per dimension divide by their number)."""
        return math.prod(self.image_shape)

    @property
    def likelihood_convention(self) -> str:
        L = self.config.levels
        what = "the 8-bit test images" if L == 256 else f"test images quantised to {L} levels (floor(x * {L} / 256))"
        return f"exact, of {what}, raster order"

    def nets(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    # ---------------------------------------------------------------- tokens

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> levels [B, T] in raster order, a pixel's channels together."""
        levels = (images.to(torch.int64) * self.config.levels) // 256
        return levels.permute(0, 2, 3, 1).reshape(len(images), -1)

    def images(self, tokens: torch.Tensor) -> torch.Tensor:
        """levels [B, T] -> uint8 [B, C, H, W], each level shown at the centre of its bin."""
        c, h, w = self.image_shape
        bin_width = 256 / self.config.levels
        x = ((tokens.float() + 0.5) * bin_width - 0.5).round().clamp(0, 255).to(torch.uint8)
        return x.view(-1, h, w, c).permute(0, 3, 1, 2).contiguous()

    def _starts(self, labels, n: int) -> torch.Tensor:
        """The start token of each sequence: the class token, or the one start token."""
        base = self.vocab
        if not self.conditional_classes:
            return torch.full((n,), base, dtype=torch.int64, device=self.device)
        return base + common.check_labels(labels, n, self.conditional_classes, self.device)

    @property
    def null_start(self) -> int:
        """The "no class" start token of a model trained with label dropout."""
        return self.vocab + self.conditional_classes

    def _inputs(self, targets: torch.Tensor, labels) -> torch.Tensor:
        return torch.cat([self._starts(labels, len(targets))[:, None], targets[:, :-1]], 1)

    # ---------------------------------------------------------------- training and likelihood

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """One AdamW step on the mean per-pixel cross-entropy (teacher forcing)."""
        rt = self.rt
        targets = self.tokens(images.to(self.device))
        y = labels if self.conditional_classes else None
        inputs = self._inputs(targets, y)
        prompts = check_tokens(labels, len(targets), self.device) if self.takes_text else None
        if self.guidable:  # label dropout teaches the same net the unconditional distribution
            drop = rt.rand(len(inputs)) < self.config.label_dropout
            if self.takes_text:
                prompts = self.drop_prompts(prompts, drop)  # the empty prompt
            else:
                inputs[drop, 0] = self.null_start
        with rt.autocast():
            logits = self.net(inputs, prompts)
            loss = F.cross_entropy(logits.float().reshape(-1, self.vocab), targets.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        rt.backward(loss)
        grad = rt.finish_grads("Transformer", self.net, self.opt, loss)
        rt.step(self.opt)
        return {"loss": loss.item(), "bits_per_dim": loss.item() / math.log(2), "grad_norm": grad}

    @torch.no_grad()
    def pixel_log_probs(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """log p(x_t | x_<t) of every pixel [n, T] in nats."""
        if self.conditional_classes and labels is None:
            raise GenlabError("a conditional model's likelihood is log p(x | y): pass the images' labels")
        was = self.net.training
        self.net.eval()
        try:
            targets = self.tokens(images.to(self.device))
            prompts = check_tokens(labels, len(targets), self.device) if self.takes_text else None
            starts = None if self.takes_text else labels
            logits = self.net(self._inputs(targets, starts), prompts).float()
            return torch.gather(logits.log_softmax(-1), 2, targets[..., None])[..., 0].cpu()
        finally:
            self.net.train(was)

    @torch.no_grad()
    def log_likelihood(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """Exact log p(x) [n] in nats of the quantised images: the sum of the pixels' log-probabilities."""
        return self.pixel_log_probs(images, labels).double().sum(1)

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def generate(self, n: int, labels=None, generator: torch.Generator | None = None, temperature: float | None = None,
                 top_k: int | None = None, cache: bool = True, record: bool = False, guidance: float | None = None,
                 negative_prompt: str = ""):
        """Tokens [n, T] (and, with `record`, each step's logits [n, T, levels]). One uniform per
        pixel is drawn up front from `generator` on the CPU, so a seed gives the same images with
        or without the cache and on any device. With guidance s != 1 every sequence is also run
        from the "no class" token (twice the work) and drawn from l_u + s (l_c - l_u); for a model
        trained on captions (`labels`: token ids) from the empty prompt, or `negative_prompt`."""
        t_ = self.config.temperature if temperature is None else temperature
        k_ = self.config.top_k if top_k is None else top_k
        s_ = self.config.guidance if guidance is None else guidance
        check_sampling(t_, k_, self.vocab)
        check_guided(s_, self.guidable)
        guided = s_ != 1  # only a model trained with label dropout gets past the check with it
        u = torch.rand(n, self.length, generator=generator).to(self.device)
        check_negative(self, negative_prompt)
        prompts = check_tokens(labels, n, self.device) if self.takes_text else None
        starts = self._starts(None if self.takes_text else labels, n)
        if guided and self.takes_text:
            starts, prompts = starts.repeat(2), torch.cat([prompts, self.uncond_like(prompts)])
        elif guided:
            starts = torch.cat([starts, torch.full_like(starts, self.null_start)])
        tokens = torch.zeros(len(starts), self.length, dtype=torch.int64, device=self.device)
        trace = []
        was = self.net.training
        self.net.eval()
        try:
            kv = self.net.new_cache(len(starts), self.device) if cache else None
            if cache and prompts is not None:
                self.net.prime(prompts, kv)
            for t in range(self.length):
                if cache:
                    logits = self.net.step(starts if t == 0 else tokens[:, t - 1], kv, t)
                else:
                    logits = self.net(torch.cat([starts[:, None], tokens[:, :t]], 1), prompts)[:, -1]
                if guided:
                    cond, uncond = logits.float().chunk(2)
                    logits = uncond + s_ * (cond - uncond)
                    tokens[:, t] = draw(logits, u[:, t], t_, k_).repeat(2)
                else:
                    tokens[:, t] = draw(logits, u[:, t], t_, k_)
                if record:
                    trace.append(logits.float().cpu())
        finally:
            self.net.train(was)
        tokens = tokens[:n]
        return (tokens, torch.stack(trace, 1)) if record else tokens

    def sampling_defaults(self) -> TransformerSampling:
        if self.takes_text and self.guidable:
            return PromptSampling(temperature=self.config.temperature, top_k=self.config.top_k,
                                  guidance=self.config.guidance)
        if not self.guidable:
            return TransformerSampling(temperature=self.config.temperature, top_k=self.config.top_k)
        return GuidedSampling(temperature=self.config.temperature, top_k=self.config.top_k,
                              guidance=self.config.guidance)

    @torch.no_grad()
    def sample(self, n: int, labels=None, generator: torch.Generator | None = None, cache: bool = True,
               **options) -> torch.Tensor:
        """n images uint8 [n, C, H, W] on the CPU, decoded SAMPLE_CHUNK at a time (the cache of a
        chunk of 256 28x28 images is 0.4 GB with the default width). `cache=False` recomputes the
        prefix at every position: the reference the cached path is tested against."""
        if "guidance" in options and not self.guidable:
            raise GenlabError(f"this model takes no guidance: {TRAIN_GUIDABLE}")
        opts = common.sampling_options(self.sampling_defaults(), options)
        k = self.conditional_classes
        if self.takes_text:
            labels = check_tokens(labels, n)  # no prompt: the empty one
        else:
            labels = None if not k else (common.balanced_labels(n, k) if labels is None else torch.as_tensor(labels))
        parts = []
        for start in range(0, n, self.sample_chunk):
            m = min(self.sample_chunk, n - start)
            part_labels = labels[start:start + m] if labels is not None else None
            # the options' fields are generate's keywords (guidance only where the model takes it)
            parts.append(self.generate(m, part_labels, generator, cache=cache, **dataclasses.asdict(opts)).cpu())
        return self.images(torch.cat(parts))

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
