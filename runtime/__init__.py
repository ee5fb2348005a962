"""The prediction runtime: a trained model version loaded from disk, and what it answers.

Loading a bundle, building model rows, predicting, reasons, batch prediction, the
scoring store and reading the registry live here. ``serving/`` and the batch commands
use this package; ``training/`` (fitting, evaluation, registry writes, promotion)
builds on it too, but nothing here imports ``training/``.
"""
