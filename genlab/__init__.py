"""genlab: train, sample, evaluate and compare image generative models."""

__version__ = "0.1.0"

from genlab.errors import GenlabError  # noqa: E402

__all__ = ["GenlabError", "__version__", "train", "sample", "load_run", "evaluate"]


def train(config):
    """Train a model from a `RunConfig`; returns the run folder (see genlab.train.loop.train)."""
    from genlab.train.loop import train as _train

    return _train(config)


def sample(run_dir, n, seed=0, labels=None):
    """Draw `n` uint8 images [n, C, H, W] from a finished run (see genlab.generate.sample_run)."""
    from genlab.generate import sample_run

    return sample_run(run_dir, n, seed=seed, labels=labels)


def load_run(run_dir):
    """Load a run's config and model (see genlab.generate.load_run)."""
    from genlab.generate import load_run as _load_run

    return _load_run(run_dir)


def evaluate(images, dataset="mnist-sample", **options):
    """Score samples against a dataset; returns {"metrics": {name: {value, floor, better}}, ...}
    (see genlab.metrics.evaluate.evaluate for the options)."""
    from genlab.metrics.evaluate import evaluate as _evaluate

    return _evaluate(images, dataset=dataset, **options)
