"""Training, evaluation, prediction, checkpoints and distributed helpers."""
