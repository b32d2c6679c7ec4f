"""The first stage of latent generative models: a convolutional autoencoder that maps an image to a
small grid of latents, trained once per dataset and settings, cached, and shared by every prior.

Two kinds (Rombach et al. 2022, https://arxiv.org/abs/2112.10752, Sec. 3 and G):
- `kl`: a continuous latent z ~ q(z|x) with a small KL weight; after training, latents are scaled by
  1 / std(z) over the data so that the prior sees unit variance (Stable Diffusion's scale factor);
- `vq`: a codebook of K vectors (van den Oord et al. 2017, https://arxiv.org/abs/1711.00937): each
  latent vector is replaced by its nearest code, the codebook follows the encoder by exponential
  moving averages (Razavi et al. 2019, arXiv:1906.00446), a commitment loss keeps the encoder close
  to its codes, and codes nobody uses are restarted on encoder outputs; an image becomes a grid of
  integer tokens.

Reconstruction loss L1 + L2, plus optionally a small patch discriminator for sharpness (Esser et al.
2021, VQGAN; genlab's GAN losses and spectral normalisation). 28 or 32 px -> 7x7 or 8x8 latents
(downsample 4), 64 px -> 16x16 (4) or 8x8 (8), 28 px with 8 -> 3x3. It may be trained on random
crops (`crop`), as Stable Diffusion's is: being convolutional it encodes and decodes whole images after.
Training it takes minutes at 64 px, so an interrupted training keeps its progress in the cache's
`unfinished/` folder, and the next call for the same entry goes on from there (genlab.core.progress).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import option
from genlab.core.checkpoint import load_into, load_state, save_state, weights_hash
from genlab.core.progress import KeptProgress, progress_file
from genlab.core.runtime import Runtime
from genlab.data import ImageSet
from genlab.errors import GenlabError
from genlab.models.common import psnr, to_uint8, to_unit
from genlab.models.nets import maybe_sn
from genlab.paths import cache_dir

KINDS = ("kl", "vq")
WEIGHTS, SPEC = "first_stage.safetensors", "spec.json"


@dataclass(frozen=True)
class FirstStageSettings:
    """What decides a first stage (and so its cache entry), beside the data."""

    kind: str = "kl"
    downsample: int = 4  # image side / latent side
    channels: int = 4  # latent channels (kl) or code dimension (vq)
    codebook_size: int = 256  # vq
    width: int = 32
    steps: int = 800
    batch_size: int = 64
    lr: float = 1e-3
    kl_weight: float = 1e-3  # kl: of the mean KL per latent element, against mean L1 + L2 per pixel
    commitment: float = 0.25  # vq: beta of the commitment loss
    adversarial: float = 0.0  # weight of the patch discriminator's loss for G (0: none)
    seed: int = 0
    crop: int = 0  # train on random crops of this side (0: whole images); encodes whole images after

    def record(self) -> dict:
        """The settings as a cache entry holds them; `crop` only when set, so that the entries made
        before it existed are still found."""
        return {k: v for k, v in asdict(self).items() if k != "crop" or v}


# ---------------------------------------------------------------- networks

class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                 nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.net(x)


def levels(downsample: int) -> int:
    return int(math.log2(downsample))


def upsampling_sizes(side: int, n: int) -> list[int]:
    """The sides a decoder's `n` upsampling steps reach, the last `side` itself (7 -> 14 -> 28)."""
    return [side // 2 ** (n - 1 - i) for i in range(n)]


class Encoder(nn.Module):
    """x [B, C, H, W] in [-1, 1] -> [B, out, h, w]: a 3x3 stem, then stride-2 convolutions, each
    followed by a residual block at its lower resolution (none at full resolution: on a CPU the
    work at H x W would dominate; measured below 40 MFLOP an image at 28 px)."""

    def __init__(self, c: int, width: int, out: int, downsample: int):
        super().__init__()
        layers, c_in = [nn.Conv2d(c, width, 3, padding=1)], width
        for i in range(levels(downsample)):
            c_out = width if i == 0 else 2 * width
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), ResBlock(c_out)]
            c_in = c_out
        layers += [nn.GroupNorm(8, c_in), nn.SiLU(), nn.Conv2d(c_in, out, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        # as the diffusion U-Net: oneDNN's convolutions run faster on channels-last maps (2 AVX2
        # cores, a 64-px first stage's training step 1.17x; 28 px unchanged); weights keep their layout
        return self.net(x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x)


class Decoder(nn.Module):
    """[B, latent, h, w] -> x [B, C, H, W] in [-1, 1]: nearest upsampling, each step a 3x3
    convolution and (below full resolution) a residual block; sizes that are not a power-of-two
    multiple (28 from 7, or from 3) are reached by the upsampling itself."""

    def __init__(self, c: int, width: int, latent: int, downsample: int, side: int):
        super().__init__()
        n = levels(downsample)
        self.sizes = upsampling_sizes(side, n)  # 7 -> 14 -> 28
        top = width * (2 if n > 1 else 1)
        self.stem = nn.Sequential(nn.Conv2d(latent, top, 3, padding=1), ResBlock(top))
        self.ups = nn.ModuleList()
        c_in = top
        for i in range(n):
            last = i == n - 1
            c_out = width // 2 if last else (width if i == n - 2 else top)
            self.ups.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), *([] if last else [ResBlock(c_out)])))
            c_in = c_out
        self.out = nn.Sequential(nn.GroupNorm(min(8, c_in), c_in), nn.SiLU(), nn.Conv2d(c_in, c, 3, padding=1))

    def forward(self, z, side: int | None = None):
        """`side`: the images' side when it is not the one the decoder was built for (a crop)."""
        sizes = self.sizes if side is None else upsampling_sizes(side, len(self.sizes))
        # channels-last as the encoder: a diffusion prior's latents arrive in the default layout, and
        # decoding 1,000 of them took 1.28 s that way against 0.55 s channels-last (2 AVX2 cores)
        h = self.stem(z.contiguous(memory_format=torch.channels_last) if z.device.type == "cpu" else z)
        for size, up in zip(sizes, self.ups):
            h = up(F.interpolate(h, size=(size, size), mode="nearest"))
        return self.out(h)


