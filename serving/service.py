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
import functools
import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from pydantic import Field, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from eddy import settings
from runtime.predlog import NoLog, churn_records, eta_records, open_log
from serving import review
from serving.guard import COUNTS, RequestGuard, Shedder
from runtime.reasons import churn_actionable, churn_words
from serving.columns import columns_of, datetime_of, deliveries_of
from serving.schemas import MAX_BATCH, ChurnIn, ChurnOut, EtaOut, Reason, ShipmentIn

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
    predlog = NoLog()
    shadow = None
    shadow_reason = ""


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
        STATE.predlog.note_model(STATE.version, bundle.meta)
        # The loaded models and snapshot live as long as the process: keep the cyclic
        # garbage collector from walking them on every full collection (tail latency).
        gc.collect()
        gc.freeze()
    except Exception as exc:  # any failure means "not ready", said plainly
        STATE.bundle, STATE.reason = None, f"no champion model loaded: {type(exc).__name__}: {exc}"
        log.error(STATE.reason)


def load_shadow() -> None:
    """With ``EDDY_SHADOW`` set, the version behind that alias scores a share of requests
    in the background (``serving.shadow``); if it cannot be loaded the service still
    answers, and ``/status`` says why the shadow is off."""
    alias = settings.shadow_alias()
    if not alias or STATE.bundle is None:
        return
    from runtime.registry import load_bundle
    from serving.shadow import Shadow

    try:
        bundle, version = load_bundle(alias)
        STATE.predlog.note_model(str(version), bundle.meta)
        STATE.shadow = Shadow(bundle, str(version), alias, settings.shadow_rate(), STATE.predlog)
        STATE.shadow_reason = ""
    except Exception as exc:  # noqa: BLE001 - the shadow is optional; the champion answers regardless
        STATE.shadow, STATE.shadow_reason = None, f"shadow {alias!r} off: {type(exc).__name__}: {exc}"
        log.error(STATE.shadow_reason)


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

    from serving.metrics import metrics
    from serving.monitor_page import refresh_gauges

    client = BentoMLContainer.metrics_client.get()
    await run_in_threadpool(refresh_gauges, metrics())
    return Response(await run_in_threadpool(client.generate_latest), media_type=client.CONTENT_TYPE_LATEST)


