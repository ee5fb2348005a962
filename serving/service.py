"""The BentoML prediction service: ETAs, delay probabilities and churn risk over HTTP.

Started by ``eddy serve``: loads the ``champion`` bundle (models and feature snapshot)
at start-up and predicts through :class:`runtime.bundle.ModelBundle`, the same code
``eddy predict`` uses, so both give a shipment the same answer. While no champion can
be loaded the service runs but is not ready: ``/readyz`` answers 503 with the reason,
the prediction APIs answer 503, and ``/status`` says why in JSON.

Single ``/eta`` requests that arrive while a prediction is running wait for it and then
go to the models together (adaptive micro-batching): each call to the feature code
and the boosters has a fixed cost of a few milliseconds, so eight concurrent requests
cost little more than one. Both ETA APIs share the private ``_predict`` helper: a
BentoML API must not call another API of the same service.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from pydantic import Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from features.pit import NAT
from serving import review
from serving.guard import GUARDS, RequestGuard
from runtime.reasons import churn_actionable, churn_words
from serving.schemas import MAX_BATCH, ChurnIn, ChurnOut, EtaOut, ShipmentIn

log = logging.getLogger("eddy.serving")


#: where `eddy bento` puts the champion in a Bento (never present in a source checkout)
PACKAGED = Path(__file__).resolve().parent / "champion"


class _State:
    """What the service loaded, shared with the plain (non-API) routes."""

    bundle = None
    version = ""
    reason = "starting"
    started_at = time.time()
    batcher = None


STATE = _State()


def load_champion() -> None:
    """Load the champion, or remember why it could not be loaded (never raise)."""
    from runtime.bundle import ModelBundle
    from runtime.registry import load_bundle

    try:
        folder = os.environ.get("EDDY_BUNDLE_DIR")
        if folder:
            bundle, version = ModelBundle.load(Path(folder)), Path(folder).name
        elif PACKAGED.is_dir():  # inside a Bento built by `eddy bento`
            bundle = ModelBundle.load(PACKAGED)
            version = json.loads((PACKAGED / "meta.json").read_text()).get("registry_version", "packaged")
        else:
            bundle, version = load_bundle()
        bundle.meta["version"] = version
        if bundle.edd is None:
            raise RuntimeError("the champion has no EDD model: " + bundle.meta.get("skipped", {}).get("edd", ""))
        STATE.bundle, STATE.version, STATE.reason = bundle, str(version), ""
        # The loaded models and snapshot live as long as the process: keep the cyclic
        # garbage collector from walking them on every full collection (tail latency).
        gc.collect()
        gc.freeze()
    except Exception as exc:  # any failure means "not ready", said plainly
        STATE.bundle, STATE.reason = None, f"no champion model loaded: {type(exc).__name__}: {exc}"
        log.error(STATE.reason)


def _models(_: Request) -> JSONResponse:
    b = STATE.bundle
    if b is None:
        return JSONResponse({"ready": False, "reason": STATE.reason}, status_code=503)
    headline = {k: v for k, v in b.meta.get("metrics", {}).items()
                if k in ("edd_mae_days", "edd_interval_coverage", "delay_roc_auc", "delay_ece", "churn_roc_auc")}
    return JSONResponse({
        "version": STATE.version,
        "trained_at": b.meta.get("trained_at"),
        "data_end": b.meta.get("data_end"),
        "models": {name: getattr(b, name) is not None for name in ("edd", "delay", "churn")},
        "skipped": b.meta.get("skipped", {}),
        "metrics": headline,
    })


def _docs(_: Request) -> HTMLResponse:
    """The API documentation (Swagger UI over ``/docs.json``) from the files BentoML ships:
    nothing from the internet, unlike BentoML's own page at ``/``."""
    return HTMLResponse((Path(__file__).resolve().parent / "templates" / "docs.html").read_text())


