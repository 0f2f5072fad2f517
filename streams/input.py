"""The input topic's consumer: librdkafka (confluent-kafka), driven from a thread of its own.

aiokafka parses every record in Python on the event loop's thread, a `ConsumerRecord`
each: for single-event records that was a tenth of the worker's time (bench/PROFILE.md,
"Thirteenth pass"). librdkafka fetches, decompresses and parses on its own threads
without the GIL. The input thread takes what it has fetched (`take`), reads the values
with the edge's Rust reader (also without the GIL), and hands the event loop runs of
records, one per partition in offset order, read already.

Every call that changes the consumer's state is made on the input thread. librdkafka
runs its rebalance callbacks inside `consume`, on that thread: a revoke is handed to the
event loop (`hand_over`, which the worker runs under its ingest lock) and waited for, and
the offsets it returns are committed before the partitions go. A take during which the
partitions moved is not handed on: its records may predate the hand-over, whose commit
did not count them. Partitions assigned during a take stay paused until it ends, so
none of their records is in it, and are then read from their committed offsets (seeking
back instead fails on partitions just assigned, librdkafka's "Erroneous state").
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_right
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas.decode import Rejection
from streams.edge import EdgeCalls, EdgeReader
from streams.kafka import confluent_config
from streams.settings import Settings

log = logging.getLogger(__name__)

HAND_OVER_TIMEOUT_S = 120.0  # the event loop's hand-over of revoked partitions, at most
COMMITTED_TIMEOUT_S = 30.0  # the broker's answer for committed offsets, at most
FETCH_MIN_BYTES = 256 * 1024


@dataclass(slots=True)
class InputRun:
    """Consecutive records of one input partition, in offset order, read by the edge."""

    partition: int
    offsets: list[int]
    keys: list[bytes | None]
    reads: list[tuple[EdgeCalls, list[Rejection]]]  # each record's calls, rejections
    size: int  # bytes of the records' values

    def after(self, offset: int) -> InputRun:
        """The run without its records at or before `offset`."""
        start = bisect_right(self.offsets, offset)
        if start == 0:
            return self
        return InputRun(self.partition, self.offsets[start:], self.keys[start:],
                        self.reads[start:], self.size)

    @staticmethod
    def of(edge: EdgeReader, partition: int, offsets: list[int], keys: list[bytes | None],
           values: list[bytes | None]) -> InputRun:
        """The run of these records (in offset order), their values read by `edge`."""
        return InputRun(partition, offsets, keys, edge.read_many(values),
                        sum(len(v) for v in values if v))

    @staticmethod
    def read(edge: EdgeReader, partition: int,
             records: Iterable[tuple[int, bytes | None, bytes | None]]) -> InputRun:
        """A run of (offset, key, value) records, read by `edge`."""
        offsets, keys, values = [], [], []
        for offset, key, value in records:
            offsets.append(offset)
            keys.append(key)
            values.append(value)
        return InputRun.of(edge, partition, offsets, keys, values)


@dataclass(slots=True)
class InputRecord:
    """Where a record came from, for its dead letter."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