def _status(_: Request) -> JSONResponse:
    ready = STATE.bundle is not None
    batcher = STATE.batcher
    batches = {"calls": batcher.calls, "shipments": batcher.items,
               "mean_size": round(batcher.items / batcher.calls, 2) if batcher.calls else None} if batcher else None
    return JSONResponse({"ready": ready, "reason": STATE.reason, "version": STATE.version,
                         "uptime_s": round(time.time() - STATE.started_at, 1), "eta_batches": batches,
                         "shed": COUNTS.shed, "in_flight": COUNTS.in_flight, "cancelled": COUNTS.cancelled,
                         "prediction_log": STATE.predlog.status(),
                         "shadow": STATE.shadow.status() if STATE.shadow else (
                             {"off": STATE.shadow_reason} if STATE.shadow_reason else None)},
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
    once.

    A call of up to ``inline_max`` requests (a few to some tens of milliseconds) runs on
    the event loop; a bigger one in a worker thread. In a thread the model work and the
    loop hand the GIL back and forth on every call into numpy or LightGBM, and each
    hand-over can wait out the loop's turn: measured on 2 cores, 8 clients got 168
    answers a second that way against 250 on the loop, and one client beside a browser
    on the review pages waited 1.9x its time alone against 1.3x (README, Serving).
    """

    def __init__(self, predict, max_size: int = 64, gather_s: float = 0.002, inline_max: int = 32):
        self.predict, self.max_size, self.gather_s, self.inline_max = predict, max_size, gather_s, inline_max
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
                items = [item for item, _ in batch]
                results = (self._predict_each(items) if len(items) <= self.inline_max
                           else await asyncio.to_thread(self._predict_each, items))
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_exception(result) if isinstance(result, Exception) else future.set_result(result)
        finally:
            self.running = False


#: shipments or customers per model call in a batch request: big enough that the fixed
#: cost per call stays small, small enough that a cancelled batch stops within ~0.2 s
CHUNK = 250
#: the same for shipments none of which asks for reasons (a fifth of the cost per row):
#: 1,000 of them in one call took 53 ms against 68 ms in four
PLAIN_CHUNK = 1000


class _Fronted(bentoml.Service):
    """BentoML's service with the load shedder in front of BentoML's own layers (its
    middlewares option would put it behind tracing, the access log and the time limit)."""

    def to_asgi(self, is_main: bool = True):
        return Shedder(super().to_asgi(is_main))


# Loopback unless told; BentoML's metrics off because they label by raw path (serving.metrics
# records the same series by route).
@bentoml.service(name="eddy", traffic={"timeout": 30}, http={"host": "127.0.0.1"}, metrics={"enabled": False},
                 service_class=_Fronted)
@bentoml.asgi_app(info_app, path="/")
class Eddy:
    def __init__(self) -> None:
        quiet_client_errors()
        STATE.predlog = open_log()
        _count_log_events(STATE.predlog)
        load_champion()
        load_shadow()
        self.batcher = STATE.batcher = MicroBatcher(functools.partial(self._predict, source="/eta"))

    def __is_ready__(self) -> bool:
        if STATE.bundle is None:
            # BentoML answers /readyz with this exception's text: say why, not just "no".
            raise HTTPException(status_code=503, detail=f"not ready: {STATE.reason}")
        return True

    def _predict(self, shipments: list[ShipmentIn], source: str) -> list[EtaOut]:
        bundle = STATE.bundle
        if bundle is None:
            raise ServiceUnavailable(STATE.reason)
        ship, scans, moments = columns_of(shipments)
        rows = bundle.shipment_rows(ship, scans, moments)
        # One model call for the whole batch: confidence and explain are per row, and
        # only the rows that asked for reasons pay for TreeSHAP.
        out = bundle.predict_columns(rows, np.array([s.confidence for s in shipments]),
                                     np.array([s.explain for s in shipments]))
        answers = [self._answer(s, out, i, STATE.version) for i, s in enumerate(shipments)]
        _record(lambda: eta_records(out, ship, source, "champion", STATE.version, [s.confidence for s in shipments]))
        if STATE.shadow is not None:
            STATE.shadow.offer("eta", shipments, source)
        return answers

    @staticmethod
    def _answer(req: ShipmentIn, out: dict, i: int, version: str) -> EtaOut:
        """Request ``i``'s answer from the model columns ``out``. Built without validating
        it again (``model_construct``: 20 us an answer, a fifth of a 1,000-shipment batch):
        every value is the runtime's own, of the schema's types; a test holds the JSON
        equal to validated answers'."""
        late = float(out["late_probability"][i])
        lost = bool(out["likely_lost"][i])
        eta = {k: None if lost else datetime_of(out[k][i]) for k in ("eta_p10", "eta_p50", "eta_p90")}
        return EtaOut.model_construct(
            shipment_id=req.shipment_id, as_of=datetime_of(out["as_of"][i]), **eta,
            **{f"{k}_date": None if v is None else v.date().isoformat() for k, v in eta.items()},
            promise_at=None if lost else datetime_of(out["promise_at"][i]), promise_confidence=req.confidence,
            late_probability=None if np.isnan(late) else late, likely_lost=lost,
            confidence=str(out["confidence"][i]), unseen=[f for f in out["unseen"][i].split(",") if f],
            reasons=[Reason.model_construct(**r) for r in out["reasons"][i]], model_version=version,
        )

    @bentoml.api(route="/eta")
    async def eta(self, shipment: ShipmentIn) -> EtaOut:
        """ETA quantiles, a promise date, the late probability and the top three reasons."""
        if STATE.bundle is None:
            raise ServiceUnavailable(STATE.reason)
        return await self.batcher.submit(shipment)

    def _churn(self, requests: list[ChurnIn], source: str) -> list[ChurnOut]:
        """Every request in one pass, each scored on its own: a customer named twice gets
        two copies of its history, so one request's delivery never enters another's."""
        bundle = STATE.bundle
        if bundle is None:
            raise ServiceUnavailable(STATE.reason)
        if bundle.churn is None:
            raise ServiceUnavailable("the champion has no churn model: " + bundle.meta.get("skipped", {}).get("churn", ""))
        from runtime.bundle import shown_number  # with the bundle: the service module stays light to import

        ship, scans, moments = deliveries_of(requests)
        out = bundle.score_churn(bundle.churn_rows(ship, scans, moments), explain=any(r.explain for r in requests))
        known = bundle.snapshot.customers.index()["orders"]
        _record(lambda: churn_records(out, [r.delivery.shipment_id for r in requests], source, "champion", STATE.version,
                                      [r.customer_id for r in requests]))
        if STATE.shadow is not None:
            STATE.shadow.offer("churn", requests, source)
        return [ChurnOut(customer_id=r.customer_id, as_of=datetime_of(moments["as_of"][i]),
                         churn_risk=float(out["churn_risk"][i]),
                         risk_percentile=round(float(out["risk_percentile"][i]), 1),
                         actionable_share=round(float(out["actionable_share"][i]), 3) if r.explain else None,
                         known_customer=r.customer_id in known, orders_so_far=int(out["orders_so_far"][i]),
                         days_late=shown_number(out["days_late"][i]),
                         reasons=[{"feature": x["feature"], "text": churn_words(x["feature"]), "value": x["value"],
                                   "effect_log_odds": x["effect_log_odds"], "actionable": churn_actionable(x["feature"])}
                                  for x in out["reasons"][i]] if r.explain else [],
                         model_version=STATE.version)
                for i, r in enumerate(requests)]

    @bentoml.api(route="/churn")
    def churn(self, request: ChurnIn) -> ChurnOut:
        """Churn risk after the delivery just completed; history comes from the feature snapshot."""
        return self._churn([request], "/churn")[0]

    @bentoml.api(route="/churn/batch")
    async def churn_batch(self, requests: Annotated[list[ChurnIn], Field(min_length=1, max_length=MAX_BATCH)]) -> list[ChurnOut]:
        """Up to 1,000 customers, each with the delivery just completed, answered in order."""
        return _json_list(CHURN_LIST, await in_chunks(functools.partial(self._churn, source="/churn/batch"), requests))

    @bentoml.api(route="/eta/batch")
    async def eta_batch(self, shipments: Annotated[list[ShipmentIn], Field(min_length=1, max_length=MAX_BATCH)]) -> list[EtaOut]:
        """Up to 1,000 shipments in one call, answered in order."""
        size = CHUNK if any(s.explain for s in shipments) else PLAIN_CHUNK
        return _json_list(ETA_LIST, await in_chunks(functools.partial(self._predict, source="/eta/batch"), shipments, size))


#: a batch's answers written by pydantic's serializer in one pass; BentoML writes a list
#: through ``model_dump`` and ``json.dumps``, three times slower (9-11 ms of the 1,000
#: shipments' answers, 16-30 ms with reasons). The APIs keep their annotations for the
#: OpenAPI document; BentoML sends a returned ``Response`` as it is.
ETA_LIST, CHURN_LIST = TypeAdapter(list[EtaOut]), TypeAdapter(list[ChurnOut])


def _json_list(adapter: TypeAdapter, answers: list) -> Response:
    return Response(adapter.dump_json(answers), media_type="application/json")


def _record(entries) -> None:
    """Hand the answers to the prediction log; whatever goes wrong, the answer goes out.
    ``entries`` makes the records only when they are kept (not with the log turned off)."""
    if isinstance(STATE.predlog, NoLog):
        return
    try:
        STATE.predlog.put(entries())
    except Exception as exc:  # noqa: BLE001 - logging must never fail an answer
        log.warning("prediction log: answers not recorded: %s", type(exc).__name__)


def _count_log_events(predlog) -> None:
    """Mirror the log's drops, writes and failures into Prometheus counters."""
    from serving.metrics import metrics

    if isinstance(predlog, NoLog):
        return
    m = metrics()
    predlog.on_dropped = m.log_dropped.inc
    predlog.on_written = m.log_written.inc
    predlog.on_failure = m.log_failures.inc


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
