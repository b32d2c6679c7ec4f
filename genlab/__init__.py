"""genlab: train, sample, evaluate and compare image generative models.

    import genlab
    run = genlab.train(config)                 # a RunConfig -> the run folder
    genlab.resume(run, epochs=40)              # continue it with a larger budget
    model = genlab.load(run)                   # a trained model, ready to sample
    images = model.sample(16, seed=0)          # uint8 [16, C, H, W]
    genlab.evaluate_run(run)                   # scores beside the real floor, saved as RUN/eval.json
"""

from genlab.version import __version__
from genlab.errors import GenlabError  # noqa: E402
from genlab import models  # noqa: E402,F401  (registers the families, so that configs can name them)
from genlab.generate import load, load_run, sample_run as sample  # noqa: E402
from genlab.metrics.evaluate import evaluate, evaluate_run  # noqa: E402
from genlab.training.trainer import resume, train  # noqa: E402

__all__ = ["GenlabError", "__version__", "train", "resume", "load", "load_run", "sample", "evaluate", "evaluate_run"]
