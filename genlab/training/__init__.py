"""Training: the Trainer (the loop in plain view, setup, resume, saving the results) and its
callbacks (logging and progress, grids, evaluation and the best checkpoint, diagnostics, budgets,
signals, checkpoints).

The package is `training`, not `train`, so that the public function `genlab.train` is never
shadowed by a subpackage of the same name."""
