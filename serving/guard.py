"""The service's front door: what every request passes before any model work.

An ASGI middleware, so it holds for every route whatever framework answers it:

* **Strict bodies** on the prediction APIs: ``Content-Type: application/json`` (else 415),
  at most ``EDDY_MAX_BODY_MB`` (else 413, read no further), JSON without duplicate keys,
  an object whose only key is the API's own (``shipment``, ``shipments``, ``request`` or
  ``requests``); anything else is a 400 naming the key. BentoML would ignore unknown
  keys and keep the last of duplicates, so a client's typo would pass silently.
* **Load shedding**: at most ``EDDY_MAX_IN_FLIGHT`` prediction requests at once; beyond
  that a 503 with ``Retry-After`` at once, so accepted requests keep their latency and
  the rest know to come back, instead of every client waiting longer and longer.
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
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or []


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


class RequestGuard:
    """The ASGI middleware; ``shed`` and ``cancelled`` count the requests answered 503 and
    the ones whose work was stopped (for ``/status``). ``routes`` are the routes with
    review pages, for the metrics' route labels."""

    def __init__(self, app, max_body: int | None = None, in_flight: int | None = None, routes=()):
        self.app = app
        self.max_body = max_body or max_body_bytes()
        self.capacity = in_flight or max_in_flight()
        self.routes = routes
        self.in_flight = 0
        self.shed = self.cancelled = 0
        GUARDS.append(self)

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
            # Capacity first: under overload a 503 must cost next to nothing, or answering
            # the surplus takes the CPU the accepted requests need.
            if self.in_flight >= self.capacity:
                self.shed += 1
                metrics().shed.labels(endpoint=label).inc()
                raise Rejected(503, "the service is at capacity; retry shortly", [(b"retry-after", b"1")])
            body = await self._body(scope, receive)
            strict_json(body, key)
        except Rejected as exc:
            return await _answer(send, exc.status, json.dumps({"error": str(exc)}).encode(), exc.headers)
        self.in_flight += 1
        try:
            await self._until_gone(scope, body, receive, send, label)
        finally:
            self.in_flight -= 1

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
        self.cancelled += 1
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


#: guards made in this process (one per app); ``/status`` reports their counts
GUARDS: list[RequestGuard] = []


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


async def _answer(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    kind = [(b"content-type", b"application/json")] if body else []
    await send({"type": "http.response.start", "status": status,
                "headers": [*kind, (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
