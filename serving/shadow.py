"""The challenger in shadow: a sampled share of live requests scored again, off the answer's path.

With ``EDDY_SHADOW=challenger`` the service loads the version behind that alias beside the
champion. After the champion has answered, a share of the requests
(``EDDY_SHADOW_RATE``) goes to a queue that one background thread works through with the
challenger; its answers go to the prediction log under the alias ``challenger`` and never
to the client. When the thread falls behind, new work is dropped and counted, so the
shadow can cost the answers some CPU but never a wait.
"""

from __future__ import annotations

import logging
import queue
import threading

import numpy as np

from runtime.predlog import churn_records, eta_records
from serving.columns import columns_of, deliveries_of

log = logging.getLogger("eddy.shadow")


class Shadow:
    """Scores sampled requests with a second bundle and logs the answers under its alias."""

    def __init__(self, bundle, version: str, alias: str, rate: float, predlog, backlog: int = 64, seed: int | None = None):
        self.bundle, self.version, self.alias, self.rate, self.predlog = bundle, str(version), alias, rate, predlog
        self.rng = np.random.default_rng(seed)
        self.queue: queue.Queue = queue.Queue(maxsize=backlog)
        self.scored = self.skipped = self.failures = 0
        self.last_error: str | None = None
        self.thread = threading.Thread(target=self._run, name="eddy-shadow", daemon=True)
        self.thread.start()

    def offer(self, kind: str, requests: list, source: str) -> None:
        """Queue the sampled share of ``requests`` (never blocks; a full queue drops them)."""
        picked = [r for r, keep in zip(requests, self.rng.random(len(requests)) < self.rate) if keep]
        if not picked:
            return
        try:
            self.queue.put_nowait((kind, picked, source))
        except queue.Full:
            self.skipped += len(picked)

    def _run(self) -> None:
        while True:
            kind, requests, source = self.queue.get()
            try:
                self.predlog.put(self._eta(requests, source) if kind == "eta" else self._churn(requests, source))
                self.scored += len(requests)
            except Exception as exc:  # noqa: BLE001 - a challenger failing must not touch the champion
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.warning("shadow %s: %s", self.alias, self.last_error)

    def _eta(self, shipments: list, source: str) -> list[dict]:
        ship, scans, moments = columns_of(shipments)
        conf = np.array([s.confidence for s in shipments])
        out = self.bundle.predict_columns(self.bundle.shipment_rows(ship, scans, moments), conf, False)
        return eta_records(out, ship, source, self.alias, self.version, conf)

    def _churn(self, requests: list, source: str) -> list[dict]:
        if self.bundle.churn is None:
            return []
        ship, scans, moments = deliveries_of(requests)
        rows = self.bundle.churn_rows(ship, scans, moments)
        out = self.bundle.score_churn(rows, explain=False)
        return churn_records(out, [r.delivery.shipment_id for r in requests], source, self.alias, self.version,
                             [r.customer_id for r in requests])

    def status(self) -> dict:
        return {"alias": self.alias, "version": self.version, "rate": self.rate, "scored": self.scored,
                "skipped_busy": self.skipped, "failures": self.failures, "last_error": self.last_error,
                "backlog": self.queue.qsize()}
