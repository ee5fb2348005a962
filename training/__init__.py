"""Training: labels and time splits, fitting and calibrating the three models, baselines,
evaluation, tuning, MLflow runs, registry writes and promotion. Builds on ``runtime``."""
