"""Evaluation: feature extractors, the real side and its floors, the metrics as pure functions of
features, model metrics (PPL, likelihood), and the orchestration behind `genlab eval`."""
