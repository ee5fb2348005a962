"""The front door's parts on their own: route labels for metrics, chunked batches that stop when cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from serving import review
from serving.metrics import route_label


@pytest.mark.parametrize("path, label", [
    ("/eta", "/eta"), ("/churn/batch", "/churn/batch"), ("/review", "/review"),
    ("/review/customer/3fa9c0", "/review/customer/{key}"), ("/review/static/review.css", "/review/static"),
    ("/static_content/swagger-ui.css", "/static_content"), ("/review/nope", "other"), ("/wp-login.php", "other"),
    ("/eta/", "other"),
])
def test_every_path_gets_a_route_label_from_a_fixed_set(path, label):
    assert route_label(path, review.ROUTES) == label


def test_a_cancelled_batch_stops_after_the_chunk_in_hand():
    from serving.service import in_chunks

    started, release = threading.Event(), threading.Event()
    calls = []

    def work(items):
        calls.append(len(items))
        started.set()
        release.wait(5)
        return items

    async def scenario():
        task = asyncio.ensure_future(in_chunks(work, list(range(1000)), size=250))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)  # a chunk that would run next would have started by now

    asyncio.run(scenario())
    assert calls == [250]


def test_an_uncancelled_batch_answers_every_item_in_order():
    from serving.service import in_chunks

    assert asyncio.run(in_chunks(lambda items: [i * 2 for i in items], list(range(7)), size=3)) == [i * 2 for i in range(7)]


def test_the_review_answer_cache_is_bounded_and_keyed_by_scoring():
    from starlette.responses import Response

    from serving.review import Answers

    answers = Answers(size=2)
    for i in range(3):
        answers.put(("run-1", "/review", (("page", str(i)),)), Response(f"page {i}"))
    assert answers.get(("run-1", "/review", (("page", "0"),))) is None  # the oldest went
    assert answers.get(("run-1", "/review", (("page", "2"),))).body == b"page 2"
    assert answers.get(("run-2", "/review", (("page", "2"),))) is None  # a new scoring: nothing cached
    assert answers.get(None) is None


# ------------------------------------------------------------------ the load shedder


def _call(app, client=("10.0.0.1", 5000), path="/eta"):
    """One POST through ``app``: the messages it sent."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "client": client}
    return scope, receive, send, sent


def test_beyond_capacity_the_shedder_answers_503_with_retry_after_and_lets_the_rest_through():
    from serving.guard import COUNTS, Shedder

    release = asyncio.Event()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        await release.wait()  # the layers inside still unwinding after the answer went out

    async def scenario():
        shedder = Shedder(app, in_flight=1)
        before = COUNTS.shed
        holding = asyncio.Event()

        async def slow(scope, receive, send):
            holding.set()
            await asyncio.sleep(3600)

        busy = Shedder(slow, in_flight=1)
        first = asyncio.ensure_future(busy(*_call(busy)[:3]))
        await holding.wait()
        scope, receive, send, refused = _call(busy, client=("10.0.0.2", 1))
        await busy(scope, receive, send)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        assert refused[0]["status"] == 503 and (b"retry-after", b"1") in refused[0]["headers"]
        assert (b"x-content-type-options", b"nosniff") in refused[0]["headers"]
        assert b"capacity" in refused[1]["body"] and COUNTS.shed == before + 1

        # A request is out of flight once its answer is sent: the client's next one is
        # accepted although the first is still unwinding inside.
        one = asyncio.ensure_future(shedder(*_call(shedder)[:3]))
        await asyncio.sleep(0.01)
        scope, receive, send, second = _call(shedder)
        two = asyncio.ensure_future(shedder(scope, receive, send))
        await asyncio.sleep(0.01)
        assert second[0]["status"] == 200
        release.set()
        await asyncio.gather(one, two)
        assert COUNTS.in_flight == 0

    asyncio.run(scenario())


def test_a_connection_that_retries_at_once_gets_its_next_refusal_after_retry_after():
    """Clients that ignore Retry-After are held to it, so their retries cannot fill the
    event loop; another connection's first refusal is not held."""
    import time

    from serving.guard import RETRY_AFTER_S, Shedder

    async def never(scope, receive, send):
        raise AssertionError("nothing is accepted at capacity 0")

    async def scenario():
        shedder = Shedder(never, in_flight=0)
        await shedder(*_call(shedder, client=("10.0.0.1", 5000))[:3])
        finished = []

        async def refuse(client):
            scope, receive, send, sent = _call(shedder, client=client)
            started = time.monotonic()
            await shedder(scope, receive, send)
            finished.append((client, time.monotonic() - started, sent[0]["status"]))

        await asyncio.gather(refuse(("10.0.0.1", 5000)), refuse(("10.0.0.1", 5001)))
        return finished

    finished = asyncio.run(scenario())
    assert [c for c, _, _ in finished] == [("10.0.0.1", 5001), ("10.0.0.1", 5000)]  # the new connection first
    assert all(status == 503 for _, _, status in finished)
    assert finished[1][1] >= RETRY_AFTER_S * 0.9  # held until its Retry-After was up


# ------------------------------------------------------------------ micro-batching


def test_small_micro_batches_run_on_the_event_loop_big_ones_in_a_thread_and_a_bad_item_fails_alone():
    from serving.service import MicroBatcher

    threads = []

    def predict(items):
        threads.append((len(items), threading.get_ident()))
        if "bad" in items:
            raise ValueError("bad item")
        return [f"answer {i}" for i in items]

    async def scenario():
        batcher = MicroBatcher(predict, max_size=64, inline_max=4)
        loop_thread = threading.get_ident()
        small = await asyncio.gather(*(batcher.submit(i) for i in range(3)))
        big = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        mixed = await asyncio.gather(*(batcher.submit(i) for i in (1, "bad", 2)), return_exceptions=True)
        return loop_thread, small, big, mixed

    loop_thread, small, big, mixed = asyncio.run(scenario())
    assert small == [f"answer {i}" for i in range(3)] and big == [f"answer {i}" for i in range(10)]
    assert mixed[0] == "answer 1" and mixed[2] == "answer 2" and isinstance(mixed[1], ValueError)
    sizes = {n: t for n, t in threads}
    assert sizes[3] == loop_thread and sizes[10] != loop_thread


def test_the_shedders_memory_of_refused_connections_stays_bounded_in_a_flood():
    import serving.guard as guard

    async def never(scope, receive, send):
        raise AssertionError("nothing is accepted at capacity 0")

    async def flood():
        shedder = guard.Shedder(never, in_flight=0)
        for port in range(guard.REMEMBERED + 50):  # every connection new, all within one Retry-After
            await shedder(*_call(shedder, client=("10.0.0.9", port))[:3])
        return shedder

    shedder = asyncio.run(flood())
    assert 0 < len(shedder.refused_at) <= guard.REMEMBERED
