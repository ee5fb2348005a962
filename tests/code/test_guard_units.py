"""The front door's parts on their own: route labels for metrics, chunked batches that stop when cancelled."""

from __future__ import annotations

import asyncio
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
