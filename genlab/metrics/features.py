"""Feature extractors: what every sample metric is measured in, trained once per dataset and cached.

ImageNet's InceptionV3 cannot be downloaded here and suits 28x28 greyscale poorly, so genlab
measures samples in the feature space of its own network of the dataset (128 numbers):

- `classifier`: a small CNN trained on the labels; its class probabilities also feed the Inception
  Score and class coverage;
- `contrastive`: the same network's body trained without labels (genlab.metrics.contrastive), for a
  dataset that has none;
- `torchscript` / `export`: a user's own module (genlab.metrics.own_features), e.g. InceptionV3 exported
  elsewhere.

genlab's extractors are trained with a fixed seed and recipe on the training split and cached under
`<cache>/features/<dataset>-<first 8 hex of the weights' sha256>/` (`<dataset>-ssl-...` for the
contrastive kind), with their test (or linear probe) accuracy. That name travels with every score,
so a number always says which features it was measured in.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import DataConfig
from genlab.data import ImageSet, Splits, splits_of
from genlab.errors import GenlabError
from genlab.paths import cache_dir
from genlab.core.checkpoint import load_into, load_state, save_state, weights_hash
from genlab.core.progress import KeptProgress, kept_seconds, progress_file

WEIGHTS, SPEC = "extractor.safetensors", "spec.json"


@dataclass(frozen=True)
class FeatureRecipe:
    """How an extractor is trained; part of its identity (a different recipe, a different cache)."""

    steps: int = 2500  # about 5 epochs of Fashion-MNIST, 80 of the 4,000-digit MNIST sample
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 32
    feature_dim: int = 128
    shift: int = 2  # random translation of up to +-2 pixels: the small-data guard against overfitting
    seed: int = 0


class DomainClassifier(nn.Module):
    """Images float [B, C, H, W] in [0, 1] -> (features [B, feature_dim], logits [B, classes])."""

    def __init__(self, channels: int, num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()

        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(
            *block(channels, width // 2), *block(width // 2, width // 2), nn.MaxPool2d(2),  # 14x14
            *block(width // 2, width), *block(width, width), nn.MaxPool2d(2),              # 7x7
            nn.AdaptiveAvgPool2d(7), nn.Flatten(),
            nn.Linear(width * 49, feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x * 2 - 1)
        return features, self.head(features)


class FeatureEncoder(nn.Module):
    """The classifier's body alone: images in [0, 1] -> features [B, feature_dim] (the contrastive kind)."""

    def __init__(self, channels: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.body = DomainClassifier(channels, 2, width, feature_dim).body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1)


@dataclass
class Extractor:
    """A feature network with its identity: `name` is `<dataset>-<8 hex of sha256(weights)>`; `path`
    is where the real side's statistics in its features are cached."""

    net: nn.Module  # images [N, C, H, W] in [0, 1] -> (features, logits) or features
    spec: dict  # kind, name, dataset, data_checksum, image_shape, num_classes, class_names, recipe, accuracy
    path: Path

    @property
    def kind(self) -> str:
        return self.spec.get("kind", "classifier")

    @property
    def has_classes(self) -> bool:
        """Whether it gives class logits (IS, classes found, class TV need them)."""
        return self.kind == "classifier"

    def describe(self) -> str:
        """What the table's head says about these features."""
        if self.kind == "classifier":
            acc = self.spec.get("test_accuracy")
            return "" if acc is None else f" (test accuracy {acc:.2%})"
        if self.kind == "contrastive":
            acc = self.spec.get("probe_accuracy")
            return " (self-supervised" + ("" if acc is None else f"; linear probe accuracy {acc:.2%}") + ")"
        what = "exported program" if self.kind == "export" else "TorchScript module"
        return f" (your {what} {self.spec.get('file')})"

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.spec["image_shape"])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features [N, D] float32, logits [N, classes] or None) of uint8 images or floats in [0, 1]."""
        self.net.eval()
        feats, logits = [], []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            out = self.net(x)
            f, lg = out if isinstance(out, tuple) else (out, None)
            feats.append(f.float())
            logits.append(lg)
        return torch.cat(feats), (torch.cat(logits) if logits[0] is not None else None)


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (zero padding): one roll per batch."""
    if max_shift == 0:
        return x
    dx, dy = torch.randint(-max_shift, max_shift + 1, (2,), generator=gen).tolist()
    padded = F.pad(x, (max_shift,) * 4)
    h, w = x.shape[-2:]
    return padded[..., max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]


def accuracy(extractor_net: DomainClassifier, data: ImageSet) -> float:
    net_was = extractor_net.training
    extractor_net.eval()
    with torch.no_grad():
        correct = sum(int((extractor_net(data.images[i:i + 1000].float() / 255)[1].argmax(1)
                           == data.labels[i:i + 1000]).sum()) for i in range(0, len(data), 1000))
    extractor_net.train(net_was)
    return correct / len(data)


def train_classifier(train: ImageSet, recipe: FeatureRecipe, log=print,
                     progress: Path | None = None) -> DomainClassifier:
    """The fixed recipe: Adam with a cosine-decayed learning rate, shifted batches, cross-entropy.
    The global random state is left as it was (training with --eval-every may build the extractor
    after seeding the model: a cached and a fresh extractor must leave the same run). With
    `progress`, a file that keeps an interrupted training for the next call (genlab.core.progress)."""
    with torch.random.fork_rng(devices=[]):
        return _train_classifier(train, recipe, log, progress)


