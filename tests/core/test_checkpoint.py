import pickle

import pytest
import torch

from genlab.errors import GenlabError
from genlab.core.checkpoint import decode_tree, encode_tree, load_state, save_state, state_to_bytes
from tests.models.test_gan import tutorial_gan


def test_a_family_state_round_trips_bit_for_bit(tmp_path, mnist_sample):
    gan = tutorial_gan()
    gan.train_step(mnist_sample.images[:16], None)
    state = gan.state_dict()
    save_state(tmp_path / "s.safetensors", state, {"step": "1"})
    back, meta = load_state(tmp_path / "s.safetensors")
    assert meta["step"] == "1"
    assert back["opt_G"]["param_groups"][0]["betas"] == (0.5, 0.999)
    assert set(back["opt_D"]["state"]) == set(state["opt_D"]["state"])  # int keys stay ints
    for net in ("G", "D"):
        assert all(torch.equal(state[net][k], back[net][k]) for k in state[net])
    fresh = tutorial_gan(seed=5)
    fresh.load_state_dict(back)
    assert torch.equal(fresh.opt_D.state_dict()["state"][0]["exp_avg"], state["opt_D"]["state"][0]["exp_avg"])


def test_tree_codec_keeps_types():
    tree = {"a": [1, 2.5, None, True, "s"], 3: (torch.ones(2), {"x": torch.zeros(())})}
    tensors = {}
    back = decode_tree(encode_tree(tree, tensors), tensors)
    assert back["a"] == [1, 2.5, None, True, "s"] and isinstance(back[3], tuple)
    assert torch.equal(back[3][0], torch.ones(2)) and back[3][1]["x"].shape == ()


def test_no_temporary_files_are_left_behind(tmp_path):
    save_state(tmp_path / "s.safetensors", {"w": torch.ones(3)})
    save_state(tmp_path / "s.safetensors", {"w": torch.zeros(3)})
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]
    assert torch.equal(load_state(tmp_path / "s.safetensors")[0]["w"], torch.zeros(3))


class Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_a_pickle_is_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Exploit()))
    torch.save({"w": torch.ones(2)}, tmp_path / "torch.safetensors")
    for name in ("evil.safetensors", "torch.safetensors"):
        with pytest.raises(GenlabError, match="not a genlab checkpoint"):
            load_state(tmp_path / name)
    assert not (tmp_path / "PWNED").exists()


def test_a_plain_safetensors_file_is_not_ours(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(GenlabError, match="no genlab-state/1 marker"):
        load_state(tmp_path / "plain.safetensors")


def test_truncation_at_every_byte_is_refused_cleanly(tmp_path):
    data = state_to_bytes({"w": torch.arange(6.0), "opt": {"state": {0: {"step": torch.tensor(3.0)}}}})
    path = tmp_path / "t.safetensors"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(GenlabError):
            load_state(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(GenlabError, match="does not exist"):
        load_state(tmp_path / "none.safetensors")