async def _metrics(_: Request) -> Response:
    """Prometheus text for every worker (BentoML's own route is off with its raw-path labels)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    client = BentoMLContainer.metrics_client.get()
    return Response(await run_in_threadpool(client.generate_latest), media_type=client.CONTENT_TYPE_LATEST)


def _status(_: Request) -> JSONResponse:
    ready = STATE.bundle is not None
    batcher = STATE.batcher
    batches = {"calls": batcher.calls, "shipments": batcher.items,
               "mean_size": round(batcher.items / batcher.calls, 2) if batcher.calls else None} if batcher else None
    return JSONResponse({"ready": ready, "reason": STATE.reason, "version": STATE.version,
                         "uptime_s": round(time.time() - STATE.started_at, 1), "eta_batches": batches,
                         "shed": sum(g.shed for g in GUARDS), "in_flight": sum(g.in_flight for g in GUARDS),
                         "cancelled": sum(g.cancelled for g in GUARDS)},
                        status_code=200 if ready else 503)


#: Plain routes beside BentoML's own; mounted at the root, where BentoML's passive mount
#: only takes the paths these routes match.
info_app = Starlette(routes=[Route("/models", _models), Route("/status", _status), Route("/docs", _docs),
                             Route("/metrics", _metrics), *review.ROUTES])


class ClientErrorFilter(logging.Filter):
    """Turns BentoML's traceback for a rejected request into one line without its values.

    A 4xx is the client's mistake, answered with the field and the rule; the server log
    should say which fields failed, not dump a traceback holding the request's values
    (which may include customer identifiers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = getattr(exc, "error_code", None)
        if isinstance(exc, ValidationError) or (status is not None and int(status) < 500):
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()}) if isinstance(exc, ValidationError) else []
            record.msg, record.args = "rejected request on %s: %s%s", (
                record.args[0] if record.args else "?", type(exc).__name__, f" (fields: {', '.join(fields)})" if fields else "")
            record.levelno, record.levelname, record.exc_info, record.exc_text = logging.WARNING, "WARNING", None, None
        return True


def quiet_client_errors() -> None:
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
        logger.addFilter(ClientErrorFilter())


class MicroBatcher:
    """Runs ``predict`` on every request that queued while the previous call ran.

    Under traffic it yields ``gather_s`` to the event loop before each call, so requests
    already on the wire are parsed and join (the models hold the GIL, so without the
    pause the loop reads one request per call); the batch grows with the load, up to
    ``max_size``. A lone request (the last call had one, none other waits) goes at
    once. The models run in a worker thread.
    """

    def __init__(self, predict, max_size: int = 64, gather_s: float = 0.002):
        self.predict, self.max_size, self.gather_s = predict, max_size, gather_s
        self.pending: list[tuple[object, asyncio.Future]] = []
        self.running = False
        self.calls = self.items = 0  # reported by /status: the mean batch size under load
        self.last_size = 0

    async def submit(self, item):
        future = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _predict_each(self, items: list) -> list:
        """Answers in order; if the batch fails, each item alone, so one bad request
        cannot fail the others that happened to share its batch."""
        try:
            return self.predict(items)
        except Exception as exc:  # noqa: BLE001
            if len(items) == 1:
                return [exc]
        return [self._predict_each([item])[0] for item in items]

    async def _drain(self) -> None:
        try:
            while self.pending:
                if self.last_size > 1 or len(self.pending) > 1:  # traffic: let the requests on the wire join
                    await asyncio.sleep(self.gather_s)
                else:  # a lone request goes at once; one arriving meanwhile makes the next call gather
                    await asyncio.sleep(0)
                batch, self.pending = self.pending[:self.max_size], self.pending[self.max_size:]
                self.calls, self.items, self.last_size = self.calls + 1, self.items + len(batch), len(batch)
                results = await asyncio.to_thread(self._predict_each, [item for item, _ in batch])
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_exception(result) if isinstance(result, Exception) else future.set_result(result)
        finally:
            self.running = False


#: shipments or customers per model call in a batch request: big enough that the fixed
#: cost per call stays small, small enough that a cancelled batch stops within ~0.2 s
CHUNK = 250
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_US = timedelta(microseconds=1)
SHIPMENT_TEXT = ("carrier", "service_level", "origin_region", "destination_region", "origin_postal", "destination_postal")
SHIPMENT_TIMES = ("ordered_at", "shipped_at", "promised_at")


def _us(t: datetime | None) -> int:
    return NAT if t is None else (t - EPOCH) // ONE_US


