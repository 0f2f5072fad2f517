"""Faust's consumer, with the broker's hold on its fetches bounded.

A fetch asks the broker for the partitions' next records and lets it hold the request,
up to a wait, until one of them has some. Faust creates its aiokafka consumer with a
wait of 1,500 ms and no setting for it. aiokafka keeps one fetch in flight per broker and
leaves out of it the partitions whose fetched records are not all handed on yet. So in a
backlog, the by-account partitions were busy being handed on when the next fetch left;
it asked only for the quiet topics (feedback, campaign edges, link observations not yet
written) and the broker held it. The by-account partitions, handed on meanwhile, waited
for it to come back before they could be fetched again: 0.3-1.6 s in most 1,000,000-event
batched runs, the whole worker idle with 100,000-600,000 calls still to read
(bench/PROFILE.md, "Twentieth pass"). A short wait bounds that pause; an idle worker then
sends about ten fetches a second, which the broker answers from memory.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it when the consumer starts and builds its fetcher.
        if hasattr(consumer, "_fetch_max_wait_ms"):
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        else:
            log.warning("this aiokafka has no fetch wait to set: fetches wait as Faust "
                        "asks (1.5 s), which can idle detect in a backlog")
        return consumer


class _Consumer(AIOKafkaConsumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(AIOKafkaTransport):
    Consumer = _Consumer


def bound_fetch_wait(app: faust.App) -> None:
    """Let the broker hold `app`'s fetches at most FETCH_MAX_WAIT_MS: before anything
    of `app` has made its transport (as Faust would, for its `kafka://` brokers)."""
    app.transport = _Transport(app.conf.broker_consumer, app)
