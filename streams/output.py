"""The worker's producer: librdkafka (confluent-kafka), sending from the event loop.

Every record the worker writes (calls re-keyed by account, link observations and edges,
ticks, alerts, dead letters) goes through here. aiokafka built and wrote each produce
request in Python on the event loop's thread, and sent nothing while a drain held that
thread: an alert raised early in a drain left when the drain ended (bench/PROFILE.md,
"Fourteenth pass"). librdkafka batches, sends and retries on threads of its own, without
the GIL; `send` hands it a record and returns at once.

Delivery reports come back on the output thread, which polls librdkafka and settles the
records' futures on the event loop, all those of one poll together. A record that could
not be delivered (after librdkafka's retries) settles with its error, and is logged
here, awaited or not. Idempotence keeps each partition's records in the order they were
sent, retries included, which the by-account topic's event-time order relies on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.kafka import confluent_config
from streams.settings import Settings

log = logging.getLogger(__name__)

# The client's bound on a record, as Faust's producer had it. The worker's records stay
# under 1 MB (internal records about 0.5 MB, dead letters at most 900,000 bytes of the
# original); above the broker's 16 MiB, a record too large meets the broker's refusal,
# which its delivery future reports.
MAX_MESSAGE_BYTES = 17 * 1024 * 1024
# librdkafka waits this long for more records to a partition before sending: long enough
# to send a drain's observations together, short next to the one second an alert has.
LINGER_MS = 2
POLL_S = 0.1  # the output thread's wait for delivery reports
WARM_UP_S = 10.0  # how long `start` waits for the topics' metadata
FULL_WAIT_S = 0.005  # how long `send` waits when librdkafka's queue is full, before trying again

Headers = Sequence[tuple[str, bytes]] | None


class OutputProducer:
    """Sends records from the event loop; each `send` returns its delivery future."""

    def __init__(self, settings: Settings) -> None:
        self._conf = confluent_config(
            settings,
            **{
                "client.id": f"{settings.app_id}-output",
                # acks from every in-sync replica, and each partition in order, retries included
                "enable.idempotence": True,
                "linger.ms": LINGER_MS,
                "message.max.bytes": MAX_MESSAGE_BYTES,
                # a key's partition as the Java client (and aiokafka) choose it
                "partitioner": "murmur2_random",
            },
        )
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        # Delivery reports of the current poll, settled on the event loop together.
        self._reports: list[tuple[asyncio.Future[None], KafkaError | None]] = []
        self._pending: set[asyncio.Future[None]] = set()  # sent, not settled yet
        self._failed = 0  # records not delivered since the last `flush`

    async def send(self, topic: str, value: bytes, *, partition: int | None = None,
                   key: bytes | None = None, headers: Headers = None) -> asyncio.Future[None]:
        """Hand a record to librdkafka; the returned future settles once the broker has it
        (or it could not be delivered). Waits only while librdkafka's queue is full."""
        producer = self._producer if self._producer is not None else self._start()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        record_headers: list[tuple[str, str | bytes | None]] | None = (
            list(headers) if headers else None)

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            with self._lock:
                self._reports.append((future, err))

        while True:
            try:
                producer.produce(topic, value, key,
                                 partition=-1 if partition is None else partition,
                                 on_delivery=delivered, headers=record_headers)
                self._pending.add(future)
                return future
            except BufferError:
                await asyncio.sleep(FULL_WAIT_S)

    async def start(self, topics: Sequence[str], timeout_s: float = WARM_UP_S) -> None:
        """Start the producer now rather than at the first send, and learn where the
        partitions of `topics` are. Started at its first send, the producer first asks
        for its idempotent producer id and each topic's leaders: that send was
        acknowledged half a second later, and a backlog's first calls waited on it."""
        producer = self._producer if self._producer is not None else self._start()

        def learn() -> None:
            for topic in topics:
                producer.list_topics(topic, timeout=timeout_s)

        try:
            await asyncio.get_running_loop().run_in_executor(None, learn)
        except KafkaException as exc:  # the first sends then learn it, as they would anyway
            log.warning("output: cannot read the topics' metadata yet: %s", exc)

    async def flush(self) -> None:
        """Wait until every record sent so far is settled (records sent meanwhile are not
        waited for, as with Faust's producer); KafkaException if one since the last flush
        could not be delivered, so that nothing is committed past it."""
        waiting = list(self._pending)
        if waiting:
            await asyncio.wait(waiting)
        failed, self._failed = self._failed, 0
        if failed:
            raise KafkaException(f"{failed} records could not be delivered (see the log)")

    async def stop(self) -> None:
        """Deliver what is queued, then stop the output thread."""
        try:
            await self.flush()
        finally:
            self._stopping.set()
            if self._thread is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def _start(self) -> Producer:
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._conf, logger=log)
        self._thread = threading.Thread(target=self._serve, name="output", daemon=True)
        self._thread.start()
        return self._producer

    def _serve(self) -> None:
        """The output thread: serve delivery reports, and have the event loop settle them."""
        producer, loop = self._producer, self._loop
        assert producer is not None and loop is not None
        # (ends with the event loop too: a worker's at exit, a test's at its end)
        while not self._stopping.is_set() and not loop.is_closed():
            producer.poll(POLL_S)
            if self._reports:
                try:
                    loop.call_soon_threadsafe(self._settle)
                except RuntimeError:  # the loop closed meanwhile
                    break

    def _settle(self) -> None:
        with self._lock:
            reports, self._reports = self._reports, []
        pending = self._pending
        for future, err in reports:
            pending.discard(future)
            if err is not None:
                self._failed += 1
                log.error("a record could not be delivered: %s", err)
            if future.done():  # (cancelled by a caller that stopped waiting)
                continue
            if err is None:
                future.set_result(None)
                continue
            future.set_exception(KafkaException(err))
            future.exception()  # logged here: no "never retrieved" warning if unawaited
