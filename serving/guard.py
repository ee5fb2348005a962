"""The service's front door: what every request passes before any model work.

An ASGI middleware, so it holds for every route whatever framework answers it:

* **Strict bodies** on the prediction APIs: ``Content-Type: application/json`` (else 415),
  at most ``EDDY_MAX_BODY_MB`` (else 413, read no further), JSON without duplicate keys,
  an object whose only key is the API's own (``shipment``, ``shipments``, ``request`` or
  ``requests``); anything else is a 400 naming the key. BentoML would ignore unknown
  keys and keep the last of duplicates, so a client's typo would pass silently.
* **Load shedding** (:class:`Shedder`, the outermost layer): at most ``EDDY_MAX_IN_FLIGHT``
  prediction requests at once; beyond that a 503 with ``Retry-After`` at once, so accepted
  requests keep their latency and the rest know to come back, instead of every client
  waiting longer and longer.
* **Security headers** on every answer (no sniffing, no framing, no referrer, a content
  security policy that allows nothing from elsewhere) and ``Cache-Control: no-store`` on
  the review pages, which show customers.
* **Cancellation**: a prediction request's work runs as its own task, cancelled when the
  client disconnects (or when BentoML's time limit cancels the request), so nobody's
  abandoned 1,000-shipment batch keeps a core busy. The batch APIs work in chunks, so a
  cancelled batch stops after the chunk in hand.
* **Metrics** for every request, labelled by route (``serving.metrics``), never by the raw
  path a client chose.
* ``/`` leads to the offline API documentation at ``/docs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

from serving.metrics import metrics, route_label

#: the one top-level key each prediction API takes
API_KEYS = {"/eta": "shipment", "/eta/batch": "shipments", "/churn": "request", "/churn/batch": "requests"}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                 b"script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
]
NO_STORE = [(b"cache-control", b"no-store")]


def max_body_bytes() -> int:
    return int(float(os.environ.get("EDDY_MAX_BODY_MB", "8")) * 1024 * 1024)


def max_in_flight() -> int:
    return int(os.environ.get("EDDY_MAX_IN_FLIGHT", "32"))


class Rejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def strict_json(body: bytes, key: str) -> None:
    """Raise ``Rejected`` unless ``body`` is a JSON object whose only key is ``key``."""
    def no_duplicates(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise Rejected(400, f"duplicate key {k!r} in the JSON body")
            seen[k] = v
        return seen

    try:
        data = json.loads(body, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise Rejected(400, f"the body is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise Rejected(400, f"the body must be a JSON object with the key {key!r}")
    unknown = sorted(set(data) - {key})
    if unknown:
        raise Rejected(400, f"unknown key(s) {', '.join(repr(k[:40]) for k in unknown[:5])}: this API takes one "
                            f"key, {key!r}")


class Counts:
    """What the front door did in this process, for ``/status``: prediction requests in
    flight, answered 503 (shed) and stopped before their answer (cancelled)."""

    in_flight = shed = cancelled = 0


COUNTS = Counts()


class Shedder:
    """The outermost ASGI layer: a prediction request beyond capacity gets its 503 here.

    It sits outside BentoML's own layers (tracing, access log, time limit), because under
    overload a refusal must cost next to nothing: every layer a refusal passes takes
    event-loop time from the accepted requests (measured in ``benchmarks/reliability.py``).
    So refusals are counted in the metrics and ``/status``, not in BentoML's access log."""

    def __init__(self, app, in_flight: int | None = None):
        self.app = app
        self.capacity = max_in_flight() if in_flight is None else in_flight
        self.refused_at: dict = {}  # connection (client address and port) -> its latest refusal

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in API_KEYS or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if COUNTS.in_flight >= self.capacity:
            return await self._refuse(scope, send)
        COUNTS.in_flight += 1
        counted = True

        async def sending(message):
            nonlocal counted
            # Out of flight once the answer is sent, not when the layers inside have
            # unwound: the client may already have sent its next request by then.
            if counted and message["type"] == "http.response.body" and not message.get("more_body"):
                COUNTS.in_flight -= 1
                counted = False
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            if counted:
                COUNTS.in_flight -= 1

    async def _refuse(self, scope, send) -> None:
        """503 with Retry-After. A connection back before its Retry-After has passed gets
        its next refusal when that time is up: clients that retry at once would otherwise
        fill the event loop with refusals, and the accepted requests would wait behind them."""
        started = time.perf_counter()
        COUNTS.shed += 1
        client = scope.get("client")
        early = RETRY_AFTER_S - (time.monotonic() - self.refused_at.get(client, float("-inf")))
        if client is not None and early > 0:
            await asyncio.sleep(early)
        self._remember(client)
        for message in REFUSAL:
            await send(message)
        metrics().refused(scope["path"], time.perf_counter() - started)  # an API path is its own label

    def _remember(self, client) -> None:
        now = time.monotonic()
        if len(self.refused_at) >= REMEMBERED:  # bounded: forget connections refused over a Retry-After ago
            self.refused_at = {c: t for c, t in self.refused_at.items() if now - t < RETRY_AFTER_S}
            if len(self.refused_at) >= REMEMBERED // 2:  # a flood of connections: forget them all rather
                self.refused_at.clear()                  # than scan the table on every refusal
        self.refused_at[client] = now


