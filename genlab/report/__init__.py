"""Pictures of a run: image grids and training curves."""
