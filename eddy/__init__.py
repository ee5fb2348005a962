"""Eddy: delivery-date, delay and post-delivery churn predictions for e-commerce."""

__version__ = "0.1.0"
