"""Live monitoring: the prediction log joined to outcomes, drift, and the retrain advice."""
