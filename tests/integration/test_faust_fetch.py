"""The worker's Faust consumer asks the broker to hold its fetches for at most
`FETCH_MAX_WAIT_MS` (Faust's own 1.5 s idled detect in a backlog: streams/faust_fetch.py).
Checked on the consumer a worker creates, started against the real broker: the wait is
what its fetcher sends."""

from __future__ import annotations

import asyncio

import pytest

from streams.faust_fetch import FETCH_MAX_WAIT_MS
from streams.pipeline import Pipeline
from tests.integration.conftest import Deployment

pytestmark = pytest.mark.integration


def test_the_workers_fetches_wait_at_most_the_bound(deployment: Deployment) -> None:
    assert FETCH_MAX_WAIT_MS < 1500  # shorter than Faust's own

    async def run() -> int:
        app = Pipeline(deployment.settings).app
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        await consumer.start()
        try:
            wait: int = consumer._fetcher._fetch_max_wait_ms
            return wait
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == FETCH_MAX_WAIT_MS
