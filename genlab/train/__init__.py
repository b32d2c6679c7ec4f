"""The training loop, run folders and checkpoints."""
