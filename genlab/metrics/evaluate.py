"""Evaluation: samples in, a table of scores out, each beside the real-data floor.

The pieces: samples.py (images from any generator), features.py (the dataset's feature extractor),
reference.py (the real side and its floors, cached), scores.py (the metrics as pure functions),
model_metrics.py (PPL, likelihood). This module puts them together for `genlab eval`, for
evaluation during training, and for `genlab.evaluate(images, dataset=...)`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from genlab.config import CHANNELS, MIN_EVAL_SAMPLES, DataConfig, option
from genlab.core.run import Run
from genlab.data import Splits, load_dataset, splits_of, with_split
from genlab.data.convert import BACKGROUNDS, FILTER
from genlab.errors import GenlabError
from genlab.generate import (labels_for, load_run, parse_option_items, sample_from, sampling_options,
                             solver_options)
from genlab.metrics import scores
from genlab.metrics.card import write_card
from genlab.metrics.contrastive import get_contrastive_extractor
from genlab.metrics.features import Extractor, get_extractor, load_extractor
from genlab.metrics.human import describe, human_scores
from genlab.metrics.model_metrics import likelihood, ppl
from genlab.metrics.own_features import load_own_extractor
from genlab.metrics.reference import copying, floor_indices, get_reference, real_floor, score_features
from genlab.metrics.samples import load_samples_file, prepare_samples
from genlab.models.common import psnr
from genlab.models.protocols import Encoder, Likelihood, Solved
from genlab.models.text import tokenize

# metric -> which way is better (shown in the table)
BETTER = {"fid": "lower", "fid_equal_n": "lower", "kid": "lower", "is": "higher", "precision": "higher",
          "recall": "higher", "density": "near 1", "coverage": "higher", "classes_found": "higher",
          "class_tv": "lower",
          "fid_heldout": "lower", "precision_heldout": "higher", "recall_heldout": "higher",
          "data_copying": "near 0 (below: copying)", "ppl": "lower", "nll_nats": "lower", "bits_per_dim": "lower",
          "neg_elbo_nats": "lower", "fid_reconstruction": "lower", "psnr_reconstruction": "higher",
          "class_tv_reconstruction": "lower"}
COPYING_P = 0.01  # below: the samples sit closer to the training images than unseen real images do
CLASS_MIX_TV = 0.15  # above: the samples' mix of classes is far from the data's (real images: ~0.01)
TRAINING_METRICS = ("fid", "kid", "is", "precision", "recall", "density", "coverage", "classes_found", "class_tv",
                    "fid_heldout", "recall_heldout")


@dataclass
class EvalOptions:
    """`genlab eval RUN` or `genlab eval --samples FILE --dataset NAME`: scores beside the real floor."""

    run: str | None = option(None, "run folder to sample from (or use --samples)", positional=True)
    samples: str | None = option(None, "FILE.npz with `images`, FILE.npy, or a folder of images (PNG, "
                                 "JPEG, ...), from any generator")
    dataset: str | None = option(None, "dataset the samples imitate (with --samples)")
    data_dir: str | None = option(None, "folder of the dataset's files, where it needs one")
    image_size: int | None = option(None, "image size of the dataset (default: its own; a folder: 28)")
    channels: str = option("auto", "channels of the dataset, or the channels you expect of the run's samples "
                           "(a run of another channel count is refused)", choices=CHANNELS)
    background: str = option(DataConfig.background, "what the dataset's transparent pixels, and those of PNG "
                             "samples, are painted on (with --samples; as the run was trained on)",
                             choices=tuple(BACKGROUNDS))
    crop: bool = option(DataConfig.crop, "crop a folder dataset's images to their centred square (with "
                        "--samples; as the run was trained on)")
    n: int = option(10_000, "samples to draw from the run")
    seed: int = option(0, "seed for sampling and metric subsets")
    features: str | None = option(None, "the features to measure in: classifier, contrastive (self-supervised), "
                                  "a genlab extractor folder, or your own module: TorchScript FILE.pt or "
                                  "torch.export FILE.pt2 (default: the classifier, or the contrastive extractor "
                                  "for a dataset without labels)")
    resize: bool = option(False, "resize samples of another size or channel count")
    ppl_samples: int = option(2000, "latent pairs for perceptual path length")
    json: str | None = option(None, "also write the result as JSON to this file")
    sampler: str | None = option(None, "the sampler of a diffusion or flow run, e.g. dpm++2m, unipc, euler, heun, "
                                 "dopri5 (default: the run's own)")
    sample_steps: int | None = option(None, "the sampler's steps (default: the run's own)")
    options: list[str] = option([], "a sampling option of the run's family, NAME=VALUE, e.g. guidance=3 "
                                "(repeatable)", flag="--option")

    def validate(self) -> None:
        if self.samples is not None and (self.sampler or self.sample_steps is not None or self.options):
            raise GenlabError("--sampler, --sample-steps and --option choose how a run samples; with --samples "
                              "there is no run: leave them out")
        if (self.run is None) == (self.samples is None):
            raise GenlabError("give either a run folder or --samples FILE (with --dataset)")
        if self.n < MIN_EVAL_SAMPLES:
            raise GenlabError(f"--n must be at least {MIN_EVAL_SAMPLES}, got {self.n} (10,000 is usual)")
        if self.samples is not None and not self.dataset:
            raise GenlabError("--samples needs --dataset NAME: the data the samples are compared with")


def open_extractor(data: DataConfig | Splits, features=None, log=print) -> Extractor:
    """The extractor `features` names: `classifier` or `contrastive` (genlab's, cached), a genlab
    extractor folder (checked to be of the same dataset), or a TorchScript .pt / torch.export .pt2
    file; by default the classifier, or the contrastive extractor when the dataset has no labels."""
    splits = splits_of(data)
    if features in (None, "", "auto"):
        features = "classifier" if splits.train.num_classes >= 2 else "contrastive"
    if features == "classifier":
        return get_extractor(splits, log=log)
    if features == "contrastive":
        return get_contrastive_extractor(splits, log=log)
    path = Path(features)
    if path.is_file() and path.name != "extractor.safetensors":
        train = splits.train
        return load_own_extractor(path, train.shape, f"{splits.dataset}-{train.checksum.split(':')[-1][:8]}")
    extractor = load_extractor(features)
    if extractor.spec["dataset"] != splits.dataset:
        raise GenlabError(f"feature extractor {extractor.name} was trained on {extractor.spec['dataset']}, "
                          f"not {splits.dataset}; pass an extractor of {splits.dataset} or leave out --features")
    return extractor


def evaluate(images, dataset: str = "mnist-sample", data_dir: str | None = None,
             image_size: int | None = EvalOptions.image_size, features: str | Path | None = None, resize: bool = False,
             seed: int = EvalOptions.seed, model=None, ppl_samples: int = EvalOptions.ppl_samples, floor: bool = True,
             log=print, data: DataConfig | Splits | None = None) -> dict:
    """Score samples (uint8 [N, C, H, W] or [N, H, W], or floats in [0, 1]) against a dataset (`data`:
    its settings or its splits as read already, or the one `dataset`, `data_dir` and `image_size`
    name), on the training split and held out.

    Returns {"features", "dataset", "n", "metrics": {name: {"value", "floor", "better"}}, ...}.
    With `model`, also its perceptual path length and, where it has one, its test likelihood."""
    splits = splits_of(data or DataConfig(dataset=dataset, data_dir=data_dir, image_size=image_size))
    extractor = open_extractor(splits, features, log)
    x = prepare_samples(images, extractor.image_shape, resize)
    ref = get_reference(splits, extractor)
    feats, logits = extractor(x)
    values = score_features(feats, logits, ref, seed)
    copied = copying(feats, ref)
    values["data_copying"] = copied["ct"]
    floors = real_floor(ref, len(x)) if floor else {}
    n_floor = min(len(x), len(ref.heldout_features))
    if floor and n_floor < len(x):  # FID's bias falls as 1/N: a floor of fewer images is the higher for it
        values["fid_equal_n"] = scores.frechet_distance(ref.mu, ref.sigma, *scores.gaussian_stats(feats[:n_floor]))
        floors["fid_equal_n"] = floors.get("fid")
    convention = {}
    if model is not None:
        values["ppl"] = ppl(model, extractor, n=ppl_samples, seed=seed)
        test = splits.reference()[1] if isinstance(model, (Likelihood, Encoder)) else None
        if isinstance(model, Likelihood):
            values.update(likelihood(model, test))
            convention = {"likelihood_convention": model.likelihood_convention}
        if isinstance(model, Encoder):  # what its autoencoder keeps bounds what any sample can reach
            values.update(reconstruction(model, test, extractor, ref, len(x)))
    if "fid_reconstruction" in values:  # the reconstructed images are the floor's own held-out images
        floors["fid_reconstruction"] = floors.get("fid")
        floors["class_tv_reconstruction"] = floors.get("class_tv")
    metrics = {name: {"value": values.get(name), "floor": floors.get(name), "better": better}
               for name, better in BETTER.items() if values.get(name) is not None}
    for name in ("kid", "is"):
        if name in metrics:
            metrics[name]["std"] = values[f"{name}_std"]
    warnings = values["warnings"]
    if copied["p_value"] is not None and copied["p_value"] < COPYING_P:
        warnings.append(f"the samples sit closer to the training images than real images the model never saw do "
                        f"(data-copying statistic C_T = {copied['ct']:.2f}, p = {copied['p_value']:.2g}; Meehan et al. "
                        "2020): the model may be reproducing its training images; judge it by the held-out view")
    if values.get("class_histogram") is not None:
        warnings.extend(class_mix_warning(values["class_histogram"], ref.label_histogram,
                                          extractor.spec["class_names"]))
    return {"features": extractor.name, "features_kind": extractor.kind, "features_note": extractor.describe(),
            "features_test_accuracy": extractor.spec.get("test_accuracy"), "resize_filter": FILTER,
            "dataset": splits.dataset, "n": len(x), "floor_n": n_floor,
            "heldout_n": len(ref.heldout_features), "knn_n": values["knn_n"],
            "class_histogram": values.get("class_histogram"), "class_names": extractor.spec["class_names"],
            "data_copying": copied, "warnings": warnings, "metrics": metrics, **convention}


def class_mix_warning(samples: list[float], data_histogram: torch.Tensor, class_names: list[str]) -> list[str]:
    """A sentence when the samples' mix of classes (the classifier's verdicts) is far from the
    data's: FID and recall then count the mix as well as the images. Two causes are told apart where
    the numbers can: a model that drops classes, and samples drawn with equal shares of the classes
    from unbalanced data (what `genlab sample RUN` does by default; `--labels data` draws the data's)."""
    p_fake = torch.tensor(samples, dtype=torch.float64)
    p_data = data_histogram.double() / data_histogram.sum()
    tv = scores.total_variation(p_fake, p_data)
    if tv <= CLASS_MIX_TV:
        return []
    gap = p_fake - p_data
    over, under = int(gap.argmax()), int(gap.argmin())

    def share(i: int) -> str:
        return f"{class_names[i]}: {p_fake[i]:.0%} of the samples, {p_data[i]:.0%} of the data"

    text = (f"the samples' mix of classes is far from the data's (class TV {tv:.2f}; {share(over)}; {share(under)}): "
            "FID and recall count the mix as well as the images")
    present = p_data > 0
    uniform = present.double() / present.sum()
    if scores.total_variation(p_fake, uniform) < 0.5 * tv:
        text += ("; the samples look drawn with equal shares of the classes and the data's are unequal: draw a "
                 "conditional genlab run's with `genlab sample RUN --labels data`, or score the run itself with "
                 "`genlab eval RUN`")
    else:
        text += "; see classes_found for classes the model does not draw"
    return [text]


def reconstruction(model: Encoder, heldout, extractor: Extractor, ref, n: int) -> dict:
    """FID of the model's reconstructions of the held-out images its real floor scores (the same
    images, so the floor is their own FID before the round trip), their PSNR in dB and, with a
    classifier, the class TV of the reconstructions: a bound on a prior's class TV over these latents
    (a first stage that turns coats into pullovers gives any prior's coats that look)."""
    idx = floor_indices(ref, n)
    images, labels = heldout.images[idx], heldout.labels[idx]
    rec = torch.cat([model.reconstruct(images[i:i + 500], labels[i:i + 500]) for i in range(0, len(images), 500)])
    feats, logits = extractor(prepare_samples(rec, extractor.image_shape, False))
    out = {"fid_reconstruction": scores.frechet_distance(ref.mu, ref.sigma, *scores.gaussian_stats(feats)),
           "psnr_reconstruction": psnr(rec, images)}
    if logits is not None and ref.label_histogram is not None:
        out["class_tv_reconstruction"] = scores.class_coverage(logits.argmax(1), ref.label_histogram)["class_tv"]
    return out


def training_scorer(data: DataConfig | Splits, n: int, seed: int, features=None, log=print,
                    class_counts: list[int] | None = None):
    """A function model -> {metric: value} for evaluation during training: `n` samples from the
    same noise each time (a conditional model's labels in the data's proportions), no PPL or floors
    (cheap enough to run every few hundred steps)."""
    splits = splits_of(data)
    extractor = open_extractor(splits, features, log)
    ref = get_reference(splits, extractor)

    def score(model) -> dict:
        labels = labels_for(model, n, proportions=class_counts)
        feats, logits = extractor(sample_from(model, n, seed=seed, labels=labels))
        values = score_features(feats, logits, ref, seed)
        out = {"features": extractor.name, **{k: values[k] for k in TRAINING_METRICS if k in values}}
        if ref.label_histogram is not None:
            out["num_classes"] = int((ref.label_histogram > 0).sum())
        return out

    return score


def conditions_for(model, n: int, data: DataConfig | Splits, seed: int, class_counts: list[int] | None):
    """What `n` samples to score are conditioned on: the data's mix of classes (a class-conditional
    model), the captions of `n` training images drawn with `seed` (a model trained on captions), or
    nothing."""
    if not getattr(model, "takes_text", False):
        return labels_for(model, n, proportions=class_counts)
    return tokenize(training_prompts(splits_of(data).train, n, seed))


def training_prompts(train, n: int, seed: int) -> list[str]:
    """The captions of `n` training images drawn with `seed`: the prompts a text model is scored on."""
    captions = train.caption_texts()
    pick = torch.randint(len(captions), (n,), generator=torch.Generator().manual_seed(seed))
    return [captions[i] for i in pick.tolist()]


def prompt_metrics(model, images: torch.Tensor, data: DataConfig | Splits, seed: int, log=print) -> dict:
    """A text model's CLIP score and R-precision (genlab.metrics.clip) for the prompts its `images`
    were drawn with (training_prompts), beside the real held-out images' own (the floor) and
    unconditional samples' (chance); where the dataset holds out combinations of parts seen in
    training (emoji), the same for samples of those captions beside their real images."""
    from genlab.metrics.clip import get_scorer, ranked_first, text_image_scores

    splits = splits_of(data)
    train = splits.train
    scorer = get_scorer(train, log=log)
    prompts = training_prompts(train, len(images), seed)
    pool = sorted(set(train.caption_texts()))
    mine = text_image_scores(scorer, images, prompts, pool, seed)
    heldout = splits.reference()[1]
    real = heldout.subset(min(len(heldout), 2000))
    floor = text_image_scores(scorer, real.images, real.caption_texts(), sorted(set(heldout.caption_texts())), seed)
    m = min(len(images), 500)
    uncond = sample_from(model, m, seed=seed + 1, labels=tokenize([""] * m))
    chance = text_image_scores(scorer, uncond, prompts[:m], pool, seed)
    out = {"clip_score": {"value": mine["clip_score"], "floor": floor["clip_score"], "better": "higher"},
           "r_precision": {"value": mine["r_precision"], "floor": floor["r_precision"], "better": "higher"},
           "r_precision_unconditional": {"value": chance["r_precision"], "floor": 1 / chance["ranked_among"],
                                         "better": "near floor (chance)"}}
    combined = splits.combinations()
    if combined is not None:  # composition: prompts whose parts were trained on, never together
        asked = combined.caption_texts()
        drawn = sample_from(model, len(asked), seed=seed + 2, labels=tokenize(asked))
        pool = sorted(set(asked))
        mine, real = (text_image_scores(scorer, x, asked, pool, seed) for x in (drawn, combined.images))
        out["clip_score_combinations"] = {"value": mine["clip_score"], "floor": real["clip_score"], "better": "higher"}
        out["r_precision_combinations"] = {"value": mine["r_precision"], "floor": real["r_precision"],
                                           "better": "higher"}
        # the harder part: ranked among the same subject's other training captions (emoji: the same
        # emoji at the other skin tones), where only the combined part tells them apart
        seen = sorted(set(train.caption_texts()))
        rivals = [[c for c in seen if c != a and ", " in a and c.startswith(a.rsplit(", ", 1)[0] + ", ")]
                  for a in asked]
        mine, real = (ranked_first(scorer, x, asked, rivals) for x in (drawn, combined.images))
        if mine["share"] is not None:
            out["r_precision_combinations_part"] = {"value": mine["share"], "floor": real["share"],
                                                    "chance": mine["chance"], "better": "higher"}
    return out


def evaluate_run(run_dir: str | Path, n: int = EvalOptions.n, seed: int = EvalOptions.seed, features=None,
                 ppl_samples: int = EvalOptions.ppl_samples, save: bool = True, log=print,
                 options: dict | None = None) -> dict:
    """Sample `n` images from a run (with the family's sampling `options`, e.g. {"sampler":
    "dpm++2m", "steps": 10}) and evaluate them (with PPL and likelihood where they apply);
    `save` keeps the result as the run's eval.json, which report, compare and serve show."""
    config, model, meta = load_run(run_dir)
    splits = Splits(config.data)  # each split read once, for every score below
    labels = conditions_for(model, n, splits, seed, meta.get("class_counts"))
    started = time.monotonic()
    images = sample_from(model, n, seed=seed, labels=labels, options=options, log=log)
    sampling = {"seconds": time.monotonic() - started, "options": sampling_options(model, options)}
    if isinstance(model, Solved):
        sampling["nfe"] = model.last_nfe
    result = evaluate(images, data=splits, features=features, seed=seed, model=model, ppl_samples=ppl_samples,
                      log=log)
    if getattr(model, "takes_text", False):  # how well the samples match their prompts
        result["metrics"].update(prompt_metrics(model, images, splits, seed, log))
    result["run"] = str(run_dir)
    result["model"] = config.model.name
    result["sampling"] = sampling
    run = Run.open(run_dir)
    human = human_scores(run.read_lines(Run.RATINGS), run.name)
    if human:
        result["human"] = human  # people's votes (genlab serve) beside the numbers
    if save:
        run.write_eval(result)
        write_card(run)
    return result


def eval_command(opts: EvalOptions, log=print) -> dict:
    """Do what `genlab eval` is asked: a run's samples (saved as its eval.json) or a samples file."""
    if opts.run is not None:
        trained_on = Run.open(opts.run).meta["image_shape"][0]
        if opts.channels != "auto" and int(opts.channels) != trained_on:
            raise GenlabError(f"--channels {opts.channels}: run {opts.run} was trained on {trained_on}-channel images "
                              "and samples them; leave out --channels (or evaluate a run trained on the channels you want)")
        given = {**parse_option_items(opts.options), **solver_options(opts.sampler, opts.sample_steps)}
        return evaluate_run(opts.run, n=opts.n, seed=opts.seed, features=opts.features,
                            ppl_samples=opts.ppl_samples, log=log, options=given)
    data = DataConfig(dataset=opts.dataset, data_dir=opts.data_dir, image_size=opts.image_size,
                      channels=opts.channels, background=opts.background, crop=opts.crop)
    train = load_dataset(with_split(data, "train"))
    images = load_samples_file(opts.samples, train.shape[0], opts.background)
    result = evaluate(images, data=Splits(data, train=train), features=opts.features, resize=opts.resize,
                      seed=opts.seed, log=log)
    return {**result, "samples": opts.samples}


def format_table(result: dict) -> str:
    """The printed table: metric, value, real floor, which way is better."""
    def fmt(v, std=None):
        if v is None:
            return "-"
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        return f"{text} ± {std:.2g}" if std else text

    rows = [("metric", "value", "real floor", "better"), ("", "", "", "")]
    for name, m in result["metrics"].items():
        rows.append((name, fmt(m["value"], m.get("std")), fmt(m["floor"]), m["better"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines[1] = "  ".join("-" * w for w in widths)
    head = (f"{result['n']} samples, dataset {result['dataset']}, features {result['features']}"
            + result.get("features_note", "")
            + f"; real floor: {result['floor_n']} held-out real images; precision/recall/density/coverage "
            f"with {result['knn_n']} real and {result['knn_n']} generated; held-out view (*_heldout): against the "
            f"{result.get('heldout_n', '?')} held-out images, its floor real training images; resizing: "
            f"{result.get('resize_filter', '-')}")
    if "fid_equal_n" in result["metrics"]:
        head += (f"; FID falls as more images are scored, so fid_equal_n scores the first {result['floor_n']} "
                 "samples, as many as its floor: compare that one with the floor")
    convention = [f"likelihood: {result['likelihood_convention']}"] if result.get("likelihood_convention") else []
    human = [f"people: {name}: {text}" for name, text in describe(result.get("human", {}))]
    return "\n".join([head, *lines, *convention, *human, *[f"warning: {w}" for w in result["warnings"]]])
