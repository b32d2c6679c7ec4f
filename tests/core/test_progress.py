"""The trainings genlab caches keep their progress when interrupted and go on to the same bits."""

import signal

import pytest
import torch

from genlab.core.progress import KeptProgress, kept_seconds
from genlab.data import ImageSet
from genlab.metrics.contrastive import ContrastiveRecipe, train_contrastive
from genlab.metrics.features import FeatureRecipe, train_classifier

TRAININGS = {  # name: (train(data, log, progress), its tiny recipe's steps)
    "self-supervised extractor": (lambda data, **k: train_contrastive(data, ContrastiveRecipe(
        steps=12, batch_size=16, width=16, feature_dim=32, projection_dim=16), **k), 12),
    "feature extractor": (lambda data, **k: train_classifier(data, FeatureRecipe(
        steps=12, batch_size=16, width=16, feature_dim=32), **k), 12),
}


@pytest.fixture(autouse=True)
def _terminal(ctrl_c_raises):
    pass


@pytest.fixture(scope="module")
def shapes():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), generator=gen, dtype=torch.uint8)
    return ImageSet(images, torch.arange(64) % 4, "noise", [str(i) for i in range(4)])


def interrupt_at(monkeypatch, at: int, how=lambda: signal.raise_signal(signal.SIGINT)) -> None:
    """Make `how` happen during step `at` of every cached training (by default Ctrl-C)."""
    after = KeptProgress.after

    def patched(self, step, losses):
        if step == at:
            how()
        return after(self, step, losses)

    monkeypatch.setattr(KeptProgress, "after", patched)


@pytest.mark.parametrize("what", sorted(TRAININGS))
def test_an_interrupted_training_goes_on_to_the_same_bits(what, shapes, tmp_path, monkeypatch):
    train, steps = TRAININGS[what]
    whole = train(shapes, log=lambda *_: None)
    progress = tmp_path / "unfinished" / "x.safetensors"
    interrupt_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt, match=f"the {what} stopped at step 5/{steps}; its progress is kept"):
        train(shapes, log=lambda *_: None, progress=progress)
    assert progress.is_file() and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert kept_seconds(progress) > 0 and kept_seconds(tmp_path / "none") == 0  # counted in the spec's seconds
    monkeypatch.undo()
    said = []
    resumed = train(shapes, log=said.append, progress=progress)
    assert any(f"continuing the {what} from step 5/{steps}" in line for line in said)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


def test_a_damaged_progress_file_is_set_aside_and_training_starts_over(shapes, tmp_path):
    train, _ = TRAININGS["feature extractor"]
    whole = train(shapes, log=lambda *_: None)
    progress = tmp_path / "x.safetensors"
    progress.write_bytes(b"not a state")
    assert kept_seconds(progress) == 0
    said = []
    again = train(shapes, log=said.append, progress=progress)
    assert any("cannot be read" in line and "from the start" in line for line in said)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), again.state_dict().values()))


def test_without_a_file_nothing_is_kept_and_ctrl_c_is_ctrl_c(shapes, monkeypatch):
    train, _ = TRAININGS["feature extractor"]
    interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt) as caught:
        train(shapes, log=lambda *_: None)
    assert "progress is kept" not in str(caught.value)


def test_a_progress_that_cannot_be_written_does_not_end_the_training(tmp_path):
    (tmp_path / "file").write_text("a file where the folder would be")
    net, said = torch.nn.Linear(2, 2), []
    kept = KeptProgress("toy", 3, tmp_path / "file" / "x.safetensors", {"net": net}, torch.Generator(), said.append,
                        save_every=0.0)
    with kept:
        for step in kept.steps():
            kept.after(step, {"loss": 1.0})
    assert sum("could not keep the toy's progress" in line for line in said) == 3 and kept.last == {"loss": 1.0}
