"""The floor every other layer stands on: where and how a step runs (runtime, distributed), how
state is saved (checkpoint), how images are written (images), and the run folder (run)."""