def _datetime(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def _columns(shipments: list[ShipmentIn]) -> tuple[dict, dict, dict]:
    """Contract columns of shipments, their scans and their moments, straight from the requests.

    Request ``i`` is shipment position ``i``, so scans and moments carry ``pos`` and no id
    is looked up (ids need not be unique across a batch)."""
    ship = {
        "shipment_id": np.array([s.shipment_id for s in shipments], dtype=object),
        **{c: np.array([getattr(s, c) for s in shipments], dtype=object) for c in SHIPMENT_TEXT},
        **{c: np.array([_us(getattr(s, c)) for s in shipments], dtype=np.int64) for c in SHIPMENT_TIMES},
        "delivered_at": np.full(len(shipments), NAT, dtype=np.int64),
        "weight_kg": np.array([np.nan if s.weight_kg is None else s.weight_kg for s in shipments], dtype=float),
        "value": np.array([np.nan if s.value is None else s.value for s in shipments], dtype=float),
    }
    scanned = [(i, sc) for i, s in enumerate(shipments) for sc in s.scans]
    scans = {
        "pos": np.array([i for i, _ in scanned], dtype=np.int64),
        "scanned_at": np.array([_us(sc.scanned_at) for _, sc in scanned], dtype=np.int64),
        "event": np.array([sc.event for _, sc in scanned], dtype=object),
        "region": np.array([sc.region for _, sc in scanned], dtype=object),
    }
    # Without as_of: at the order time, or just after the latest scan sent; never "now",
    # so an answer is reproducible and equals `eddy predict` for the same shipment.
    as_of = [_us(s.as_of) if s.as_of is not None else max([_us(s.ordered_at)] + [_us(sc.scanned_at) + 1_000_000 for sc in s.scans])
             for s in shipments]
    moments = {"shipment_id": ship["shipment_id"], "pos": np.arange(len(shipments)), "as_of": np.array(as_of, dtype=np.int64)}
    return ship, scans, moments


def _deliveries(requests: list[ChurnIn]) -> tuple[dict, dict, dict]:
    """Each /churn request's delivery as contract columns: an order of its own, its scans
    and its moment (without as_of: just after the delivery, or the promise if none came)."""
    ship, scans, _ = _columns([r.delivery for r in requests])
    ids = np.array([f"request-order-{i}" for i in range(len(requests))], dtype=object)
    delivered = np.array([_us(r.delivery.delivered_at) for r in requests], dtype=np.int64)
    ship.update(shipment_id=ids, order_id=ids, delivered_at=delivered,
                customer_id=np.array([r.customer_id for r in requests], dtype=object))
    scans["shipment_id"] = ids[scans.pop("pos")]
    judged = np.where(delivered != NAT, delivered, ship["promised_at"])
    as_of = np.array([_us(r.as_of) if r.as_of is not None else j + 1_000_000 for r, j in zip(requests, judged)], dtype=np.int64)
    return ship, scans, {"order_id": ids, "as_of": as_of}


def _num(v) -> float | None:
    return None if v is None or np.isnan(v) else float(v)


# Loopback unless told; BentoML's metrics off because they label by raw path (serving.metrics
# records the same series by route).
@bentoml.service(name="eddy", traffic={"timeout": 30}, http={"host": "127.0.0.1"}, metrics={"enabled": False})
@bentoml.asgi_app(info_app, path="/")
class Eddy:
    def __init__(self) -> None:
        quiet_client_errors()
        load_champion()
        self.batcher = STATE.batcher = MicroBatcher(self._predict)

    def __is_ready__(self) -> bool:
        if STATE.bundle is None:
            # BentoML answers /readyz with this exception's text: say why, not just "no".
            raise HTTPException(status_code=503, detail=f"not ready: {STATE.reason}")
        return True

    def _predict(self, shipments: list[ShipmentIn]) -> list[EtaOut]:
        bundle = STATE.bundle
        if bundle is None:
            raise ServiceUnavailable(STATE.reason)
        ship, scans, moments = _columns(shipments)
        rows = bundle.shipment_rows(ship, scans, moments)
        # One model call for the whole batch: confidence and explain are per row, and
        # only the rows that asked for reasons pay for TreeSHAP.
        out = bundle.predict_columns(rows, np.array([s.confidence for s in shipments]),
                                     np.array([s.explain for s in shipments]))
        return [self._answer(s, out, i, STATE.version) for i, s in enumerate(shipments)]

    @staticmethod
    def _answer(req: ShipmentIn, out: dict, i: int, version: str) -> EtaOut:
        late = float(out["late_probability"][i])
        eta = {k: _datetime(out[k][i]) for k in ("eta_p10", "eta_p50", "eta_p90")}
        return EtaOut(
            shipment_id=req.shipment_id, as_of=_datetime(out["as_of"][i]), **eta,
            **{f"{k}_date": v.date().isoformat() for k, v in eta.items()},
            promise_at=_datetime(out["promise_at"][i]), promise_confidence=req.confidence,
            late_probability=None if np.isnan(late) else late,
            confidence=out["confidence"][i], reasons=out["reasons"][i], model_version=version,
        )

    @bentoml.api(route="/eta")
    async def eta(self, shipment: ShipmentIn) -> EtaOut:
        """ETA quantiles, a promise date, the late probability and the top three reasons."""
        if STATE.bundle is None:
            raise ServiceUnavailable(STATE.reason)
        return await self.batcher.submit(shipment)

    def _churn(self, requests: list[ChurnIn]) -> list[ChurnOut]:
        """Every request in one pass, each scored on its own: a customer named twice gets
        two copies of its history, so one request's delivery never enters another's."""
        bundle = STATE.bundle
        if bundle is None:
            raise ServiceUnavailable(STATE.reason)
        if bundle.churn is None:
            raise ServiceUnavailable("the champion has no churn model: " + bundle.meta.get("skipped", {}).get("churn", ""))
        ship, scans, moments = _deliveries(requests)
        out = bundle.score_churn(bundle.churn_rows(ship, scans if len(scans["shipment_id"]) else None, moments),
                                 explain=any(r.explain for r in requests))
        known = bundle.snapshot.customers.index()["orders"]
        return [ChurnOut(customer_id=r.customer_id, churn_risk=float(out["churn_risk"][i]),
                         risk_percentile=round(float(out["risk_percentile"][i]), 1),
                         actionable_share=round(float(out["actionable_share"][i]), 3) if r.explain else None,
                         known_customer=r.customer_id in known, orders_so_far=int(out["orders_so_far"][i]),
                         days_late=_num(out["days_late"][i]),
                         reasons=[{"feature": x["feature"], "text": churn_words(x["feature"]), "value": x["value"],
                                   "effect_log_odds": x["effect_log_odds"], "actionable": churn_actionable(x["feature"])}
                                  for x in out["reasons"][i]] if r.explain else [],
                         model_version=STATE.version)
                for i, r in enumerate(requests)]

    @bentoml.api(route="/churn")
    def churn(self, request: ChurnIn) -> ChurnOut:
        """Churn risk after the delivery just completed; history comes from the feature snapshot."""
        return self._churn([request])[0]

    @bentoml.api(route="/churn/batch")
    async def churn_batch(self, requests: Annotated[list[ChurnIn], Field(min_length=1, max_length=MAX_BATCH)]) -> list[ChurnOut]:
        """Up to 1,000 customers, each with the delivery just completed, answered in order."""
        return await in_chunks(self._churn, requests)

    @bentoml.api(route="/eta/batch")
    async def eta_batch(self, shipments: Annotated[list[ShipmentIn], Field(min_length=1, max_length=MAX_BATCH)]) -> list[EtaOut]:
        """Up to 1,000 shipments in one call, answered in order."""
        return await in_chunks(self._predict, shipments)


async def in_chunks(work, items: list, size: int = CHUNK) -> list:
    """``work`` over ``items`` a chunk at a time in a worker thread; a cancelled request
    (client gone, time limit) stops after the chunk in hand instead of running to the end."""
    out = []
    for start in range(0, len(items), size):
        out += await asyncio.to_thread(work, items[start:start + size])
    return out


def _strict_request_schemas(service) -> None:
    """Each API's request model refuses unknown top-level keys, so the OpenAPI document
    at /docs.json says what the guard enforces (``additionalProperties: false``) and a
    client generated from it cannot send what the service refuses."""
    for api in service.apis.values():
        api.input_spec.model_config["extra"] = "forbid"
        api.input_spec.model_rebuild(force=True)


_strict_request_schemas(Eddy)
Eddy.add_asgi_middleware(RequestGuard, routes=review.ROUTES)
