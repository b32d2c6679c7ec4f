"""Loading a run and sampling from it: labels, typed sampling options, files."""

import numpy as np
import pytest
import torch

from genlab.config import default_config
from genlab.errors import GenlabError
from genlab.generate import (SampleOptions, Trained, data_mix, labels_for, load, sample_from, sampling_options,
                             save_samples)
from genlab.models import build_model
from genlab.training.trainer import train
from tests.conftest import tiny_config


def model(name="vae", conditional=False):
    cfg = default_config(name).model
    cfg.conditional = conditional
    if hasattr(cfg, "width"):
        cfg.width = 8
    return build_model(cfg, (1, 28, 28), 10)


def test_labels_are_balanced_repeated_or_refused():
    cond, plain = model(conditional=True), model()
    assert labels_for(cond, 5).tolist() == [0, 1, 2, 3, 4]
    assert labels_for(cond, 5, [7, 8]).tolist() == [7, 8, 7, 8, 7]
    assert labels_for(plain, 5) is None
    with pytest.raises(GenlabError, match="labels must be class numbers 0..9"):
        labels_for(cond, 3, [10])
    with pytest.raises(GenlabError, match="not class-conditional"):
        labels_for(plain, 3, [1])


def test_labels_data_draws_the_training_mix_or_is_refused():
    cond, plain = model(conditional=True), model()
    counts = [60, 30, 10, 0, 0, 0, 0, 0, 0, 0]  # unbalanced, as emoji's categories are
    trained = Trained(cond, None, {"class_counts": counts})
    asked = SampleOptions(run="r", out="o.npz", labels=" data")
    assert asked.wants_data_mix() and asked.wanted_labels() is None
    assert not SampleOptions(run="r", out="o.npz", labels="0,1").wants_data_mix()
    assert not SampleOptions(run="r", out="o.npz").wants_data_mix()
    labels = labels_for(cond, 20, asked.wanted_labels(), data_mix(trained, "r"))
    assert torch.bincount(labels, minlength=10).tolist() == [12, 6, 2, 0, 0, 0, 0, 0, 0, 0]
    with pytest.raises(GenlabError, match="--labels data: this model is not class-conditional"):
        data_mix(Trained(plain, None, {"class_counts": counts}), "r")
    with pytest.raises(GenlabError, match="--labels data: old-run does not record its training data's class counts"):
        data_mix(Trained(cond, None, {}), "old-run")


def test_sampling_options_are_typed_from_text_and_checked():
    vae = model()
    assert sampling_options(vae, {"temperature": "0.5"}) == {"temperature": 0.5}
    assert sampling_options(vae, {}) == {"temperature": 1.0}  # the recipe's value
    with pytest.raises(GenlabError, match="unknown sampling option 'top_k' for this model; its options: temperature"):
        sampling_options(vae, {"top_k": "3"})
    with pytest.raises(GenlabError, match="sampling option temperature takes a float, got 'warm'"):
        sampling_options(vae, {"temperature": "warm"})


def test_the_same_seed_gives_the_same_images_in_any_batching():
    vae = model()
    a = sample_from(vae, 10, seed=4, batch_size=10)
    assert torch.equal(a, sample_from(vae, 10, seed=4, batch_size=10))
    assert a.shape == (10, 1, 28, 28) and a.dtype == torch.uint8


def test_long_sampling_says_how_far_it_is_and_the_images_stay_the_same(monkeypatch):
    from genlab import generate

    vae, said = model(), []
    quiet = sample_from(vae, 5, seed=4, batch_size=2)
    assert torch.equal(quiet, sample_from(vae, 5, seed=4, batch_size=2, log=said.append)) and said == []  # fast
    monkeypatch.setattr(generate, "SAY_EVERY", 0.0)  # as if each batch took long
    assert torch.equal(quiet, sample_from(vae, 5, seed=4, batch_size=2, log=said.append))
    assert [line.split(" in ")[0] for line in said] == ["sampled 2/5 images", "sampled 4/5 images"]
    assert all(line.endswith(" s to go") for line in said)


def test_samples_as_npz_and_as_pngs(tmp_path):
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    save_samples(images, tmp_path / "s.npz", torch.tensor([1, 2, 3]))
    saved = np.load(tmp_path / "s.npz")
    assert saved["images"].shape == (3, 28, 28) and saved["labels"].tolist() == [1, 2, 3]
    save_samples(images, tmp_path / "pngs", torch.tensor([1, 2, 3]))
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["000000_label1.png", "000001_label2.png",
                                                                     "000002_label3.png"]


def test_load_gives_a_model_ready_to_sample(tmp_path):
    run = train(tiny_config(tmp_path / "r", steps=2))
    trained = load(run)
    assert trained.conditional_classes is None and trained.class_names == [str(i) for i in range(10)]
    assert torch.equal(trained.sample(3, seed=1), load(run).sample(3, seed=1))
    with pytest.raises(GenlabError, match="n must be a positive number"):
        trained.sample(0)


def test_sample_options_check_themselves():
    with pytest.raises(GenlabError, match="--n must be a positive number"):
        SampleOptions(run="r", out="o.npz", n=0).validate()
    with pytest.raises(GenlabError, match="--option takes NAME=VALUE"):
        SampleOptions(run="r", out="o.npz", options=["novalue"]).sampling_options()
