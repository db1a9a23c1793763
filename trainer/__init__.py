"""Training: model registry and models, the one `run(cfg)` loop, evaluation, checkpoints."""
