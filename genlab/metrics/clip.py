"""How well images match their prompts: a contrastive text-image model (CLIP's objective, Radford
et al. 2021) trained once per dataset on its training split's images and captions, cached by its
data, captions and recipe, and never shown the held-out split.

- CLIP score: 100 x the cosine of an image's and its prompt's embeddings, averaged (Hessel et al.
  2021 without the clipping at 0). Real held-out images with their own captions give the floor.
- R-precision: is an image's own prompt ranked first among itself and up to 31 other captions of
  the split (distinct from it)? Real held-out images give the ceiling, unconditional samples the
  chance level (1 / the number ranked, 1/32 where there are enough captions).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.core.checkpoint import load_into, load_state, save_state
from genlab.data import ImageSet
from genlab.models.text import TextEncoder, tokenize
from genlab.paths import cache_dir


@dataclass(frozen=True)
class ClipRecipe:
    """How the scorer is trained; part of its identity (another recipe, another cache entry)."""

    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 32
    dim: int = 64
    seed: int = 0


class TextImageModel(nn.Module):
    """Images in [0, 1] and token ids -> unit embeddings in one space, and a learnt temperature."""

    def __init__(self, channels: int, recipe: ClipRecipe):
        super().__init__()
        w = recipe.width
        self.image = nn.Sequential(
            nn.Conv2d(channels, w, 3, 2, 1), nn.GELU(), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, recipe.dim))
        self.text = TextEncoder(recipe.dim)
        self.text_out = nn.Linear(recipe.dim, recipe.dim)
        self.log_scale = nn.Parameter(torch.tensor(2.66))  # 1 / 0.07, CLIP's start

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(x * 2 - 1), dim=-1)

    def embed_texts(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_out(self.text(ids)[2]), dim=-1)


def clip_loss(model: TextImageModel, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The symmetric InfoNCE of a batch; pairs with the same caption are all counted as matches."""
    logits = model.log_scale.exp().clamp(max=100) * model.embed_images(images) @ model.embed_texts(ids).T
    same = (ids[:, None, :] == ids[None, :, :]).all(-1).float()
    target = same / same.sum(1, keepdim=True)
    return (torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target * logits.log_softmax(0), 0).mean()) / 2


def train_clip(train: ImageSet, recipe: ClipRecipe, log=print) -> TextImageModel:
    torch.manual_seed(recipe.seed)
    model = TextImageModel(train.shape[0], recipe)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    ids_all = tokenize(train.caption_texts(), warn=False)
    gen = torch.Generator().manual_seed(recipe.seed)
    for step in range(recipe.steps):
        idx = torch.randint(len(train), (min(recipe.batch_size, len(train)),), generator=gen)
        lr = recipe.lr * 0.5 * (1 + torch.cos(torch.tensor(step / recipe.steps * torch.pi))).item()
        for group in opt.param_groups:
            group["lr"] = lr
        loss = clip_loss(model, train.images[idx].float() / 255, ids_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 200 == 0:
            log(f"  text-image scorer: step {step + 1}/{recipe.steps}, loss {loss.item():.3f}")
    return model.eval()


def identity(train: ImageSet, recipe: ClipRecipe) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([train.name, train.checksum, asdict(recipe)]).encode())
    h.update("\n".join(train.caption_texts()).encode())
    return h.hexdigest()[:16]


def get_scorer(train: ImageSet, recipe: ClipRecipe = ClipRecipe(), log=print) -> TextImageModel:
    """The cached scorer of this training split (images and captions), trained now if there is none."""
    folder = cache_dir() / "clip" / f"{train.name.replace(':', '-')}-{identity(train, recipe)}"
    model = TextImageModel(train.shape[0], recipe)
    if (folder / "scorer.safetensors").is_file():
        state, _ = load_state(folder / "scorer.safetensors")
        load_into(model, state, str(folder / "scorer.safetensors"), "its recipe")
        return model.eval()
    log(f"training the text-image scorer for {train.name} once (cached afterwards)...")
    model = train_clip(train, recipe, log)
    folder.mkdir(parents=True, exist_ok=True)
    save_state(folder / "scorer.safetensors", model.state_dict(), {"recipe": json.dumps(asdict(recipe))})
    return model


@torch.no_grad()
def text_image_scores(model: TextImageModel, images: torch.Tensor, prompts: list[str], pool: list[str],
                      seed: int = 0, rivals: int = 31) -> dict:
    """CLIP score and R-precision of uint8 `images` for their `prompts`, each ranked against up to
    `rivals` other distinct captions of `pool`."""
    x = images.float() / 255
    img = torch.cat([model.embed_images(x[i:i + 500]) for i in range(0, len(x), 500)])
    distinct = sorted(set(pool) | set(prompts))
    index = {c: i for i, c in enumerate(distinct)}
    txt = torch.cat([model.embed_texts(tokenize(distinct[i:i + 500], warn=False)) for i in range(0, len(distinct), 500)])
    own = torch.tensor([index[p] for p in prompts])
    sims = img @ txt.T  # [N, distinct captions]
    clip_score = 100 * sims[torch.arange(len(own)), own].mean().item()
    k = min(rivals, len(set(pool)) - 1)
    gen = torch.Generator().manual_seed(seed)
    pool_ids = torch.tensor(sorted({index[c] for c in pool}))
    hits = 0
    for i in range(len(own)):
        others = pool_ids[pool_ids != own[i]]
        pick = others[torch.randperm(len(others), generator=gen)[:k]]
        hits += int((sims[i, pick] < sims[i, own[i]]).all())
    return {"clip_score": clip_score, "r_precision": hits / len(own), "ranked_among": k + 1}


@torch.no_grad()
def ranked_first(model: TextImageModel, images: torch.Tensor, prompts: list[str], rivals: list[list[str]]) -> dict:
    """The share of uint8 `images` whose own prompt scores above every one of its own `rivals`
    (a list a prompt; an image without rivals is left out), and the chance of that, the mean of
    1 / (rivals + 1)."""
    keep = [i for i, r in enumerate(rivals) if r]
    if not keep:
        return {"share": None, "chance": None, "n": 0}
    x = images[keep].float() / 255
    img = torch.cat([model.embed_images(x[i:i + 500]) for i in range(0, len(x), 500)])
    hits, chance = 0, 0.0
    for row, i in enumerate(keep):
        texts = [prompts[i], *rivals[i]]
        sims = img[row] @ model.embed_texts(tokenize(texts, warn=False)).T
        hits += int((sims[1:] < sims[0]).all())
        chance += 1 / len(texts)
    return {"share": hits / len(keep), "chance": chance / len(keep), "n": len(keep)}