class Codebook(nn.Module):
    """K code vectors of dimension D, updated by exponential moving averages of the encoder outputs
    assigned to them (no gradient), with restarts of codes that fall out of use."""

    def __init__(self, k: int, d: int, decay: float = 0.99):
        super().__init__()
        self.decay = decay
        self.register_buffer("codes", torch.randn(k, d) * 0.1)
        self.register_buffer("cluster_size", torch.ones(k))
        self.register_buffer("code_sum", self.codes.clone())

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Code indices [N] of vectors z [N, D]."""
        d = z.square().sum(1, keepdim=True) - 2 * z @ self.codes.T + self.codes.square().sum(1)
        return d.argmin(1)

    @torch.no_grad()
    def update(self, z: torch.Tensor, idx: torch.Tensor, generator: torch.Generator) -> int:
        """The EMA step from this batch's assignments; restart codes whose EMA count fell below
        1 / K of a batch on random encoder outputs. Returns how many were restarted."""
        k = len(self.codes)
        onehot = F.one_hot(idx, k).to(z.dtype)  # [N, K]
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(onehot.T @ z, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        size = (self.cluster_size + 1e-5) / (n + k * 1e-5) * n  # Laplace smoothing
        self.codes.copy_(self.code_sum / size[:, None])
        dead = self.cluster_size < len(z) / k * 0.01
        count = int(dead.sum())
        if count:
            pick = torch.randint(0, len(z), (count,), generator=generator)
            self.codes[dead] = z[pick]
            self.code_sum[dead] = z[pick]
            self.cluster_size[dead] = 1.0
        return count


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: one score per overlapping patch (spectral normalisation, LeakyReLU)."""

    def __init__(self, c: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            maybe_sn(nn.Conv2d(c, width, 4, 2, 1), True), nn.LeakyReLU(0.2),
            maybe_sn(nn.Conv2d(width, 2 * width, 4, 2, 1), True), nn.LeakyReLU(0.2),
            maybe_sn(nn.Conv2d(2 * width, 1, 3, 1, 1), True))

    def forward(self, x):
        return self.net(x).flatten(1)