class InputConsumer:
    """The worker's consumer of the input topic (group `group_id`), on a thread of its own.

    `hand_over(partitions)` runs on the event loop when input partitions are revoked and
    returns the offsets to commit for them (partition -> next offset); `assigned(partitions)`
    is called on the event loop when partitions are assigned."""

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        edge: EdgeReader,
        hand_over: Callable[[list[int]], Coroutine[Any, Any, dict[int, int]]],
        assigned: Callable[[list[int]], None],
        fetch_bytes: int,
    ) -> None:
        self.topic = settings.topic_api_calls
        self.edge = edge
        self._hand_over, self._assigned = hand_over, assigned
        self._config = confluent_config(
            settings,
            **{
                "group.id": group_id,
                "client.id": group_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                # Positions are committed by the worker, once every call of the records
                # before them is sent (`take(commit=...)`), not stored as records go by.
                "enable.auto.offset.store": False,
                "fetch.max.bytes": fetch_bytes,
                "max.partition.fetch.bytes": fetch_bytes // 4,
                "fetch.wait.max.ms": 50,
                # A fetch waits for this much input, or those 50 ms: at a few tens of
                # thousands of single-event records a second, fetches that each came back
                # with a handful of records kept the broker at about half a core on this
                # machine's two, beside the worker (bench/PROFILE.md, "Twentieth pass").
                "fetch.min.bytes": FETCH_MIN_BYTES,
                # What librdkafka prefetches while the worker is busy: a few fetches' worth.
                "queued.max.messages.kbytes": 2 * fetch_bytes // 1024,
                # Once the queue is that full, librdkafka waits this long before it
                # fetches again (default 1 s). When the ingest then reads only the
                # partition furthest behind, that wait is the worker's: in a backlog's
                # first second, one run here took nothing for 0.8 s (bench/PROFILE.md,
                # "Sixteenth pass").
                "fetch.queue.backoff.ms": 10,
            },
        )
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="input")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None
        self._held: list[int] = []
        self._committed: dict[int, int] = {}  # at assignment (for `lagging`)
        self._moved = False  # partitions revoked or assigned during the take under way
        self._arrived: list[TopicPartition] = []  # assigned during it, paused until its end
        self._paused: list[TopicPartition] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(self._thread, self._start)

    def _start(self) -> None:
        self._consumer = Consumer(self._config, logger=log)
        self._consumer.subscribe([self.topic], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)

    async def take(self, max_records: int, timeout_s: float, only: list[int],
                   commit: dict[int, int]) -> list[InputRun]:
        """Commit `commit` (partition -> next offset), then take up to `max_records` records
        (what has come, or else the first to come within `timeout_s` and what came with
        it), only from the partitions `only` if any are named; returns them in runs.
        Empty when the partitions moved meanwhile."""
        assert self._loop is not None, "not started"
        return await self._loop.run_in_executor(
            self._thread, self._take, max_records, timeout_s, only, commit)

    def _take(self, max_records: int, timeout_s: float, only: list[int],
              commit: dict[int, int]) -> list[InputRun]:
        consumer = self._consumer
        assert consumer is not None
        if commit:
            self._commit(commit, "")
        self._pause_all_but(only)
        self._moved = False
        # What librdkafka holds now; if nothing, the first record to come and what came
        # with it. (`consume` with a timeout waits for `max_records` or the whole timeout:
        # a trickle of live input would wait that long each time.)
        messages = consumer.consume(num_messages=max_records, timeout=0)
        if not messages:
            first = consumer.poll(timeout_s)
            if first is not None:
                messages = [first]
                if max_records > 1:
                    messages += consumer.consume(num_messages=max_records - 1, timeout=0)
        if self._arrived:
            # Fetched from where the hand-over committed once the take is over (nothing
            # of theirs was taken: they were paused).
            consumer.resume(self._arrived)
            self._arrived = []
        if self._moved:
            return []
        runs: list[InputRun] = []
        partition = -1
        offsets: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("input consumer: %s", error.str())
                continue
            p, offset = message.partition(), message.offset()
            assert p is not None and offset is not None  # (a consumed message has both)
            if p != partition and offsets:
                runs.append(InputRun.of(self.edge, partition, offsets, keys, values))
                offsets, keys, values = [], [], []
            partition = p
            offsets.append(offset)
            keys.append(message.key())
            values.append(message.value())
        if offsets:
            runs.append(InputRun.of(self.edge, partition, offsets, keys, values))
        return runs

    def _pause_all_but(self, only: list[int]) -> None:
        """Read only the partitions `only` (all if none): librdkafka drops what it had
        fetched of the others, and fetches them again from the position taken when
        they are resumed."""
        consumer = self._consumer
        assert consumer is not None
        wanted = set(only)
        pause = [TopicPartition(self.topic, p) for p in self._held if wanted and p not in wanted]
        if {tp.partition for tp in pause} == {tp.partition for tp in self._paused}:
            return
        if self._paused:
            consumer.resume(self._paused)
        if pause:
            consumer.pause(pause)
        self._paused = pause

    def _commit(self, offsets: dict[int, int], when: str) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                            asynchronous=False)
        except KafkaException as exc:  # a rebalance took the partitions: they are re-read
            log.warning("input offsets not committed%s (%s); records may be read twice",
                        when, exc.args[0] if exc.args else exc)

    # -- rebalance callbacks: on the input thread, inside `consume` -------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._moved = True
        # Paused until the take under way is over: it is not handed on (its records may
        # predate the revoke), and a record of theirs in it would be lost, since seeking
        # back fails on partitions just assigned (librdkafka: "Erroneous state").
        consumer.assign(partitions)
        consumer.pause(partitions)
        self._arrived = list(partitions)
        self._paused = []
        self._held = sorted(tp.partition for tp in partitions)
        try:
            committed = consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S)
            self._committed = {tp.partition: tp.offset for tp in committed}
        except KafkaException as exc:
            log.warning("committed input offsets not known (%s)", exc)
            self._committed = {}
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._assigned, list(self._held))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._moved = True
        paused = self._paused + self._arrived  # paused stays paused through a rebalance
        if paused:
            consumer.resume(paused)
        self._paused, self._arrived, self._held = [], [], []
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(
            self._hand_over([tp.partition for tp in partitions]), self._loop)
        try:
            commit = future.result(HAND_OVER_TIMEOUT_S)
        except Exception:
            log.exception("the hand-over of revoked input partitions failed; records sent "
                          "since the last commit may be read twice")
            return
        if commit:
            self._commit(commit, " before a rebalance")

    # -- read from the event loop (librdkafka's answers from its last fetches) ---------------

    def lagging(self, partitions: Iterable[int]) -> list[int]:
        """Partitions of `partitions` whose records the consumer has not all handed on, or
        not known yet (not fetched)."""
        consumer = self._consumer
        if consumer is None:
            return list(partitions)
        tps = [TopicPartition(self.topic, p) for p in partitions]
        if not tps:
            return []
        positions = {tp.partition: tp.offset for tp in consumer.position(tps)}
        lagging = []
        for tp in tps:
            try:
                low, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:  # not known to the consumer yet
                low = high = -1
            if high < 0:  # not fetched yet: it may well have records
                lagging.append(tp.partition)
                continue
            position = positions.get(tp.partition, -1)
            if position < 0:  # nothing taken yet: from the committed offset, or the start
                position = self._committed.get(tp.partition, -1)
                if position < 0:
                    position = low
            if 0 <= position < high:
                lagging.append(tp.partition)
        return lagging

    async def stop(self) -> None:
        """Leave the group (revoking the partitions: the hand-over commits what was sent)."""
        if self._loop is None:
            return
        try:
            await self._loop.run_in_executor(self._thread, self._close)
        finally:
            self._thread.shutdown(wait=False)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def record_of(topic: str, run: InputRun, index: int) -> InputRecord:
    """The `index`-th record of `run`, for its dead letter."""
    return InputRecord(topic, run.partition, run.offsets[index], run.keys[index])