def _train_classifier(train: ImageSet, recipe: FeatureRecipe, log, progress: Path | None) -> DomainClassifier:
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    net = DomainClassifier(train.shape[0], train.num_classes, recipe.width, recipe.feature_dim)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.steps)
    net.train()
    with KeptProgress("feature extractor", recipe.steps, progress, {"net": net, "opt": opt, "schedule": schedule},
                      gen, log) as kept:
        for step in kept.steps():
            idx = torch.randint(0, len(train), (recipe.batch_size,), generator=gen)
            x = _shift(train.images[idx].float() / 255, recipe.shift, gen)
            loss = F.cross_entropy(net(x)[1], train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            kept.after(step, {"loss": loss.item()})
    return net.eval()


def _spec_matches(spec: dict, dataset: str, checksum: str, recipe, kind: str) -> bool:
    as_saved = json.loads(json.dumps(asdict(recipe)))  # as spec.json holds it (tuples become lists)
    return (spec.get("dataset") == dataset and spec.get("data_checksum") == checksum
            and spec.get("recipe") == as_saved and spec.get("kind", "classifier") == kind)


def find_cached(dataset: str, checksum: str, recipe, kind: str = "classifier") -> Path | None:
    root = cache_dir() / "features"
    for spec_path in sorted(root.glob(f"{dataset}-*/{SPEC}")) if root.is_dir() else []:
        try:
            spec = json.loads(spec_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a damaged cache entry is skipped (and retrained), never trusted
        if _spec_matches(spec, dataset, checksum, recipe, kind) and (spec_path.parent / WEIGHTS).is_file():
            return spec_path.parent
    return None


def unfinished_path(dataset: str, checksum: str, recipe, kind: str) -> Path:
    """Where an interrupted training of this extractor keeps its progress (genlab.core.progress)."""
    return progress_file(cache_dir() / "features", [dataset, checksum, asdict(recipe), kind])


def load_extractor(path: str | Path) -> Extractor:
    """An extractor saved by genlab: its folder, or the extractor.safetensors inside it."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not (folder / SPEC).is_file() or not (folder / WEIGHTS).is_file():
        raise GenlabError(f"{path} is not a genlab feature extractor (needs {SPEC} and {WEIGHTS}); "
                          "pass the folder that genlab made under <cache>/features/, or a TorchScript .pt or "
                          "torch.export .pt2 file")
    try:
        spec = json.loads((folder / SPEC).read_text())
        recipe, channels = spec["recipe"], spec["image_shape"][0]
        if spec.get("kind", "classifier") == "contrastive":
            net = FeatureEncoder(channels, recipe["width"], recipe["feature_dim"])
        else:
            net = DomainClassifier(channels, spec["num_classes"], recipe["width"], recipe["feature_dim"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise GenlabError(f"{folder / SPEC} is damaged ({err}); delete the folder to retrain") from None
    state, _ = load_state(folder / WEIGHTS)
    load_into(net, state, str(folder / WEIGHTS), f"its {SPEC}")
    return Extractor(net.eval(), spec, folder)


def save_extractor(net: nn.Module, spec: dict, prefix: str) -> Extractor:
    """Cache a freshly trained extractor as `<prefix>-<8 hex of its weights' sha256>`; spec.json is
    written last, so a folder without it is an interrupted entry and never trusted."""
    name = f"{prefix}-{weights_hash(net)[:8]}"
    spec = {"name": name, **spec, "torch_version": torch.__version__}
    folder = cache_dir() / "features" / name
    folder.mkdir(parents=True, exist_ok=True)
    save_state(folder / WEIGHTS, net.state_dict(), {"name": name})
    (folder / SPEC).write_text(json.dumps(spec, indent=2) + "\n")
    return Extractor(net, spec, folder)


def get_extractor(data: DataConfig | Splits, recipe: FeatureRecipe = FeatureRecipe(), log=print) -> Extractor:
    """The cached classifier of `data`'s dataset, trained now if there is none yet."""
    splits = splits_of(data)
    train = splits.train
    if train.num_classes < 2:
        raise GenlabError(f"dataset {train.name} has no classes to train a feature extractor on (a classifier "
                          "needs labels); use the self-supervised extractor, --features contrastive (genlab eval's "
                          "default for such data)")
    cached = find_cached(splits.dataset, train.checksum, recipe)
    if cached is not None:
        return load_extractor(cached)
    log(f"training the feature extractor for {splits.dataset} once (cached afterwards)...")
    progress = unfinished_path(splits.dataset, train.checksum, recipe, "classifier")
    started = time.monotonic() - kept_seconds(progress)  # an interrupted training's seconds count
    net = train_classifier(train, recipe, log, progress)
    test = splits.heldout
    extractor = save_extractor(net, {
        "kind": "classifier", "dataset": splits.dataset, "data_checksum": train.checksum,
        "image_shape": list(train.shape), "num_classes": train.num_classes, "class_names": train.class_names,
        "recipe": asdict(recipe), "test_accuracy": accuracy(net, test) if test is not None else None,
        "train_seconds": round(time.monotonic() - started, 1)}, splits.dataset)
    progress.unlink(missing_ok=True)
    acc = extractor.spec["test_accuracy"]
    log(f"feature extractor {extractor.name}: test accuracy {'n/a' if acc is None else f'{acc:.2%}'}, "
        f"{extractor.spec['train_seconds']:.0f} s")
    return extractor
