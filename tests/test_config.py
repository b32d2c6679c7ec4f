from pathlib import Path

import pytest

from genlab.config import (DataConfig, TrainConfig, apply_overrides, default_config, load_config,
                           save_config)
from genlab.errors import GenlabError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_preset_parses_and_validates(path):
    load_config(path).validate()


def test_tutorial_preset_is_the_tutorial_recipe():
    cfg = load_config(Path(__file__).parents[1] / "configs" / "tutorial-gan-mnist.yaml")
    m = cfg.model
    assert (m.name, m.latent_dim, m.loss, m.lr, m.beta1, m.beta2) == (
        "gan-mlp", 100, "non-saturating", 2e-4, 0.5, 0.999)
    assert cfg.train.batch_size == 64 and cfg.data.dataset == "mnist-sample"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_overrides_defaults_and_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  epochs: 3\n  seed: 7\nmodel:\n  lr: 0.001\n"))
    assert (cfg.train.epochs, cfg.train.seed, cfg.model.lr, cfg.train.batch_size) == (3, 7, 1e-3, 64)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_saved_config_never_carries_overwrite(tmp_path):
    cfg = apply_overrides(default_config(), {"train.overwrite": True})
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").train.overwrite is False


@pytest.mark.parametrize("text, message", [
    ("train:\n  epoch: 3\n", "unknown key `epoch` \\(did you mean `epochs`\\?\\)"),
    ("trian:\n  epochs: 3\n", "unknown key `trian`"),
    ("model:\n  latent: 3\n", "unknown key `latent`"),
    ("train:\n  epochs: three\n", "`epochs` must be a int, got 'three'"),
    ("train:\n  batch_size: true\n", "`batch_size` must be a int"),
    ("train:\n  batch_size:\n", "`batch_size` cannot be empty"),
    ("model:\n  loss: wasserstein\n", "`loss` must be one of non-saturating, minimax, hinge"),
    ("model:\n  augment: rotate\n", "unknown augmentation rotate; known: translation, cutout, color"),
    ("model:\n  name: vqgan\n", "unknown model 'vqgan'; known models: gan-mlp, dcgan"),
    ("- a\n- b\n", "must be a mapping"),
    ("train: [1, 2]\n", "must be a mapping"),
    ("train:\n  epochs: [\n", "not valid YAML"),
])
def test_bad_yaml_is_named(tmp_path, text, message):
    with pytest.raises(GenlabError, match=message):
        load_config(write(tmp_path, text)).validate()


def test_missing_config_file(tmp_path):
    with pytest.raises(GenlabError, match="does not exist"):
        load_config(tmp_path / "none.yaml")


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("batch_size", -4), ("epochs", 0), ("epochs", -1), ("minutes", 0.0),
    ("minutes", -2.0), ("steps", 0), ("log_every", 0)])
def test_non_positive_budgets_and_sizes_are_refused(field, value):
    with pytest.raises(GenlabError, match=f"{field} must be positive"):
        TrainConfig(**{field: value}).validate()


def test_a_budget_is_required():
    with pytest.raises(GenlabError, match="no training budget"):
        TrainConfig(epochs=None).validate()


def test_data_options_are_checked():
    with pytest.raises(GenlabError, match="limit must be"):
        DataConfig(limit=0).validate()
    with pytest.raises(GenlabError, match="image_size must be"):
        DataConfig(image_size=0).validate()


# ---------------------------------------------------------------- the meaning the API owns

def test_a_budget_given_alone_replaces_the_default_epochs():
    assert TrainConfig().epochs == 20
    assert TrainConfig(minutes=5).epochs is None and TrainConfig(steps=100).epochs is None
    assert TrainConfig(minutes=5, epochs=3).epochs == 3
    cfg = apply_overrides(default_config(), {"train.minutes": 0.5})
    assert (cfg.train.epochs, cfg.train.steps, cfg.train.minutes) == (None, None, 0.5)
    both = apply_overrides(default_config(), {"train.minutes": 0.5, "train.epochs": 4})
    assert (both.train.epochs, both.train.minutes) == (4, 0.5)


def test_which_fields_a_resume_may_change_is_said_where_they_are_defined():
    import dataclasses

    from genlab.config import config_differences

    resumable = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resumable"]}
    assert {"epochs", "steps", "minutes", "out", "eval_every", "threads", "device"} <= resumable
    assert not {"batch_size", "seed", "precision"} & resumable
    base = default_config()
    budget = apply_overrides(base, {"train.epochs": 40, "train.log_every": 5})
    assert config_differences(base, budget) == []
    changed = apply_overrides(base, {"train.batch_size": 32, "model.lr": 1e-3})
    assert config_differences(base, changed) == ["model.lr: 0.0002 -> 0.001", "train.batch_size: 64 -> 32"]
    # how a model samples is not what its checkpoint means: a resumed run may sample otherwise
    diffusion = default_config("diffusion")
    sampling = apply_overrides(diffusion, {"model.guidance": 4.0, "model.guidance_high": 0.5, "model.sampler": "ddpm",
                                           "model.sample_steps": 20, "model.eta": 1.0})
    assert config_differences(diffusion, sampling) == []
    assert config_differences(diffusion, apply_overrides(diffusion, {"model.width": 16})) == ["model.width: 32 -> 16"]
    for family in ("transformer", "latent-transformer", "vae"):
        assert config_differences(default_config(family), apply_overrides(default_config(family),
                                                                          {"model.temperature": 0.7})) == []


def test_each_command_takes_its_defaults_from_the_function_it_calls():
    import inspect

    from genlab.config import command_parser
    from genlab.generate import SampleOptions, sample_from
    from genlab.metrics.evaluate import EvalOptions, evaluate_run
    from genlab.report.html import CompareOptions, compare_runs

    assert inspect.signature(evaluate_run).parameters["n"].default == EvalOptions.n == 10_000
    assert inspect.signature(evaluate_run).parameters["ppl_samples"].default == EvalOptions.ppl_samples
    assert inspect.signature(sample_from).parameters["batch_size"].default == SampleOptions.batch_size
    assert inspect.signature(compare_runs).parameters["samples"].default == CompareOptions.samples
    parsed = command_parser("genlab eval", EvalOptions, "").parse_args(["runs/a"])
    assert vars(parsed)["args.n"] == 10_000 and vars(parsed)["args.run"] == "runs/a"
