"""Serving: the BentoML HTTP service over the champion model bundle."""
