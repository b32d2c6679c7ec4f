"""A stand-in family with a few hundred parameters, registered only in tests: a per-pixel Gaussian
(a mean and a log standard deviation for every pixel) fitted by SGD on its negative log-likelihood.

It follows the Family protocol and nothing more, so a test that passes with it shows that the
Trainer, checkpoints, exact resume, `genlab sample` and `genlab serve` need nothing a real family
does beyond the protocol. Each step also draws from the global random stream (a random pixel mask),
so an exact resume must restore that stream too.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from genlab.config import option
from genlab.core.runtime import Runtime
from genlab.models import common, register_model, unregister_model


@dataclass
class ToyConfig:
    """The stand-in's recipe."""

    name: str = option("toy", "model family", flag="--model")
    lr: float = option(0.05, "SGD learning rate")
    conditional: bool = option(False, "one mean image per class")

    def validate(self) -> None: ...


@dataclass
class ToySampling:
    scale: float = option(1.0, "multiply the noise by this (0: the mean image)")


class ToyNet(nn.Module):
    def __init__(self, image_shape, classes: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(classes, *image_shape))
        self.log_std = nn.Parameter(torch.zeros(classes, *image_shape))


class Toy:
    SamplingOptions = ToySampling

    def __init__(self, config: ToyConfig, image_shape, num_classes: int, runtime: Runtime | None = None):
        self.config, self.rt = config, runtime or Runtime()
        self.image_shape = tuple(image_shape)
        self.conditional_classes = common.conditional_classes(config.conditional, num_classes)
        self.net = ToyNet(self.image_shape, self.conditional_classes or 1).to(self.rt.device)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=config.lr)
        self.steps = 0

    def _row(self, labels, n):
        if not self.conditional_classes:
            return torch.zeros(n, dtype=torch.int64, device=self.rt.device)
        return common.check_labels(labels, n, self.conditional_classes, self.rt.device)

    def train_step(self, images, labels):
        x = common.to_unit(images)
        mask = (torch.rand(x.shape, device=x.device) < 0.9).float()  # the global random stream
        rows = self._row(labels, len(x))
        mean, log_std = self.net.mean[rows], self.net.log_std[rows]
        nll = (0.5 * ((x - mean) / log_std.exp()).square() + log_std) * mask
        loss = nll.sum() / mask.sum()
        self.opt.zero_grad(set_to_none=True)
        self.rt.backward(loss)
        grad = self.rt.finish_grads("toy", self.net, self.opt, loss)
        self.rt.step(self.opt)
        self.steps += 1
        return {"loss": loss.item(), "grad_norm": grad}

    def sampling_defaults(self) -> ToySampling:
        return ToySampling()

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None, **options):
        scale = common.sampling_options(self.sampling_defaults(), options).scale
        noise = torch.randn(n, *self.image_shape, generator=generator).to(self.rt.device)
        rows = self._row(labels, n)
        return common.to_uint8(self.net.mean[rows] + scale * self.net.log_std[rows].exp() * noise).cpu()

    def nets(self):
        return {"net": self.net}

    def state_dict(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "steps": torch.tensor(self.steps)}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.steps = int(state["steps"])


@contextmanager
def toy_registered():
    """The stand-in in the model registry for the duration of a block."""
    register_model("toy", Toy, ToyConfig, "a per-pixel Gaussian stand-in (tests only)")
    try:
        yield
    finally:
        unregister_model("toy")
