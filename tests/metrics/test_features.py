import json
import re

import pytest
import torch

from genlab.config import DataConfig
from genlab.errors import GenlabError
from genlab.metrics import features as F
from genlab.metrics import scores
from tests.conftest import SMALL_RECIPE


def test_extractor_is_named_by_dataset_and_weight_hash(small_extractor):
    assert re.fullmatch(r"mnist-sample-[0-9a-f]{8}", small_extractor.name)
    assert small_extractor.name.endswith(F.weights_hash(small_extractor.net)[:8])
    spec = json.loads((small_extractor.path / "spec.json").read_text())
    assert spec["test_accuracy"] > 0.9 and spec["recipe"]["steps"] == SMALL_RECIPE["steps"]


def test_extractor_is_trained_once_then_loaded(small_extractor, monkeypatch):
    monkeypatch.setattr(F, "train_classifier", lambda *a, **k: pytest.fail("retrained a cached extractor"))
    again = F.get_extractor(DataConfig(dataset="mnist-sample"), F.FeatureRecipe(**SMALL_RECIPE))
    assert again.name == small_extractor.name
    assert F.weights_hash(again.net) == F.weights_hash(small_extractor.net)


def test_features_and_logits(small_extractor, mnist_sample):
    feats, logits = small_extractor(mnist_sample.images[:50])
    assert feats.shape == (50, 128) and logits.shape == (50, 10)
    same, _ = small_extractor(mnist_sample.images[:50].float() / 255)  # floats in [0, 1] are the same images
    torch.testing.assert_close(feats, same)


def test_inception_score_of_real_digits(small_extractor):
    from genlab.data import load_dataset

    test = load_dataset(DataConfig(dataset="mnist-sample", split="test"))  # 100 of each digit
    _, logits = small_extractor(test.images)
    assert scores.inception_score(logits, splits=1)["mean"] > 8.0  # close to the 10 classes
    _, ones = small_extractor(test.images[test.labels == 1])
    assert scores.inception_score(ones, splits=1)["mean"] < 1.5  # a single class scores about 1


def test_load_extractor_refuses_other_folders(tmp_path):
    with pytest.raises(GenlabError, match="not a genlab feature extractor"):
        F.load_extractor(tmp_path)


def test_a_dataset_without_classes_has_no_extractor(tmp_path):
    from PIL import Image

    for i in range(4):
        Image.new("L", (28, 28), color=i * 40).save(tmp_path / f"{i}.png")
    with pytest.raises(GenlabError, match="no classes to train a feature extractor"):
        F.get_extractor(DataConfig(dataset="folder", data_dir=str(tmp_path)))
