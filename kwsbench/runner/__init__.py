"""The runner: train, evaluate and sweep registered models, with tracking."""
