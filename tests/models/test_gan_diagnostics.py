"""Each GAN failure built on purpose raises its diagnosis (and only fitting ones); a healthy run none."""

import json

import pytest
import torch

from genlab.models import nets
from genlab.models.diagnosis import WINDOW, Diagnostics, GradientWatch
from genlab.training.trainer import train
from tests.conftest import tiny_config


def diagnosed(run) -> dict[str, list[dict]]:
    path = run / "diagnostics.jsonl"
    found: dict[str, list[dict]] = {}
    for line in (path.read_text().splitlines() if path.exists() else []):
        d = json.loads(line)
        found.setdefault(d["kind"], []).append(d)
    return found


def gan_run(tmp_path, name, limit, steps, batch_size=32, **model):
    cfg = tiny_config(tmp_path / name, steps=steps, batch_size=batch_size, diagnose_every=100, log_every=100,
                      grid_every=1000)
    cfg.data.limit = limit
    for k, v in model.items():
        setattr(cfg.model, k, v)
    return diagnosed(train(cfg))


def test_a_healthy_run_raises_nothing(tmp_path):
    assert gan_run(tmp_path, "healthy", limit=2000, steps=1500) == {}


def test_a_constant_generator_is_mode_collapse(tmp_path, monkeypatch):
    def constant(self, z, labels=None):
        return torch.zeros(len(z), *self.image_shape) + 0 * self.net[0].weight.sum()

    monkeypatch.setattr(nets.MLPGenerator, "forward", constant)
    found = gan_run(tmp_path, "constant", limit=2000, steps=1200)
    assert "mode_collapse" in found
    assert set(found) <= {"mode_collapse", "d_overpowering"}  # D does beat a constant G
    sentence = found["mode_collapse"][0]["sentence"]
    assert sentence.startswith("Mode collapse: the samples differ from each other 0%") and "Try" in sentence
    assert len(found["mode_collapse"]) == 1  # said once, when it starts


def test_a_discriminator_with_a_huge_learning_rate_overpowers(tmp_path):
    found = gan_run(tmp_path, "strong-d", limit=2000, steps=1200, lr_d=0.05)
    assert "d_overpowering" in found
    # fitting consequences of an overpowering D: unstable gradients, and G collapsing under it
    assert set(found) <= {"d_overpowering", "exploding_gradients", "vanishing_gradients", "mode_collapse"}
    assert "D(G(z)) has averaged" in found["d_overpowering"][0]["sentence"]


def test_too_little_data_is_d_overfitting(tmp_path):
    found = gan_run(tmp_path, "tiny", limit=16, steps=1800, batch_size=16)
    assert set(found) == {"d_overfitting"}
    evidence = found["d_overfitting"][0]["evidence"]
    assert evidence["d_train"] > evidence["d_heldout"] and evidence["drift"] >= 0.4


def make_diagnostics():
    return Diagnostics([GradientWatch()])  # what every family is watched for


@pytest.mark.parametrize("after, kind", [(1e-3, "vanishing_gradients"), (1e3, "exploding_gradients")])
def test_gradient_norms_far_from_their_history(after, kind):
    diag = make_diagnostics()
    said = []
    for step in range(1, 600):
        norm = 1.0 if step <= 400 else after
        said += diag.observe(step, {"grad_norm_d": 2.0, "grad_norm_g": norm})
    assert [d.kind for d in said] == [kind]  # once, for G only
    assert said[0].evidence["net"] == "G" and 400 < said[0].step <= 400 + WINDOW