RETRY_AFTER_S = 1
REMEMBERED = 10_000  # connections whose latest refusal is kept, to hold their early retries


class RequestGuard:
    """The ASGI middleware inside BentoML's layers: strict bodies, headers, metrics and
    cancellation. ``routes`` are the routes with review pages, for the metrics' labels."""

    def __init__(self, app, max_body: int | None = None, routes=()):
        self.app = app
        self.max_body = max_body or max_body_bytes()
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        label = route_label(path, self.routes)
        send = _measured(_with_headers(send, SECURITY_HEADERS + (NO_STORE if path.startswith("/review") else [])), label)
        if path == "/" and scope["method"] in ("GET", "HEAD"):
            return await _answer(send, 307, b"", [(b"location", b"/docs")])
        key = API_KEYS.get(path)
        if key is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            body = await self._body(scope, receive)
            strict_json(body, key)
        except Rejected as exc:
            return await _answer(send, exc.status, json.dumps({"error": str(exc)}).encode(), [])
        await self._until_gone(scope, body, receive, send, label)

    async def _until_gone(self, scope, body: bytes, receive, send, label: str) -> None:
        """Run the request as a task and cancel it if the client disconnects before its
        answer is sent, or if this request itself is cancelled (BentoML's time limit)."""
        gone, answered = asyncio.Event(), asyncio.Event()

        async def sending(message):
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()
            await send(message)

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        task = asyncio.ensure_future(self.app(scope, _replay(body, gone), sending))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if task.done() or answered.is_set():
                return await task
            self._cancel(task, label)
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # Nobody reads this; it ends the request for the layers outside (the time
            # limit waits for a response) and the metrics, as nginx's "client closed".
            await _answer(send, 499, b'{"error": "the client closed the request"}', [])
        except asyncio.CancelledError:
            if not task.done():
                self._cancel(task, label)
            raise
        finally:
            watcher.cancel()

    def _cancel(self, task: asyncio.Future, label: str) -> None:
        task.cancel()
        COUNTS.cancelled += 1
        metrics().cancelled.labels(endpoint=label).inc()

    async def _body(self, scope, receive) -> bytes:
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            raise Rejected(415, "send the body as JSON with Content-Type: application/json")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise Rejected(413, f"the body is larger than {self.max_body // 1024 // 1024} MB")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Rejected(400, "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise Rejected(413, f"the body is larger than {self.max_body // 1024 // 1024} MB")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


def _with_headers(send, extra: list[tuple[bytes, bytes]]):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            message = {**message, "headers": [*message.get("headers", []), *(h for h in extra if h[0] not in present)]}
        await send(message)
    return wrapped


def _replay(body: bytes, gone: asyncio.Event):
    """The body already read, then a disconnect once the guard's watcher has seen one (the
    watcher alone reads the client's channel after the body)."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}
    return again


def _measured(send, label: str):
    """``send`` that records the request's route, status and duration when the answer ends."""
    started, status = time.perf_counter(), 500

    async def wrapped(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            metrics().observe(label, status, time.perf_counter() - started)
    return wrapped


def _messages(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[dict, dict]:
    kind = [(b"content-type", b"application/json")] if body else []
    return ({"type": "http.response.start", "status": status,
             "headers": [*kind, (b"content-length", str(len(body)).encode()), *headers]},
            {"type": "http.response.body", "body": body})


async def _answer(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    for message in _messages(status, body, headers):
        await send(message)


#: the shedder's answer, made once: under overload it is sent thousands of times a second
REFUSAL = _messages(503, b'{"error": "the service is at capacity; retry shortly"}',
                    [(b"retry-after", str(RETRY_AFTER_S).encode()), *SECURITY_HEADERS])
