"""Prometheus metrics for the service, with a label set that cannot grow without bound.

BentoML's own HTTP metrics label each series with the raw request path, so every
distinct 404 (a scanner trying random URLs) adds a histogram for good: 1,000 random
paths grew ``/metrics`` from 196 KB to 4.2 MB and the multiprocess files with it. The
service turns those off and records the same series here (same names, so dashboards
keep working), labelled by *route*: an API path, a review page's template
(``/review/customer/{key}``), a static folder, or ``other``.

Also here: the requests the guard shed (503) and the requests whose work was cancelled
because the client went away or the time limit passed; the prediction log's writes,
drops and failed writes; and gauges of the latest live figures ``eddy monitor`` stored
(coverage, MAE, delay AUC, the largest feature drift), so an existing Grafana can alert.
"""

from __future__ import annotations

from functools import lru_cache

from starlette.routing import Mount, Route

#: every path the service answers by itself (besides the review routes, read from there)
FIXED = frozenset({"/", "/eta", "/eta/batch", "/churn", "/churn/batch", "/status", "/models", "/docs",
                   "/docs.json", "/metrics", "/healthz", "/livez", "/readyz"})
#: the Swagger UI files BentoML ships, which /docs loads
STATIC = "/static_content"
NAMESPACE = "bentoml_service"


def route_label(path: str, routes=()) -> str:
    """The label for ``path``: itself if the service answers it, its route template if a
    route with parameters does, else ``other``."""
    if path in FIXED:
        return path
    for route in routes:
        if isinstance(route, (Route, Mount)) and route.path_regex.match(path):
            return route.path or "/"
    if path.startswith(STATIC + "/"):
        return STATIC
    return "other"


class Metrics:
    """The series, made on first use (the Prometheus client reads its multiprocess folder
    then, not at import)."""

    def __init__(self):
        from bentoml._internal.configuration.containers import BentoMLContainer

        client = BentoMLContainer.metrics_client.get()
        labels = ["endpoint", "service_name", "service_version", "http_response_code"]
        self.duration = client.Histogram(namespace=NAMESPACE, name="request_duration_seconds",
                                         documentation="API HTTP request duration in seconds, by route",
                                         labelnames=labels, buckets=BentoMLContainer.duration_buckets.get())
        self.total = client.Counter(namespace=NAMESPACE, name="request_total",
                                    documentation="Total number of HTTP requests, by route", labelnames=labels)
        self.shed = client.Counter(namespace="eddy", name="requests_shed",
                                   documentation="Prediction requests answered 503 at capacity", labelnames=["endpoint"])
        self.cancelled = client.Counter(namespace="eddy", name="requests_cancelled",
                                        documentation="Prediction requests whose work stopped because the client "
                                                      "went away or the time limit passed", labelnames=["endpoint"])

        self.log_written = client.Counter(namespace="eddy", name="prediction_log_written",
                                          documentation="Answers written to the prediction log")
        self.log_dropped = client.Counter(namespace="eddy", name="prediction_log_dropped",
                                          documentation="Answers dropped from the prediction log's queue "
                                                        "(the database slow, away or full)")
        self.log_failures = client.Counter(namespace="eddy", name="prediction_log_write_failures",
                                           documentation="Failed attempts to write the prediction log")
        # The same figures in every worker (read from the database): any sample will do.
        self.live = client.Gauge(namespace="eddy", name="live_figure", labelnames=["alias", "metric"],
                                 documentation="Latest live figure from eddy monitor over its last two weeks "
                                               "(coverage_80, edd_mae_days, delay_auc, churn_auc)",
                                 multiprocess_mode="mostrecent")
        self.drift = client.Gauge(namespace="eddy", name="drift_psi_max", labelnames=["alias", "model"],
                                  documentation="Largest population stability index of a feature, live "
                                                "requests against the training data, from eddy monitor",
                                  multiprocess_mode="mostrecent")

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        total, duration = self._series(endpoint, status)
        total.inc()
        duration.observe(seconds)

    def refused(self, endpoint: str, seconds: float) -> None:
        self._shed(endpoint).inc()
        self.observe(endpoint, 503, seconds)

    @lru_cache(maxsize=64)
    def _shed(self, endpoint: str):
        return self.shed.labels(endpoint=endpoint)

    @lru_cache(maxsize=4096)  # routes x statuses: bounded; labels() costs as much as a refusal
    def _series(self, endpoint: str, status: int):
        from bentoml._internal.context import server_context

        labels = dict(endpoint=endpoint, service_name=server_context.bento_name or "eddy",
                      service_version=server_context.bento_version or "", http_response_code=str(status))
        return self.total.labels(**labels), self.duration.labels(**labels)


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    return Metrics()
