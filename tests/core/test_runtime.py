"""The runtime: the one fused finiteness check, devices, and every random generator captured for an
exact resume."""

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from genlab.core.runtime import NonFiniteError, Runtime, capture_rng, resolve_device, restore_rng, seed_everything
from genlab.errors import GenlabError


def net_with_grads(scale=1.0):
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    loss = (net(torch.randn(5, 4)) * scale).square().mean()
    loss.backward()
    return net, loss


def test_the_fused_check_returns_the_gradient_norm():
    net, loss = net_with_grads()
    expected = math.sqrt(sum(float(p.grad.square().sum()) for p in net.parameters()))
    assert Runtime().finish_grads("net", net, None, loss) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("poison, message", [
    ("loss", "loss of net is nan"),
    ("grad", "gradient of net is inf"),
])
def test_a_non_finite_loss_or_gradient_is_named(poison, message):
    net, loss = net_with_grads()
    if poison == "loss":
        loss = loss * float("nan")
    else:
        net.weight.grad[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=message):
        Runtime().finish_grads("net", net, None, loss)


def test_a_net_without_gradients_still_checks_its_loss():
    net = nn.Linear(2, 2)
    assert Runtime().finish_grads("net", net, None, torch.tensor(1.0)) == 0.0
    with pytest.raises(NonFiniteError, match="loss of net"):
        Runtime().finish_grads("net", net, None, torch.tensor(float("inf")))


def test_every_random_generator_is_captured_and_restored():
    seed_everything(3)
    state = capture_rng()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(99)
    restore_rng(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def test_devices_and_precisions():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(GenlabError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
        with pytest.raises(GenlabError, match="fp16 needs a CUDA GPU"):
            Runtime.create(torch.device("cpu"), "fp16")
    with pytest.raises(GenlabError, match="precision must be one of"):
        Runtime.create(torch.device("cpu"), "fp8")
    assert Runtime.create(torch.device("cpu"), "bf16").autocast() is not None


def test_a_rank_takes_its_share_of_the_global_batch():
    x = torch.arange(8)
    assert torch.equal(Runtime(rank=1, world_size=2).shard(x), torch.tensor([4, 5, 6, 7]))
    assert Runtime(rank=1, world_size=2).global_batch(4) == 8
    assert torch.equal(Runtime().shard(x), x)
