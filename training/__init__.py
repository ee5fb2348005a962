"""Models: rows and labels, the three LightGBM models, baselines, evaluation, tracking."""