class FirstStage(nn.Module):
    """The autoencoder. `encode(x)` -> latents the prior models (kl: scaled z; vq: token grid),
    `decode(latents)` -> images in [-1, 1]."""

    def __init__(self, settings: FirstStageSettings, image_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = image_shape
        s = settings
        if s.kind not in KINDS:
            raise GenlabError(f"first stage kind must be one of {', '.join(KINDS)}, got {s.kind!r}")
        if h != w or s.downsample not in (4, 8) or h < 2 * s.downsample:
            raise GenlabError(f"a first stage takes square images of at least {2 * s.downsample} px with "
                              f"--downsample 4 or 8, got {h}x{w} and {s.downsample}")
        if s.crop and (s.crop % s.downsample or not 2 * s.downsample <= s.crop < h):
            raise GenlabError(f"--first-stage-crop {s.crop} does not fit {h} px images: give a multiple of "
                              f"--downsample ({s.downsample}) from {2 * s.downsample} to below {h}, or 0 for whole images")
        self.settings, self.image_shape = s, tuple(image_shape)
        self.latent_side = h
        for _ in range(levels(s.downsample)):  # each stride-2 convolution floors: 28 -> 14 -> 7 -> 3
            self.latent_side //= 2
        out = 2 * s.channels if s.kind == "kl" else s.channels
        self.encoder = Encoder(c, s.width, out, s.downsample)
        self.decoder = Decoder(c, s.width, s.channels, s.downsample, h)
        self.codebook = Codebook(s.codebook_size, s.channels) if s.kind == "vq" else None
        self.register_buffer("scale", torch.ones(()))  # kl: 1 / std of the latents

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.settings.channels, self.latent_side, self.latent_side)

    def moments(self, x: torch.Tensor):
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-20, 10)

    def quantise(self, z_e: torch.Tensor):
        """(z_q with straight-through gradients, indices [B, h, w]) of encoder outputs [B, D, h, w]."""
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.codebook.nearest(flat)
        z_q = self.codebook.codes[idx].view(b, h, w, d).permute(0, 3, 1, 2)
        return z_e + (z_q - z_e).detach(), idx.view(b, h, w)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images -> what the prior models: kl, scaled latents [B, C, h, w] (a draw of q(z|x)
        with the global stream, or `generator`); vq, tokens [B, h, w]."""
        return self.draw(self.codes(images), generator)

    @torch.no_grad()
    def codes(self, images: torch.Tensor) -> torch.Tensor:
        """What the encoder decides of uint8 images, before any draw: kl, the posterior's mean and
        log-variance [B, 2C, h, w]; vq, the tokens [B, h, w]."""
        x = to_unit(images)
        if self.codebook is not None:
            return self.quantise(self.encoder(x))[1]
        return torch.cat(self.moments(x), 1)

    def draw(self, codes: torch.Tensor, generator: torch.Generator | None = None,
             rt: Runtime | None = None) -> torch.Tensor:
        """What the prior models, from `codes`: kl, a draw of q(z|x) scaled to unit variance (from
        `generator`, or the global stream through `rt`: a prior's training step under torchrun draws
        its share of the global batch's); vq, the tokens themselves."""
        if self.codebook is not None:
            return codes
        mean, logvar = codes.chunk(2, 1)
        noise = torch.randn(mean.shape, generator=generator).to(mean.device) if generator is not None \
            else (rt or Runtime(mean.device)).randn(*mean.shape)
        return (mean + (0.5 * logvar).exp() * noise) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """What the prior made -> images in [-1, 1] (kl: scaled latents; vq: tokens)."""
        if self.codebook is not None:
            z = self.codebook.codes[latents].permute(0, 3, 1, 2)
        else:
            z = latents / self.scale
        return self.decoder(z).clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images through the autoencoder (kl: the posterior mean)."""
        x = to_unit(images)
        if self.codebook is not None:
            return to_uint8(self.decoder(self.quantise(self.encoder(x))[0]))
        return to_uint8(self.decoder(self.moments(x)[0]))

    def losses(self, x: torch.Tensor, generator: torch.Generator):
        """(reconstruction, training loss, logs) of a batch in [-1, 1]."""
        s = self.settings
        if self.codebook is not None:
            z_e = self.encoder(x)
            z_q, idx = self.quantise(z_e)
            commit = (z_e - z_q.detach()).square().mean()
            rec = self.decoder(z_q, x.shape[-1])
            restarted = self.codebook.update(z_e.detach().permute(0, 2, 3, 1).reshape(-1, s.channels),
                                              idx.flatten(), generator)
            usage = torch.bincount(idx.flatten(), minlength=s.codebook_size).float()
            p = usage / usage.sum()
            perplexity = float(torch.exp(-(p * (p + 1e-10).log()).sum()))
            extra, logs = s.commitment * commit, {"commitment": commit.item(), "perplexity": perplexity,
                                                    "restarted": restarted}
        else:
            mean, logvar = self.moments(x)
            z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
            rec = self.decoder(z, x.shape[-1])
            kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
            extra, logs = s.kl_weight * kl, {"kl": kl.item()}
        rec_loss = (rec - x).abs().mean() + (rec - x).square().mean()
        return rec, rec_loss + extra, {"rec": rec_loss.item(), **logs}


# ---------------------------------------------------------------- training, once per data and settings

def train_first_stage(data: ImageSet, settings: FirstStageSettings, log=print, progress: Path | None = None,
                      save_every: float = 60.0) -> tuple[FirstStage, dict]:
    """Train the autoencoder with its fixed recipe (Adam, a cosine-decayed rate, batches drawn with
    its own seed); the global random stream is left as it was. Returns it and its record. With
    `progress`, a file that keeps an interrupted training for the next call (genlab.core.progress)."""
    s = settings
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        gen = torch.Generator().manual_seed(s.seed)
        model = FirstStage(s, data.shape)
        opt = torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], lr=s.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.steps)
        disc = PatchDiscriminator(data.shape[0]) if s.adversarial else None
        opt_d = torch.optim.Adam(disc.parameters(), lr=s.lr, betas=(0.5, 0.9)) if disc else None
        parts = {"model": model, "opt": opt, "schedule": schedule,
                 **({"disc": disc, "opt_d": opt_d} if disc else {})}
        with KeptProgress(f"first stage ({s.kind})", s.steps, progress, parts, gen, log, save_every) as kept:
            for step in kept.steps():
                kept.after(step, first_stage_step(model, opt, schedule, disc, opt_d, data, s, step, gen))
        model.eval()
        if s.kind == "kl":  # Stable Diffusion's scale factor: the prior sees latents of unit variance
            z = torch.cat([model.encode(data.images[i:i + 500], generator=gen) for i in range(0, min(len(data), 4000), 500)])
            model.scale.fill_(1.0 / float(z.std()))
    return model, {"train_seconds": round(kept.seconds, 1), "final": kept.last}


def first_stage_step(model, opt, schedule, disc, opt_d, data: ImageSet, s: FirstStageSettings, step: int,
                     gen: torch.Generator) -> dict:
    """One step of the autoencoder (and of its patch discriminator, once it has joined); its losses."""
    x = to_unit(data.images[torch.randint(0, len(data), (min(s.batch_size, len(data)),), generator=gen)])
    if s.crop:
        x = random_crops(x, s.crop, s.downsample, gen)
    rec, loss, logs = model.losses(x, gen)
    adversarial = disc is not None and step > s.steps // 3  # the discriminator joins once shapes are right
    if adversarial:
        loss = loss + s.adversarial * F.softplus(-disc(rec)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    schedule.step()
    if adversarial:
        d_loss = F.softplus(-disc(x)).mean() + F.softplus(disc(rec.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
    return logs


def random_crops(x: torch.Tensor, side: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """A `side` x `side` crop of each image of a batch, its corner on the `grid` (the downsample factor)
    so that the encoder's strided convolutions see the crop in the phase they see whole images in."""
    b, _, h, w = x.shape
    top = torch.randint(0, (h - side) // grid + 1, (b,), generator=generator) * grid
    left = torch.randint(0, (w - side) // grid + 1, (b,), generator=generator) * grid
    rows = (top[:, None] + torch.arange(side))[:, None, :, None]  # [b, 1, side, 1]
    cols = (left[:, None] + torch.arange(side))[:, None, None, :]  # [b, 1, 1, side]
    return x[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]


def reconstruction_psnr(model: FirstStage, images: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of uint8 reconstructions, in dB (over all pixels)."""
    rec = torch.cat([model.reconstruct(images[i:i + 500]) for i in range(0, len(images), 500)])
    return psnr(rec, images)


def get_first_stage(data: ImageSet, settings: FirstStageSettings, heldout: ImageSet | None = None,
                    log=print) -> tuple[FirstStage, dict]:
    """The cached first stage of `data` with `settings`, trained now if there is none: (model, spec).
    Its name, `<data name>-<kind>-<8 hex of the weights' sha256>`, and the reconstruction PSNR on
    held-out images travel with every run that uses it. The global random stream is left as it was
    either way (building a module draws from it), so a run is the same with a cold or a warm cache."""
    with torch.random.fork_rng(devices=[]):
        return _get_first_stage(data, settings, heldout, log)


def _get_first_stage(data: ImageSet, settings: FirstStageSettings, heldout: ImageSet | None,
                     log) -> tuple[FirstStage, dict]:
    root = cache_dir() / "first_stage"
    wanted = {"data_checksum": data.checksum, "image_shape": list(data.shape), "settings": settings.record()}
    for spec_path in sorted(root.glob(f"*/{SPEC}")) if root.is_dir() else []:
        try:
            spec = json.loads(spec_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a damaged entry is retrained, never trusted
        if all(spec.get(k) == v for k, v in wanted.items()) and (spec_path.parent / WEIGHTS).is_file():
            psnr = spec.get("heldout_psnr")
            log(f"first stage {spec.get('name')} from the cache (trained once in {spec.get('train_seconds', 0):.0f} s"
                + (f", held-out PSNR {psnr:.1f} dB)" if psnr else ")"))
            return load_first_stage(spec_path.parent), spec
    log(f"training the first stage ({settings.kind}) for {data.name} once (cached afterwards)...")
    progress = progress_file(root, wanted)  # an interrupted training of this entry
    model, record = train_first_stage(data, settings, log, progress=progress)
    digest = weights_hash(model)
    name = f"{data.name.replace(':', '-').replace('/', '-')}-{settings.kind}-{digest[:8]}"
    spec = {"name": name, "sha256": digest, **wanted, **record,
            "heldout_psnr": reconstruction_psnr(model, heldout.images[:2000]) if heldout is not None else None,
            "torch_version": torch.__version__}
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    save_state(folder / WEIGHTS, model.state_dict(), {"name": name})
    (folder / SPEC).write_text(json.dumps(spec, indent=2) + "\n")  # written last: marks the entry complete
    progress.unlink(missing_ok=True)
    psnr = spec["heldout_psnr"]
    log(f"first stage {name}: {record['train_seconds']:.0f} s" + (f", held-out PSNR {psnr:.1f} dB" if psnr else ""))
    return model, spec


def load_first_stage(folder: str | Path) -> FirstStage:
    folder = Path(folder)
    spec = json.loads((folder / SPEC).read_text())
    model = FirstStage(FirstStageSettings(**spec["settings"]), tuple(spec["image_shape"]))
    state, _ = load_state(folder / WEIGHTS)
    load_into(model, state, str(folder / WEIGHTS), f"its {SPEC}")
    return model.eval()


class Encodings:
    """A first stage's codes (`FirstStage.codes`) of a fixed set of images, computed once in chunks
    and found again by each image's bytes. A prior's training step then skips the encoder, which
    was ~1/4 of a latent diffusion step at 28 px and ~3/5 at 64 px (2 AVX2 cores). The codes depend
    on the image alone, so a batch found here gets what encoding it anew would (up to the rounding
    of another batch split), and every session of a run computes them alike: a resume stays
    bit-exact. (Filling them lazily, batch by batch, would not: a convolution's result for one image
    can change with the batch it is computed in.)"""

    def __init__(self, model: FirstStage, images: torch.Tensor, chunk: int = 128):  # 500: 1.5x slower
        device = model.scale.device
        self.codes = torch.cat([model.codes(images[i:i + chunk].to(device)) for i in range(0, len(images), chunk)])
        self.rows: dict[bytes, int] = {}
        for i, image in enumerate(images.numpy()):
            self.rows.setdefault(image.tobytes(), i)

    def __len__(self) -> int:
        return len(self.codes)

    def find(self, images: torch.Tensor) -> torch.Tensor | None:
        """The codes of uint8 `images` if every one of them is known, else None."""
        rows = [self.rows.get(image.tobytes()) for image in images.cpu().numpy()]
        if None in rows:
            return None
        return self.codes[torch.tensor(rows, device=self.codes.device)]


# ---------------------------------------------------------------- what a latent family holds

@dataclass
class FirstStageOptions:
    """The first stage a latent family uses: the cache finds it (or trains it) by these and the data."""

    first_stage: str = option("kl", "the first stage: kl (continuous latents, as Stable Diffusion) or vq (a "
                              "codebook: images become grids of tokens)", choices=KINDS)
    downsample: int = option(4, "image side / latent side: 4 (28 px -> 7x7, 64 px -> 16x16) or 8 (64 px -> 8x8)",
                             choices=(4, 8))
    latent_channels: int = option(4, "latent channels (kl) or the dimension of a code (vq)")
    codebook_size: int = option(256, "codes in the codebook (vq): the vocabulary of a latent Transformer")
    first_stage_width: int = option(32, "channels of the autoencoder's first level (a multiple of 16)")
    first_stage_steps: int = option(800, "optimisation steps of the autoencoder (once per data and settings, "
                                    "then cached; counted in the run's time budget)")
    first_stage_lr: float = option(1e-3, "Adam learning rate of the autoencoder (cosine-decayed)")
    kl_weight: float = option(1e-3, "weight of the latents' KL term (kl)")
    adversarial: float = option(0.0, "weight of a patch discriminator's loss in the autoencoder (sharper "
                                "reconstructions; 0: none)")
    first_stage_crop: int = option(0, "train the autoencoder on random crops of this side (0: whole images): "
                                   "being convolutional it then encodes whole images; 32 of 64 px makes its "
                                   "steps ~4x cheaper")

    def first_stage_settings(self) -> FirstStageSettings:
        return FirstStageSettings(kind=self.first_stage, downsample=self.downsample, channels=self.latent_channels,
                                  codebook_size=self.codebook_size, width=self.first_stage_width,
                                  steps=self.first_stage_steps, lr=self.first_stage_lr, kl_weight=self.kl_weight,
                                  adversarial=self.adversarial, crop=self.first_stage_crop)

    def validate_first_stage(self) -> None:
        if self.first_stage_width < 16 or self.first_stage_width % 16:
            raise GenlabError(f"first_stage_width must be a multiple of 16, got {self.first_stage_width}")
        for name in ("latent_channels", "first_stage_steps", "codebook_size"):
            if getattr(self, name) <= 0:
                raise GenlabError(f"{name} must be positive, got {getattr(self, name)}")
        if self.first_stage_lr <= 0 or self.kl_weight < 0 or self.adversarial < 0 or self.first_stage_crop < 0:
            raise GenlabError("first_stage_lr must be positive, kl_weight, adversarial and first_stage_crop 0 or more")


class FirstStageSlot:
    """The first stage inside a latent family: built empty, filled by `prepare` (the cache, or
    training now) or by a saved state. Its record (name, sha256) travels in the family's state, and
    a state made with another first stage is refused."""

    def __init__(self, settings: FirstStageSettings, image_shape, device):
        self.model = FirstStage(settings, image_shape).to(device).eval().requires_grad_(False)
        self.info: dict | None = None

    def prepare(self, data: ImageSet, heldout: ImageSet | None, log=print) -> dict:
        model, spec = get_first_stage(data, self.model.settings, heldout, log)
        self.model.load_state_dict(model.state_dict())
        self.info = {"name": spec["name"], "sha256": spec["sha256"], "heldout_psnr": spec.get("heldout_psnr"),
                     "train_seconds": spec.get("train_seconds"),
                     **({"perplexity": spec["final"]["perplexity"]} if "perplexity" in spec.get("final", {}) else {})}
        return self.info

    def require(self) -> FirstStage:
        if self.info is None:
            raise GenlabError("this latent model has no first stage yet: prepare(data) finds or trains it "
                              "(genlab train does so before the first step)")
        return self.model

    def state_dict(self) -> dict:
        return {"weights": self.model.state_dict(), "info": dict(self.info or {})}

    def load_state_dict(self, state: dict) -> None:
        info = state["info"]
        if self.info is not None and info.get("sha256") != self.info["sha256"]:
            raise GenlabError(f"these weights were trained on the first stage {info.get('name')}, not "
                              f"{self.info['name']}: a prior means nothing over another autoencoder's latents")
        self.model.load_state_dict(state["weights"])
        if info.get("sha256") and weights_hash(self.model) != info["sha256"]:
            raise GenlabError(f"the first stage in these weights does not match its record ({info.get('name')}): "
                              "the file is damaged or was edited")
        self.info = dict(info)


class LatentPrior:
    """What a latent family adds to the pixel family it extends (`class LatentX(LatentPrior, X)`):
    a first stage in `self.slot`, found or trained by `prepare`, saved in every state, and the
    reconstructions that bound what any prior over its latents can reach."""

    slot: FirstStageSlot
    device: torch.device
    encodings: Encodings | None = None

    def prepare(self, data, heldout, log=print) -> dict:
        """Find the first stage for `data` in the cache, or train it now."""
        return self.slot.prepare(data, heldout, log)

    def attach(self, data: ImageSet, log=print) -> None:
        """Encode the training images once, before the first step of a session (new or resumed)."""
        started = time.monotonic()
        self.encodings = Encodings(self.slot.require(), data.images)
        log(f"encoded the {len(data)} training images once for the prior: {time.monotonic() - started:.0f} s")

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """What the prior learns from uint8 images: a draw from their codes, found in the training
        images' encodings where attached, computed now otherwise."""
        model = self.slot.require()
        codes = self.encodings.find(images) if self.encodings is not None else None
        return model.draw(model.codes(images.to(self.device)) if codes is None else codes, rt=self.rt)

    def reconstruct(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """uint8 images through the first stage: the best any prior over its latents can do."""
        return self.slot.require().reconstruct(images.to(self.device)).cpu()

    def nets(self):
        return {**super().nets(), "first_stage": self.slot.model}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "first_stage": self.slot.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.slot.load_state_dict(state["first_stage"])
        super().load_state_dict(state)
