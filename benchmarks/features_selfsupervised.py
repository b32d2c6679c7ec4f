"""How good is the self-supervised feature extractor that measures data without labels? (issue:
your own images; targets: Spearman >= 0.9 on both datasets)

For Fashion-MNIST and the MNIST sample, with their labels hidden from it: the contrastive
extractor's linear-probe accuracy on the test split, and how FID in its features ranks sample sets
of very different quality against FID in the labelled classifier's features (Spearman's rank
correlation). The sets: real test images, the best GAN recipe at three training stages
(checkpoints of one run), the VAE recipe, the tutorial GAN, uniform noise; as many images each as
the test split has (at most 2,000).

    .venv/bin/python benchmarks/features_selfsupervised.py [--gan-minutes 3] [--datasets ...]

Runs go to runs/features_ssl/; the table to benchmarks/results/features_selfsupervised.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from budget_protocol import ROOT  # beside this script
from genlab.config import DataConfig, load_config
from genlab.core.checkpoint import load_state
from genlab.core.run import Run
from genlab.data import load_dataset
from genlab.generate import load, sample_from
from genlab.metrics import scores
from genlab.metrics.contrastive import get_contrastive_extractor
from genlab.metrics.features import get_extractor
from genlab.metrics.reference import get_reference
from genlab.models import build_model
from write_table import write_table

RECIPES = {"fashion-mnist": ("configs/dcgan-fashion.yaml", "configs/vae-fashion.yaml"),
           "mnist-sample": ("configs/dcgan-mnist-sample.yaml", "configs/vae-mnist-sample.yaml")}


def train(config: str, dataset: str, minutes: float, out, extra=()) -> Run:
    subprocess.run([sys.executable, "-m", "genlab.cli", "train", "--config", config, "--dataset", dataset,
                    "--minutes", str(minutes), "--out", str(out), "--overwrite", "--no-progress", *extra],
                   check=True, cwd=ROOT)
    return Run.open(out)


def checkpoint_model(run: Run, path):
    meta = run.meta
    model = build_model(run.config.model, tuple(meta["image_shape"]), meta["num_classes"])
    model.load_state_dict(load_state(path)[0]["model"])
    return model


def sample_sets(dataset: str, n: int, gan_minutes: float, out_root) -> dict[str, torch.Tensor]:
    gan_cfg, vae_cfg = RECIPES[dataset]
    test = load_dataset(DataConfig(dataset=dataset, split="test")).images
    sets = {"real test images": test[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:n]]}
    gan = train(gan_cfg, dataset, gan_minutes, out_root / f"{dataset}-gan", ["--checkpoint-every", "300",
                                                                             "--keep-checkpoints", "1000"])
    found = gan.checkpoints()
    early, middle = found[0], found[len(found) // 3]
    for label, (step, path) in ((f"best GAN, step {early[0]}", early), (f"best GAN, step {middle[0]}", middle)):
        sets[label] = sample_from(checkpoint_model(gan, path), n, seed=0)
    sets[f"best GAN, final (step {gan.meta['steps']})"] = load(gan.path).sample(n, seed=0)
    vae = train(vae_cfg, dataset, gan_minutes / 2, out_root / f"{dataset}-vae")
    sets["VAE"] = load(vae.path).sample(n, seed=0)
    tutorial = train("configs/tutorial-gan-mnist.yaml", dataset, gan_minutes / 2, out_root / f"{dataset}-tutorial")
    sets["tutorial GAN"] = load(tutorial.path).sample(n, seed=0)
    sets["uniform noise"] = torch.randint(0, 256, test[:n].shape, dtype=torch.uint8,
                                          generator=torch.Generator().manual_seed(0))
    return sets


def fids(extractor, data_cfg, sets) -> dict[str, float]:
    ref = get_reference(data_cfg, extractor)
    return {name: scores.frechet_distance(ref.mu, ref.sigma, *scores.gaussian_stats(extractor(x)[0]))
            for name, x in sets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gan-minutes", type=float, default=3.0)
    parser.add_argument("--datasets", nargs="+", default=list(RECIPES))
    args = parser.parse_args()
    out_root = ROOT / "runs" / "features_ssl"
    for dataset in args.datasets:
        data_cfg = DataConfig(dataset=dataset)
        classifier = get_extractor(data_cfg)
        ssl = get_contrastive_extractor(data_cfg)
        n = min(2000, len(load_dataset(DataConfig(dataset=dataset, split="test"))))
        sets = sample_sets(dataset, n, args.gan_minutes, out_root)
        by_classifier, by_ssl = fids(classifier, data_cfg, sets), fids(ssl, data_cfg, sets)
        rho = scores.spearman([by_classifier[k] for k in sets], [by_ssl[k] for k in sets])
        (out_root / f"{dataset}.json").write_text(json.dumps({
            "classifier": by_classifier, "ssl": by_ssl, "rho": rho, "n": n, "classifier_name": classifier.name,
            "classifier_accuracy": classifier.spec["test_accuracy"], "ssl_name": ssl.name,
            "probe_accuracy": ssl.spec["probe_accuracy"], "ssl_seconds": ssl.spec["train_seconds"]}, indent=2))
    lines, verdicts = [], []
    for dataset in RECIPES:  # every dataset measured so far, this session or an earlier one
        path = out_root / f"{dataset}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        lines += [f"### {dataset}", "",
                  f"classifier {r['classifier_name']}: test accuracy {r['classifier_accuracy']:.2%}; self-supervised "
                  f"{r['ssl_name']}: linear probe accuracy {r['probe_accuracy']:.2%} (trained in {r['ssl_seconds']:.0f} s)",
                  "", f"| sample set ({r['n']} images) | FID, classifier features | FID, self-supervised features |",
                  "|---|---|---|", *[f"| {k} | {r['classifier'][k]:.2f} | {r['ssl'][k]:.2f} |" for k in r["classifier"]],
                  "", f"Spearman rank correlation: {r['rho']:.3f}", ""]
        verdicts.append(f"{dataset}: linear probe accuracy {r['probe_accuracy']:.2%}; Spearman {r['rho']:.3f} >= 0.9 "
                        f"{'met' if r['rho'] >= 0.9 else 'NOT met'}")
    text = "\n".join(lines + verdicts) + "\n"
    print(text)
    write_table(__file__, text)


if __name__ == "__main__":
    main()
