"""Eddy with its features and models replaced by one canned answer: what the service's
own HTTP side (the guard, metrics, micro-batcher, answer, prediction log) costs beside
the floor. ``serve_latency.py --canned`` serves it in place of Eddy; never for traffic.

Every /eta gets the answer computed for the first single request (answers are built,
logged and serialized as usual); /churn is Eddy's own.
"""

from __future__ import annotations

import numpy as np

from serving import service

_load = service.load_champion


class _Canned:
    """The loaded bundle, except that rows are not built and every prediction is the first."""

    def __init__(self, bundle):
        self._bundle, self._out = bundle, None

    def __getattr__(self, name):
        return getattr(self._bundle, name)

    def shipment_rows(self, ship, scans, moments):
        return (ship, scans, moments) if self._out is None else None

    def predict_columns(self, rows, confidence, explain):
        if self._out is None:
            self._out = self._bundle.predict_columns(self._bundle.shipment_rows(*rows), confidence, explain)
        first = np.zeros(len(confidence), dtype=int)  # the first answer for each shipment of a batch
        return {k: [v[0]] * len(first) if isinstance(v, list) else v[first] for k, v in self._out.items()}


def _load_canned() -> None:
    _load()
    if service.STATE.bundle is not None:
        service.STATE.bundle = _Canned(service.STATE.bundle)


service.load_champion = _load_canned
Eddy = service.Eddy
