"""One training loop for every trainer: seeding, backgrounds, checkpoints, hooks around the step (see DESIGN.md)."""
