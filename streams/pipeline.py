"""The Faust application: agents that move API-call events through the detection core.

    api-calls ──ingest──► <app>-api-calls-by-account ──detect──► distillation-alerts
        │    alert-feedback ──feedback──┘  (events and verdicts)  │     + ClickHouse
        └──► api-calls-dlq                                        ▼
                 <app>-link-observations (by link key) ──link──► <app>-campaign-edges
                                                       (1 partition) ──cluster──► alerts

`ingest` validates at the edge and re-keys valid events by account, so that whichever
partition a producer wrote to, every event of an account meets that account's state on
one worker. `detect` runs the detection core in event time, emits account alerts, and
reports each account's link keys (TLS and payment fingerprints, network, templates, ...)
keyed by the link key, so that evidence about one key meets in one place (`link`). The
weighted links go to a one-partition topic, where one `cluster` agent merges accounts
into campaigns and raises `campaign` alerts. Detect workers also send their event-time
progress (ticks) there, so quiet campaigns resolve.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import faust
from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaException
from distillwatch_native import ObservationRecords
from faust.exceptions import ConsumerNotStarted

from models.engine import AccountKey, DetectionEngine
from models.linking.clusters import CampaignClusters
from models.linking.evidence import KeyEvidence, LinkEdge
from models.linking.observe import LinkObserver
from models.linking.suspicion import LinkingSuspicion
from models.records import ApiCall
from schemas.alert import Alert
from schemas.decode import MAX_BATCH_EVENTS, Rejection, decode_verdict
from schemas.feedback import AnalystVerdict
from streams import memory
from streams.clickhouse import connect, migrate, prepare_inserts, query_rows
from streams.deadletter import dead_letter
from streams.edge import EdgeCalls, EdgeReader, edge_records
from streams.faust_fetch import bound_fetch_wait
from streams.input import InputConsumer, InputRun, record_of
from streams.internal import (
    OBSERVATIONS_TAG,
    count_observations_or_tick,
    decode_by_account,
    decode_edges_or_tick,
    encode_calls,
    encode_edges,
    encode_progress,
    encode_tick,
    encode_verdict,
    partition_for,
)
from streams.kafka import faust_credentials
from streams.ordering import EventTimeMerger, OrderedRecords
from streams.output import OutputProducer
from streams.settings import Settings, redact_url
from streams.sinks import ClickHouseSink
from streams.statestore import (
    SHARED_KEY,
    AccountStore,
    account_key,
    decode_snapshot,
    encode_account,
    encode_shared,
    last_call_ts,
    split_account_key,
)

log = logging.getLogger(__name__)

TAKE_MAX = 2_000  # records handed to an agent at once
# Input records taken at once. Single-event records are about 1 KB: 8,000 of them ran
# 32,802-39,430 events/s end to end against 25,688-35,216 for 2,000, in alternating runs
# (bench/PROFILE.md, "Fourteenth pass"); batches are taken by `INGEST_TAKE_BYTES`.
INGEST_MAX_RECORDS = 8_000
# Calls decoded at the edge before they are re-keyed and sent. A fetch of batched,
# well-compressed input can hold a million events; as objects all at once they would
# set the worker's memory for good (freed heap is reused, not returned). Smaller slices
# bound memory further but cost CPU: 20,000 gave 23-25 CPU s/M against 17-19 unsliced in
# alternating runs, 250,000 gave 19-20 (bench/PROFILE.md, "Fifth pass").
INGEST_SLICE_CALLS = 250_000
INGEST_FETCH_BYTES = 16 * 1024 * 1024  # bytes the input consumer fetches at once
# Bytes of input values taken from the consumer at once, after decompression: what a fetch
# sets compressed is no bound (records of 1,000 events compress five to ten times). Records
# are taken by count, so the count follows the sizes of the records seen (see
# `IngestBudget`).
INGEST_TAKE_BYTES = 32 * 1024 * 1024
FIRST_TAKE_RECORDS = 16
# Items (calls, observations, edges) per internal record: about 0.5 MB at most, under the
# broker's default 1 MiB limit, however many one batch of input produces.
INTERNAL_MAX_ITEMS = 1_000
STREAM_BUFFER_RECORDS = 64  # internal records Faust buffers per stream
# Calls the edge may hold for a lagging input partition before it reads only the partitions
# furthest behind (see `_ingest`). librdkafka hands over a backlog a partition at a time, in
# runs of tens of thousands of single-event records, and reading only some partitions means
# pausing the others, which drops what it had fetched of them: at 50,000 nearly every take
# of a backlog paused partitions, and the worker read 500,000 single events at 16,876
# events/s against 31,027 at this bound (bench/PROFILE.md, "Thirteenth pass"). The input
# order's `max_buffered` (200,000) still bounds what is held, and takes are cut to the room
# left under it (`IngestBudget.fitting`): past it the order lets calls go ahead of a
# partition still behind, and a take of a few dozen batches overshot it (the spill bench
# then saw calls an hour of event time out of order; bench/PROFILE.md, "Fifteenth pass").
HOLD_CALLS = 150_000
INGEST_IDLE_S = 0.1
INGEST_IN_FLIGHT = 4  # fetched batches whose sends may await acknowledgement at once
TAKE_WITHIN_S = 0.05  # ... or whatever arrived within this many seconds (wall clock)
# Event-time seconds between a detect worker's ticks to the link stage, and between the
# link stage's to the clusterer.
TICK_EVERY_S = 60.0
LINK_SLICE_CALLS = 4_000  # calls of a drain the link stage runs over at once
# Link observations a drain sends as soon as it has made this many, not at its end: a drain
# of a backlog (hundreds of thousands of calls) makes about three per call: 1.8 million held
# at once, most of the worker's peak Python blocks at 10^6 accounts (bench/PROFILE.md,
# "Sixth pass").
OBSERVATIONS_SLICE = 30_000
# Event-time seconds the clusterer stays behind the latest tick. A link worker's tick comes
# after its edges, but the clusterer takes the latest tick of any link worker, and with
# several detect workers a link partition's progress is the fastest one's: edges of a
# slower worker then come after the tick of their time.
CLUSTER_LATENESS_S = 120.0
DRAIN_EVERY_S = 0.25  # wall-clock seconds between checks for calls the merger may release
# By-account records not yet taken, over the partitions a worker holds, from which it is
# working off a backlog (a replay, a restart, a stall) rather than keeping up: once it has
# caught up with its by-account and input partitions, the aggregates are flushed at once
# instead of at the next timer. Live traffic stays far below (about one record per
# partition per input take), so it keeps to the timer's inserts.
BACKLOG_RECORDS = 64
EXPIRE_EVERY_S = 600.0  # event-time seconds between sweeps of idle linking state
# Event-time seconds a link-observation partition may be behind the latest before the
# link stage's expiry stops waiting for it (`link_low_watermark`).
LINK_PARTITION_IDLE_S = 6 * 3600.0
EVICT_EVERY_S = 60.0  # event-time seconds between sweeps packing idle accounts or evicting them
SWEEP_EVERY_S = 60.0  # ... and wall-clock seconds, for when event time stands still
# Event-time seconds without a call before an account may be packed to keep the live ones
# to `state_live_max`: one called more recently would most likely be unpacked again at once.
QUIET_S = 60.0
STALE_EVERY_S = 600.0  # event-time seconds between looks for packed accounts to let go
CHECKPOINT_CHUNK = 10_000  # account snapshots encoded, sent and stored together
RELEASE_CHECKPOINTS = 5  # checkpoints a worker tries for partitions it lets go
DIRTY_MAX = 100_000  # accounts changed since their snapshot before detect waits for the store
SHARED_EVERY_S = 60.0  # wall-clock seconds between snapshots of the engine's shared models
ACCOUNT_IDLE_S = 7 * 86400.0  # an account silent this long is forgotten by the link observer
LOG_FIRST_DEAD_LETTERS = 20


@dataclass
class PipelineStats:
    """Counters a worker reports on /health and in its logs."""

    records_in: int = 0
    events_valid: int = 0
    rejected: int = 0
    events_detected: int = 0
    alerts: int = 0
    verdicts: int = 0
    redelivered: int = 0  # input records seen again and skipped
    failed: int = 0  # valid events the worker failed to process (dead-lettered)
    state_restored: int = 0  # changelog records replayed into the local store at assignment
    state_written: int = 0  # account snapshots written to the store and changelog
    accounts_loaded: int = 0  # accounts read back from the store at their next call
    accounts_packed: int = 0  # idle accounts packed in memory
    accounts_unpacked: int = 0  # packed accounts unpacked at their next call
    accounts_evicted: int = 0  # idle accounts that left memory (their snapshot is stored)
    snapshots_unreadable: int = 0  # snapshots of another format version: account restarted
    started_at: float = field(default_factory=lambda: datetime.now(UTC).timestamp())


def engine_from_settings(settings: Settings) -> DetectionEngine:
    """The detection core configured as this deployment wants it."""
    return DetectionEngine(fire_threshold=settings.fire_threshold, quiet_s=settings.quiet_s)


class IngestBudget:
    """How many input records to take at once so that their values come to about
    `take_bytes`: from the mean size of the records last taken, at most `max_records`.
    Single events (about 1 KB) are taken `max_records` at a time; records of 1,000 events
    (about 750 KB) a few dozen. And no more than the input order has room for (`fitting`)."""

    def __init__(self, take_bytes: int, max_records: int) -> None:
        self.take_bytes = take_bytes
        self.max_records = max_records
        # Until sizes are known, a few: a first take of the largest count could be a
        # backlog of batches, hundreds of megabytes (and a heap the worker keeps).
        self.records = min(max_records, FIRST_TAKE_RECORDS)
        self.calls_per_record = 1.0  # in the records last taken

    def took(self, count: int, size: int, calls: int) -> None:
        """Learn from the `count` records just taken, `size` bytes of values and `calls`
        valid calls in all."""
        if count:
            mean = size / count
            self.records = max(1, min(self.max_records, int(self.take_bytes // max(mean, 1))))
            self.calls_per_record = max(calls / count, 1.0)

    def fitting(self, room: int) -> int:
        """Records to take when the input order has room for `room` more calls: `records`,
        but no more than fill the room at the calls per record last seen, and at least
        one (a partition holding the others back must deliver for any to go)."""
        return max(1, min(self.records, int(room // self.calls_per_record)))


def _fetch_size_per_partition(partitions: int) -> int:
    """Bytes Faust's consumer fetches per partition at once: at most 16 MB, and little
    enough that every partition it reads (by-account, link observations and feedback with
    `partitions` each, and the campaign edges) fits in one fetch of aiokafka's 50 MB. A
    fetch fills the partitions in the same order every time: were the first ones to take
    it all, the last would fall hours of event time behind in a backlog, and detect would
    hold the others' calls for them (bench/PROFILE.md, "Eighth pass")."""
    return min(16 * 1024 * 1024, (48 * 1024 * 1024) // (3 * partitions + 1))


def _after(offset: int | None) -> int | None:
    return None if offset is None else offset + 1


def next_boundary(ts: float, every_s: float) -> float:
    """The first multiple of `every_s` after `ts` (event-time seconds)."""
    return (math.floor(ts / every_s) + 1) * every_s


async def _send_chunks(
    output: OutputProducer, topic: str, items: Sequence[Any],
    encode: Callable[[Sequence[Any]], bytes], partition: int,
) -> list[Any]:
    """Send `items` to one partition of an internal topic, INTERNAL_MAX_ITEMS per record;
    returns the delivery futures."""
    return [
        await output.send(topic, encode(items[start:start + INTERNAL_MAX_ITEMS]),
                          partition=partition)
        for start in range(0, len(items), INTERNAL_MAX_ITEMS)
    ]


def link_low_watermark(latest: dict[int, float]) -> float:
    """The event time up to which the link stage may expire its evidence: the least of
    its partitions' latest observations (`latest`, partition -> event time).

    A link key's observations all come to one partition, in event-time order from each
    detect worker, so a key is expired only once its own partition is past the point
    where it would start afresh: the expiry stays output-neutral however unevenly the
    partitions are read. (Expired at the latest of any partition, a key of a partition
    read behind the others could go before its own observations came, and start afresh:
    tests/streams/test_link_expiry.py, bench/PROFILE.md, "Sixteenth pass".) A partition
    more than `LINK_PARTITION_IDLE_S` behind the latest is left out, so that one gone
    quiet does not hold expiry back for good: the next observation there is a new
    call's, about as late as the others.
    """
    if not latest:
        return -math.inf
    top = max(latest.values())
    return min(ts for ts in latest.values() if ts >= top - LINK_PARTITION_IDLE_S)


def stamp(alert: Alert) -> Alert:
    """The alert with `detected_at` set to now (wall clock): the moment it is emitted."""
    return alert.model_copy(update={"detected_at": datetime.now(UTC)})


class Pipeline:
    """One worker's Faust app, its topics, the detection engine and the ClickHouse sink."""

    def __init__(self, settings: Settings, engine: DetectionEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine or engine_from_settings(settings)
        self.stats = PipelineStats()
        # Campaign linking: each stage's state lives where its partitions are.
        self.observer = LinkObserver()
        self.suspicion = LinkingSuspicion()
        self.evidence = KeyEvidence()
        self.clusters = CampaignClusters()
        self.cluster_watermark = -math.inf
        self.merger = EventTimeMerger()
        # The edge's merge of the input partitions in event time. A live partition that
        # sent nothing for INGEST_IDLE_S holds the others back no longer: gateways flush
        # to one partition at a time, and waiting longer for a quiet one delays every
        # alert (a replay waits for its lagging partitions all the same).
        self.input_order = OrderedRecords(EventTimeMerger(idle_s=INGEST_IDLE_S, edge=True))
        self.edge = EdgeReader(settings.topic_partitions)
        self._ingest_lock = asyncio.Lock()  # a batch of input, or a hand-over (`_hand_over`)
        # Input partitions held since the last rebalance (None: one under way), and how
        # many times input partitions were revoked (a fetch from before one is not taken).
        self._input_assignment: frozenset[int] | None = None
        self._input_moves = 0
        self.input: InputConsumer | None = None
        self.output = OutputProducer(settings)
        # Input batches whose sends await the broker's acknowledgement, oldest first, with
        # the input offsets (partition -> next offset) committed once they are.
        self._in_flight: deque[tuple[asyncio.Future[Any], dict[int, int]]] = deque()
        self._drain_lock = asyncio.Lock()
        self._next_tick = -math.inf
        self._next_observer_expiry = -math.inf
        self._next_evidence_expiry = -math.inf
        self._next_link_tick = -math.inf
        # Link-observation partition -> latest event time read from it, of an observation
        # or of a detect worker's tick (`link_low_watermark`, the clusterer's tick).
        self._link_latest: dict[int, float] = {}
        self.watermark = 0.0  # max event time (epoch seconds) this worker has seen
        self._dead_lettered = 0
        self._taken: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset taken
        self._lag_fault_logged = False
        self._backlog = False  # working off a backlog (see BACKLOG_RECORDS)
        self._catch_up_flush: asyncio.Future[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        # The edge's reads: the Rust reader parses a fetched batch without the GIL there,
        # while the event loop's thread detects (bench/PROFILE.md, "Twelfth pass").
        self._edge_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge")
        # Account state that outlives the process (streams/statestore.py).
        self.store = AccountStore(settings) if settings.state_store else None
        self._store_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        self._held: set[int] = set()  # partitions whose accounts' state this worker holds
        self._dirty: set[AccountKey] = set()  # accounts changed since their last snapshot
        # Accounts idle for `state_pack_s`, kept in memory as their snapshot (250-700
        # bytes instead of 1.2 KB of objects): store key -> value. Those whose snapshot is
        # not written yet are also in `_unwritten`; the next checkpoint writes the packed
        # bytes as they are. (An account in `_dirty` is always in memory, unpacked: the
        # drain relies on it.)
        self._packed: dict[bytes, bytes] = {}
        self._unwritten: set[bytes] = set()
        # What the checkpoint under way took to write and has not written yet: a sweep
        # between its start and its write packs such an account as unwritten.
        self._writing: set[AccountKey | bytes] = set()
        self._checkpoint_lock = asyncio.Lock()
        self._shared_restored = False
        self._next_shared = 0.0  # monotonic time of the next shared-models snapshot
        self._next_eviction = -math.inf
        self._next_sweep = 0.0  # monotonic time by which idle accounts are looked for anyway
        self._next_stale = -math.inf  # event time of the next look for packed accounts to drop
        self._stale_unwritten: set[bytes] = set()  # found to drop at that look, not yet written
        self._client: Client | None = None
        self.sink: ClickHouseSink | None = None
        self.app = self._build_app()

    # -- wiring ---------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        s = self.settings
        brokers = [f"kafka://{server.strip()}" for server in s.kafka_bootstrap_servers.split(",")]
        app = faust.App(
            s.app_id,
            broker=brokers,
            broker_credentials=faust_credentials(s),
            store="memory://",
            datadir=str(s.state_dir / "faust"),
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.topic_replication,
            topic_allow_declare=False,  # `distillwatch topics create` owns topic creation
            key_serializer="raw",
            value_serializer="raw",
            web_enabled=True,
            web_bind=s.web_host,
            web_host=s.web_host,
            web_port=s.web_port,
            consumer_max_fetch_size=_fetch_size_per_partition(s.topic_partitions),
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=True,
            # Internal records carry up to INTERNAL_MAX_ITEMS calls each: Faust's default
            # buffer of 4,096 records per stream held gigabytes when detect fell behind.
            stream_buffer_maxsize=STREAM_BUFFER_RECORDS,
        )
        bound_fetch_wait(app)
        # Faust consumes the worker's topics; `self.output` writes to them.
        self.by_account = app.topic(s.internal_topic_by_account, value_serializer="raw")
        self.feedback = app.topic(s.topic_feedback, value_serializer="raw")
        self.observations = app.topic(s.internal_topic_link_observations, value_serializer="raw")
        self.edges = app.topic(s.internal_topic_campaign_edges, value_serializer="raw")

        app.task(self._ingest)
        app.agent(self.by_account, name="detect")(self._detect)
        app.agent(self.feedback, name="feedback")(self._feedback)
        app.agent(self.observations, name="link")(self._link)
        app.agent(self.edges, name="cluster")(self._cluster)
        app.timer(s.clickhouse_flush_interval_s)(self._flush_timer)
        app.timer(DRAIN_EVERY_S)(self._drain_timer)
        if self.store is not None:
            app.timer(s.state_checkpoint_interval_s)(self._checkpoint_timer)
            app.on_partitions_revoked.connect(self._on_partitions_revoked)
        app.task(self._quiet_library_loggers)
        # Faust commits the offsets of what its agents consumed once its producer is
        # flushed, so that what they wrote is in Kafka first. The worker writes through
        # `self.output`: that is flushed there too.
        faust_flush = app.producer.flush

        async def flush() -> None:
            await faust_flush()
            await self.output.flush()

        app.producer.flush = flush  # type: ignore[method-assign]
        pipeline = self

        class HealthView(faust.web.View):
            async def get(self, request: Any) -> Any:
                return self.json(pipeline.health())

        class MemoryView(faust.web.View):
            async def get(self, request: Any) -> Any:
                return self.json(pipeline.memory_report())

        class SqlView(faust.web.View):
            async def post(self, request: Any) -> Any:
                return await pipeline._sql(self, request)

        app.page("/health/")(HealthView)
        app.page("/memory/")(MemoryView)
        app.page("/sql/")(SqlView)
        app.on_before_shutdown.connect(self._on_before_shutdown)
        return app

    # -- agents ---------------------------------------------------------------------------

    async def _ingest(self) -> None:
        """Validate input at the edge; dead-letter what is bad; re-key the rest by account
        in event-time order, one internal record per destination partition for each set
        of calls the input order lets go.

        Input is read by librdkafka (`streams.input.InputConsumer`, group
        `<app id>-ingest`) on a thread of its own, in takes of up to
        INGEST_MAX_RECORDS records, rather than through a Faust agent: Faust handles
        every record as an event of its own, which cost more than validating, re-keying
        and detecting it together, and aiokafka parsed each record in Python on this
        thread (bench/PROFILE.md). The calls of the input partitions are merged in
        event time before they are re-keyed (`OrderedRecords`), so that each by-account
        partition is written in event-time order however unevenly the input partitions
        are read (a replay of a backlog); when calls pile up waiting for a partition,
        that partition is read first. Input offsets are committed once every call of
        the records before them is sent and acknowledged: a worker that dies mid-batch
        leaves them to be read again, never lost.
        """
        s = self.settings
        # Batches whose sends are in flight, oldest first: the next batch is validated
        # while the broker acknowledges the previous ones, and offsets are committed in
        # order as their batches complete.
        in_flight = self._in_flight
        consumer = self.input = InputConsumer(
            s, f"{s.app_id}-ingest", self.edge, self._hand_over, self._input_assigned,
            INGEST_FETCH_BYTES)
        await self.output.start([s.internal_topic_by_account,
                                 s.internal_topic_link_observations,
                                 s.internal_topic_campaign_edges, s.topic_alerts,
                                 s.topic_dead_letters])
        await consumer.start()
        budget = IngestBudget(INGEST_TAKE_BYTES, INGEST_MAX_RECORDS)
        order = self.input_order
        wanted: list[int] = []  # none: every partition
        commit: dict[int, int] = {}
        try:
            while True:
                moves = self._input_moves
                # Calls waiting for a quiet partition go once it has been quiet for
                # INGEST_IDLE_S: look again by then, whether input comes or not.
                # Past `max_buffered` the order lets calls go ahead of a partition still
                # behind (out of event-time order): take no more than fits, keeping room
                # for one record of the largest batch.
                room = order.merger.max_buffered - MAX_BATCH_EVENTS - len(order)
                runs = await consumer.take(budget.fitting(room),
                                           0.05 if len(order) else 0.2, wanted, commit)
                commit = {}
                # Under the lock the hand-over takes: partitions cannot move between the
                # look at the assignment and the sends of this batch.
                async with self._ingest_lock:
                    assigned = self._input_assignment
                    if assigned is None or self._input_moves != moves:
                        # A rebalance since the take began, or under way: the consumer
                        # took nothing then (it reads those records again).
                        wanted = []
                        continue
                    now = time.monotonic()
                    # (what waited of partitions revoked since, the hand-over has dropped)
                    order.merger.assign(sorted(assigned), now)
                    lagging = consumer.lagging(assigned)
                    valid = self.stats.events_valid
                    if runs or len(order):
                        sent, done = await self._ingest_batch(runs, lagging, now)
                        in_flight.append((asyncio.ensure_future(asyncio.gather(*sent)), done))
                        if len(in_flight) > INGEST_IN_FLIGHT:
                            await in_flight[0][0]
                    budget.took(sum(len(run.offsets) for run in runs),
                                sum(run.size for run in runs), self.stats.events_valid - valid)
                # Calls pile up waiting for a partition that is behind: read it first.
                wanted = order.merger.holding_back(lagging) if len(order) > HOLD_CALLS else []
                while in_flight and in_flight[0][0].done():
                    done_sending, offsets = in_flight.popleft()
                    done_sending.result()  # a failed send stops the worker rather than losing input
                    commit.update(offsets)
        finally:
            await consumer.stop()

    async def _hand_over(self, revoked: list[int]) -> dict[int, int]:
        """Input partitions about to move (librdkafka revokes every partition held at each
        rebalance, and assigns again those that stay): the calls of theirs waiting to be
        ordered are dropped, and the offsets of every batch sent are returned to be
        committed first, so that their new owner reads from there (sent twice, calls are
        counted twice). Until the new assignment, the ingest loop takes nothing."""
        async with self._ingest_lock:  # the batch under way is sent first
            self._input_assignment = None
            self._input_moves += 1
            in_flight = self._in_flight
            gone = set(revoked)
            # Where each partition's new owner is to start: the first record with a call
            # dropped here, past every call sent (those of records partly sent included).
            resume = self.input_order.forget(gone)
            topic = self.settings.topic_api_calls
            for partition in revoked:
                self._taken.pop((topic, partition), None)
            commit: dict[int, int] = {}
            while in_flight:
                future, offsets = in_flight[0]
                await asyncio.wait([future])
                if future.exception() is not None:
                    resume = {}  # not every call let go was sent: commit only what was
                    break  # the ingest loop stops the worker on it
                in_flight.popleft()
                commit.update(offsets)
            for partition, offset in resume.items():
                commit[partition] = max(commit.get(partition, offset), offset)
            return commit

    def _input_assigned(self, partitions: list[int]) -> None:
        self._input_assignment = frozenset(partitions)

    async def _ingest_batch(self, runs: list[InputRun], lagging: list[int],
                            now: float) -> tuple[list[Any], dict[int, int]]:
        """Order and send one take of input runs (records already read by the edge, see
        `streams.input`); returns the delivery futures of its sends and the input
        offsets wholly let go.

        A run's records go to the input order together: one record per event would
        otherwise cost the merger's bookkeeping once per event. Calls are let go and sent
        every INGEST_SLICE_CALLS, at a record's end."""
        stats, topic = self.stats, self.settings.topic_api_calls
        order, done = self.input_order, {}
        sent: list[Any] = []
        waiting = 0  # calls added to the order since the last send
        for run in runs:
            tp = (topic, run.partition)
            last = self._taken.get(tp, -1)
            if run.offsets and run.offsets[0] <= last:
                fresh = run.after(last)
                self._count_redelivered(len(run.offsets) - len(fresh.offsets), topic, run, last)
                run = fresh
            if not run.offsets:
                continue
            self._taken[tp] = run.offsets[-1]
            stats.records_in += len(run.offsets)
            # The run's records not added to the order yet: their calls, how many, and
            # each one's offset and first call there.
            calls: list[EdgeCalls] = []
            count = 0
            starts: list[tuple[int, int]] = []
            for index, (offset, (valid, rejections)) in enumerate(
                    zip(run.offsets, run.reads, strict=True)):
                if rejections:
                    record = record_of(topic, run, index)
                    for rejection in rejections:
                        sent.append(await self._dead_letter(rejection, topic, record))
                    stats.rejected += len(rejections)
                starts.append((offset, count))
                calls.append(valid)
                count += len(valid)
                if waiting + count >= INGEST_SLICE_CALLS:
                    order.add(run.partition, offset, calls, now, starts)
                    stats.events_valid += count
                    calls, count, starts, waiting = [], 0, [], 0
                    sent += await self._send_released(lagging, now, done)
            if starts:
                order.add(run.partition, run.offsets[-1], calls, now, starts)
                stats.events_valid += count
                waiting += count
        # (with nothing new, calls held for a partition that went idle may go)
        sent += await self._send_released(lagging, now, done)
        return sent, done

    def _count_redelivered(self, skipped: int, topic: str, run: InputRun, last: int) -> None:
        self.stats.redelivered += skipped
        if self.stats.redelivered <= LOG_FIRST_DEAD_LETTERS:
            log.warning("skipping %d redelivered records of %s[%d] from @%d (already had up "
                        "to %d)", skipped, topic, run.partition, run.offsets[0], last)

    async def _send_released(self, lagging: list[int], now: float,
                             done: dict[int, int]) -> list[Any]:
        """Re-key and send the calls the input order lets go; record in `done` the input
        offsets wholly let go."""
        calls, offsets = self.input_order.release(now, lagging)
        done.update(offsets)
        topic = self.settings.internal_topic_by_account
        sent: list[Any] = []
        # (the edge's order releases `EdgeCalls`: grouped and written in Rust)
        groups = edge_records(cast(EdgeCalls, calls), INTERNAL_MAX_ITEMS)
        for partition, values in groups.items():
            for value in values:
                sent.append(await self.output.send(topic, value, partition=partition))
        if calls:
            # Then how far the edge has let calls go, to the partitions that got none of
            # them, and to every partition once the edge holds nothing more (the end of a
            # burst or a backlog): detect need not wait for a partition that has nothing
            # more to send. It waited for it to stay silent for its idle time: up to a
            # second, 0.6-1.3 s at the end of a backlog (bench/PROFILE.md, "Seventeenth
            # pass"). While calls flow, each partition's calls say how far it has come.
            everything = not len(self.input_order)
            progress = encode_progress(self.input_order.merger.released_to)
            for partition in range(self.settings.topic_partitions):
                if everything or partition not in groups:
                    sent.append(await self.output.send(topic, progress, partition=partition))
        return sent

    def _first_delivery(self, message: Any) -> bool:
        """False for a record this worker has already taken.

        Faust's consumer can go back to the last committed offset without a rebalance of
        its own (seen right after another worker joined the group: records read to the
        end were delivered again from the commit point). Processing them twice would
        count, learn and alert twice, so each agent skips what it has already had.
        """
        tp = (message.topic, message.partition)
        last = self._taken.get(tp, -1)
        if message.offset <= last:
            self.stats.redelivered += 1
            if self.stats.redelivered <= LOG_FIRST_DEAD_LETTERS:
                log.warning("skipping redelivered %s[%d]@%d (already had up to %d)",
                            message.topic, message.partition, message.offset, last)
            return False
        self._taken[tp] = message.offset
        return True

    async def _feedback(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Analyst verdicts, sent to the partition that holds the account's state."""
        topic, partitions = self.settings.topic_feedback, self.settings.topic_partitions
        async for record in stream.events():
            if not self._first_delivery(record.message):
                continue
            verdict = decode_verdict(record.value)
            if isinstance(verdict, Rejection):
                await self._dead_letter(verdict, topic, record.message)
                continue
            await self.output.send(
                self.settings.internal_topic_by_account, encode_verdict(verdict),
                partition=partition_for(verdict.account_id, partitions),
            )
            yield None

    async def _detect(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """The detection core, in event time: account alerts, aggregates, link evidence.

        Calls wait in `merger` until every partition this worker holds has reached their
        event time, then go to the engine in event-time order (see streams/ordering.py).
        """
        stats, merger = self.stats, self.merger
        topic = self.settings.internal_topic_by_account
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            assigned = self.assigned_partitions()
            if self.store is not None and set(assigned) != self._held:
                await self._hold(assigned)
            now = time.monotonic()
            merger.assign(assigned, now)
            for record in batch:
                if not self._first_delivery(record.message):
                    continue
                try:
                    item = decode_by_account(record.value)
                    if isinstance(item, float):
                        merger.advance(record.message.partition, item, now)
                        continue
                    if isinstance(item, AnalystVerdict):
                        for alert in self._apply_verdict(item):
                            await self._emit(alert)
                        stats.verdicts += 1
                        continue
                except Exception as exc:  # a defect must not stop the pipeline or lose data
                    await self._processing_error(exc, record.value, topic, record.message)
                    continue
                merger.add(record.message.partition, item, now)
            await self._keep_up_with_the_store()
            await self._drain()
            self._flush_once_caught_up()
            yield None

    def _apply_verdict(self, verdict: AnalystVerdict) -> list[Alert]:
        """Teach the engine an analyst's verdict; the account's state comes back into
        memory first if it is packed or stored, and is snapshotted again after."""
        key = (verdict.tenant_id, verdict.account_id)
        if self.store is not None:
            if self.engine.account_state(*key) is None:
                self._load(key)
            if self.engine.account_state(*key) is not None:  # else the verdict changes nothing
                self._dirty.add(key)
        return self.engine.apply_verdict(*key, verdict.verdict, verdict.ts.timestamp())

    async def _keep_up_with_the_store(self) -> None:
        """Checkpoint now, and wait for it, if more than DIRTY_MAX accounts wait for their
        snapshot: when accounts arrive faster than snapshots are written (a replay, a
        flood of new keys), memory then holds the accounts of the last `state_idle_s`,
        not everything read so far."""
        if self.store is not None and len(self._dirty) + len(self._unwritten) > DIRTY_MAX:
            await self._checkpoint()

    def _flush_once_caught_up(self) -> None:
        """Flush the aggregates as soon as the worker has worked off a backlog: analysts
        then see a replay's counts when its alerts are out, not up to a flush interval
        later."""
        if self.sink is None:
            return
        lag = self.by_account_lag()
        if lag >= BACKLOG_RECORDS:
            self._backlog = True
        elif self._backlog and lag == 0 and self._caught_up():
            self._backlog = False
            if self._catch_up_flush is None or self._catch_up_flush.done():
                self._catch_up_flush = asyncio.ensure_future(self._flush())

    def _caught_up(self) -> bool:
        """Nothing left behind this worker's position but by-account records: no call
        waiting in the merger or the edge's order, no input record unread."""
        if len(self.merger) or len(self.input_order):
            return False
        partitions = self.input_partitions()
        return (partitions is not None and self.input is not None
                and not self.input.lagging(partitions))

    async def _drain_timer(self) -> None:
        # Input may stop while calls wait for a partition to go idle: let them go on.
        if len(self.merger):
            await self._drain()

    async def _drain(self, everything: bool = False) -> None:
        """Process the calls the merger releases now (`everything`: all it holds), in
        order, one drain at a time."""
        async with self._drain_lock:
            ready = cast(list[ApiCall], (
                self.merger.release(math.inf) if everything
                else self.merger.release(time.monotonic(), self.lagging_partitions())))
            if not ready:
                return
            engine, store = self.engine, self.store
            topic = self.settings.internal_topic_by_account
            # The calls processed since the link stage last ran, the engine's suspicion
            # after each and their combined scores: the link stage (share suspicion, link
            # observer) and the sink's counts run over them together (`_link_calls`).
            calls: list[ApiCall] = []
            suspicions: list[float] = []
            scores: list[float] = []
            # Sent at the drain's end, or once OBSERVATIONS_SLICE wait. Sent a slice at a
            # time (4,000 calls), a backlog's campaigns named 0-92 % of the accounts the
            # offline run names in 8 of 12 runs of the integration test (0 of 8 failed
            # sent this way). Why is not pinned down: perhaps the link stage's expiry,
            # at the latest event time of any partition, with its partitions further
            # apart in smaller records (bench/PROFILE.md, "Fifteenth pass").
            observations = ObservationRecords(OBSERVATIONS_TAG, self.settings.topic_partitions,
                                              INTERNAL_MAX_ITEMS)
            sweep_at = self._next_eviction
            latest = -math.inf  # event time of the last call processed
            alerts: list[Alert] = []
            # With a store, an account's first call since its last snapshot loads its
            # state if it is not in memory and marks it for the next (`_prepare`).
            known, prepare = (None, None) if store is None else (self._dirty, self._prepare)
            done = 0
            freed = 0  # calls before it in `ready` are let go (see below)
            while done < len(ready):
                stop = min(len(ready), done + LINK_SLICE_CALLS - len(calls))
                end, error = engine.process_many(
                    ready, done, stop, sweep_at if store is not None else math.inf,
                    known, prepare, suspicions, scores, alerts)
                for alert in alerts:
                    await self._emit(alert)
                alerts.clear()
                if end > done:
                    calls += ready[done:end]
                    latest = ready[end - 1].ts
                if error is not None:
                    await self._processing_error(error, encode_calls([ready[end]]), topic, None)
                    done = end + 1
                    continue
                done = end
                sweep = store is not None and latest >= sweep_at
                if sweep or len(calls) >= LINK_SLICE_CALLS:
                    await self._link_calls(calls, suspicions, scores, observations)
                    calls, suspicions, scores = [], [], []
                    # Every step is done with the calls before `done`: they are freed
                    # now, while they are still in the processor's cache. Freed with
                    # `ready` at the drain's end (100,000 calls and more in a backlog),
                    # each was read from memory again: 6 % of the event loop's thread.
                    ready[freed:done] = [None] * (done - freed)  # type: ignore[list-item]
                    freed = done
                    if len(observations) >= OBSERVATIONS_SLICE:
                        await self._send_observations(observations)
                    # Let the other tasks in between slices: the ingest's next take
                    # (read and parsed on the input thread meanwhile), the link agent.
                    await asyncio.sleep(0)
                if sweep:
                    # A drain of a backlog spans minutes or hours of event time: accounts
                    # that went idle in it are packed on the way, not after it, and those
                    # long idle and written leave memory (their link state with them, so
                    # the link stage has run over every call before). Writing snapshots
                    # stays with the wall-clock checkpoints (and
                    # `_keep_up_with_the_store`): a checkpoint per minute of event time
                    # wrote the same active accounts again and again in a fast replay.
                    self.watermark = max(self.watermark, latest)
                    self._sweep()
                    sweep_at = self._next_eviction
            await self._link_calls(calls, suspicions, scores, observations)
            await self._send_observations(observations)
            # The merger releases calls in event-time order: the last one is the latest.
            watermark = self.watermark = max(self.watermark, latest)
            for alert in engine.advance(watermark):
                await self._emit(alert)
            if watermark >= self._next_tick:
                # To every link partition, after the observations of the calls up to it:
                # the link stage passes it on to the clusterer once it has sent their
                # edges (`_link`). Sent straight to the clusterer, it came before them
                # whenever a drain spanned more than CLUSTER_LATENESS_S of event time,
                # and the clusterer ran those ticks without those edges.
                tick, links = encode_tick(watermark), self.settings.internal_topic_link_observations
                for partition in range(self.settings.topic_partitions):
                    await self.output.send(links, tick, partition=partition)
                self._next_tick = next_boundary(watermark, TICK_EVERY_S)
            if watermark >= self._next_observer_expiry:
                self.observer.expire(watermark, ACCOUNT_IDLE_S)
                self._next_observer_expiry = next_boundary(watermark, EXPIRE_EVERY_S)
            # Counted last, once the drain's alerts are sent: a caller that sees every call
            # detected sees their alerts too.
            self.stats.events_detected += len(ready)

    def _prepare(self, key: AccountKey) -> None:
        """Before an account's first call since its last snapshot: its state back in the
        engine if it is packed or stored, and the account marked for the next one."""
        if self.engine.account_state(*key) is None:
            self._load(key)
        self._dirty.add(key)

    async def _link_calls(self, calls: list[ApiCall], suspicions: list[float],
                          scores: list[float], observations: ObservationRecords) -> None:
        """The link stage of calls the engine has processed, in their order: each one's
        share suspicion and link observations (encoded into `observations`), then the
        sink's counts. A call the link stage fails on is dead-lettered and left out of the
        counts; its alerts, if any, are out already (the engine has counted it)."""
        observed = 0
        while observed < len(calls):
            rest = calls[observed:] if observed else calls
            done, error = self.observer.observe_many_into(
                observations, rest, suspicions[observed:], self.suspicion)
            if error is None:
                break
            failed = observed + done
            await self._processing_error(error, encode_calls([calls[failed]]),
                                         self.settings.internal_topic_by_account, None)
            del calls[failed], suspicions[failed], scores[failed]
            observed = failed
        if self.sink is not None and calls:
            self.sink.add_calls(calls, scores)

    async def _send_observations(self, observations: ObservationRecords) -> None:
        """Send the link observations written so far to the partitions of their link
        keys (the observer encoded them into their records, see `_link_calls`)."""
        topic = self.settings.internal_topic_link_observations
        for partition, values in observations.take().items():
            for value in values:
                await self.output.send(topic, value, partition=partition)

    async def _link(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Evidence per link key: which accounts share it, and how much that means."""
        evidence, topic = self.evidence, self.settings.internal_topic_link_observations
        latest = self._link_latest
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            edges: list[LinkEdge] = []
            for record in batch:
                if not self._first_delivery(record.message):
                    continue
                try:
                    ts = count_observations_or_tick(record.value, evidence, edges)
                except Exception as exc:  # a defect must not stop linking
                    # (the observations before the one it failed on are counted, their
                    # edges sent; the partition's progress waits for its next record)
                    await self._processing_error(exc, record.value, topic, record.message)
                    continue
                partition = record.message.partition
                if ts > latest.get(partition, -math.inf):
                    latest[partition] = ts
            if edges:
                await _send_chunks(self.output, self.settings.internal_topic_campaign_edges,
                                   edges, encode_edges, 0)
            low = link_low_watermark(latest)
            if low >= self._next_evidence_expiry and low > -math.inf:
                evidence.expire(low)
                self._next_evidence_expiry = next_boundary(low, EXPIRE_EVERY_S)
            # The clusterer's tick: every partition this worker reads has come this far
            # (a tick from detect says it has sent all its observations up to then), so
            # the edges of every observation up to it are sent, to the same partition,
            # before it. Unlike the expiry's, one not heard from yet holds it back.
            held = self.assigned_partitions(topic) or list(latest)
            tick = min((latest.get(p, -math.inf) for p in held), default=-math.inf)
            if tick >= self._next_link_tick and tick > -math.inf:
                await self.output.send(self.settings.internal_topic_campaign_edges,
                                       encode_tick(tick), partition=0)
                self._next_link_tick = next_boundary(tick, TICK_EVERY_S)
            yield None

    async def _cluster(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Merge linked accounts into campaigns; raise, grow and resolve `campaign` alerts."""
        clusters, topic = self.clusters, self.settings.internal_topic_campaign_edges
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            latest = self.cluster_watermark
            for record in batch:
                if not self._first_delivery(record.message):
                    continue
                try:
                    item = decode_edges_or_tick(record.value)
                    if isinstance(item, float):
                        latest = max(latest, item)
                    else:
                        for edge in item:
                            clusters.add(edge)
                except Exception as exc:
                    await self._processing_error(exc, record.value, topic, record.message)
            self.cluster_watermark = latest
            if latest > -math.inf:
                for alert in clusters.advance(latest - CLUSTER_LATENESS_S):
                    await self._emit(alert)
            if self.sink is not None:
                for member in clusters.drain_member_changes():
                    self.sink.add_campaign_member(member, latest)
            yield None

    async def _processing_error(
        self, exc: Exception, value: bytes | None, topic: str, message: Any | None
    ) -> None:
        # (`exc` may come back from the link stage's Rust loop rather than be raised here)
        log.error("failed to process a record of %s; dead-lettering it", topic, exc_info=exc)
        rejection = Rejection("processing_error", f"{type(exc).__name__}: {exc}", value or b"")
        await self._dead_letter(rejection, topic, message)

    async def _dead_letter(self, rejection: Rejection, topic: str, message: Any) -> Any:
        """Send a rejected record to the dead-letter topic; returns the delivery future."""
        # A call that failed after the merger released it no longer knows its record: -1.
        partition = message.partition if message is not None else -1
        offset = message.offset if message is not None else -1
        value, headers, envelope = dead_letter(
            rejection, topic=topic, partition=partition, offset=offset
        )
        key = message.key if message is not None else None
        sent = await self.output.send(self.settings.topic_dead_letters, value, key=key,
                                      headers=headers)
        if self.sink is not None:
            self.sink.add_dead_letter(envelope)
        if rejection.kind == "processing_error":
            self.stats.failed += 1
        self._dead_lettered += 1
        # Name the first ones in full; after that a running count, so a flood of bad input
        # cannot flood the log too. Every one of them is in the topic and in ClickHouse.
        if self._dead_lettered <= LOG_FIRST_DEAD_LETTERS:
            log.warning(
                "dead-lettered %s[%d]@%d%s: %s", topic, partition, offset,
                "" if rejection.batch_index is None else f" #{rejection.batch_index}",
                rejection.reason,
            )
        elif self._dead_lettered % 1000 == 0:
            log.warning("%d records dead-lettered so far", self._dead_lettered)
        return sent

    async def _emit(self, alert: Alert) -> None:
        alert = stamp(alert)
        self.stats.alerts += 1
        await self.output.send(self.settings.topic_alerts, alert.model_dump_json().encode(),
                               key=alert.dedup_key.encode())
        if self.sink is not None:
            self.sink.add_alert(alert)
        log.info(
            "alert %s %s %s score=%.2f accounts=%d %s", alert.status, alert.severity,
            alert.dedup_key, alert.score, len(alert.accounts),
            "; ".join(r.detail for r in alert.reasons)[:500],
        )

    # -- account state: restored with its partition, snapshotted, evicted when idle ------

    async def _hold(self, assigned: list[int]) -> None:
        """Take up the state of newly assigned partitions before any of their calls is
        processed; let go of partitions no longer held."""
        assert self.store is not None
        store, loop = self.store, asyncio.get_running_loop()
        new = set(assigned) - self._held
        gone = self._held - set(assigned)
        if gone:  # normally done already when the partitions were revoked
            await self._release(gone)
        if not new:
            return
        restored = await loop.run_in_executor(self._store_executor, store.restore, new)
        self.stats.state_restored += sum(r.records for r in restored)
        self._held |= new
        if not self._shared_restored:
            value = store.shared(min(new))
            shared = None if value is None else decode_snapshot(value)
            if value is not None and shared is None:
                self.stats.snapshots_unreadable += 1
            if shared is not None:
                for key in DetectionEngine.shared_accounts(shared):
                    if self.engine.account_state(*key) is None:
                        self._load(key)
                self.engine.import_shared(shared)
                self.watermark = max(self.watermark, shared["watermark"])
            self._shared_restored = True
        # Accounts in an open episode come back now, so that their episodes can resolve
        # even if they never call again; the others at their next call.
        for partition in new:
            for stored_key, value in store.open_accounts(partition):
                account = split_account_key(stored_key)
                if self.engine.account_state(*account) is None and self._import(account, value):
                    self.stats.accounts_loaded += 1

    def _load(self, key: AccountKey) -> None:
        """Bring an account's state back into memory: unpack it if it is packed, else
        read its snapshot from the store, if the store has one."""
        assert self.store is not None
        stored_key = account_key(*key)
        value = self._packed.pop(stored_key, None)
        if value is not None:
            self._import(key, value)
            self.stats.accounts_unpacked += 1
            if stored_key in self._unwritten:  # in memory again, and still to be written
                self._unwritten.discard(stored_key)
                self._dirty.add(key)
            return
        partition = partition_for(key[1], self.settings.topic_partitions)
        value = self.store.get(partition, stored_key)
        if value is not None and self._import(key, value):
            self.stats.accounts_loaded += 1

    def _import(self, key: AccountKey, value: bytes) -> bool:
        """Take an account's snapshot into the models; False if it is unreadable."""
        state = decode_snapshot(value)
        if state is None:
            self.stats.snapshots_unreadable += 1
            return False
        account, link, share = state
        tenant_id, account_id = key
        self.engine.import_account(tenant_id, account_id, account)
        if link is not None:
            self.observer.import_account(account_id, link)
        if share is not None:
            self.suspicion.share.import_account(account_id, share)
        return True

    def _partition_of(self, stored_key: bytes) -> int:
        """The by-account partition of the account with this store key."""
        return partition_for(split_account_key(stored_key)[1], self.settings.topic_partitions)

    def _snapshot(self, key: AccountKey | bytes) -> tuple[int, bytes, bytes] | None:
        """(partition, store key, snapshot) of an account in memory: encoded if it is live,
        its packed bytes (given by store key) if it is packed; None if it is neither."""
        if isinstance(key, bytes):
            value = self._packed.get(key)
            if value is None:  # unpacked since: the account is live, and dirty again
                return None
            return self._partition_of(key), key, value
        tenant_id, account_id = key
        account = self.engine.account_state(tenant_id, account_id)
        if account is None:
            return None
        return (
            partition_for(account_id, self.settings.topic_partitions),
            account_key(tenant_id, account_id),
            encode_account(
                account,
                self.observer.export_account(account_id),
                self.suspicion.share.export_account(account_id),
            ),
        )

    async def _checkpoint(self, shared: bool = False, evict: bool = True) -> None:
        """Pack idle accounts and let those long idle and stored leave memory (when a
        sweep is due); then snapshot every account changed since the last checkpoint, and
        if `shared` the engine's shared models. Sweeping first, an idle account is packed
        however far the store is behind, and written from its packed bytes."""
        if self.store is None:
            return
        async with self._checkpoint_lock:
            if evict and (self.watermark >= self._next_eviction
                          or time.monotonic() >= self._next_sweep):
                self._sweep()
            # Under the drain lock: a drain adds the accounts it changes to the set it
            # found when it began, which must be the set this checkpoint takes or the
            # next one will (else an account could leave memory without being written).
            async with self._drain_lock:
                dirty: list[AccountKey | bytes] = [*self._dirty, *self._unwritten]
                self._dirty, self._unwritten = set(), set()
                self._writing = set(dirty)
            try:
                await self._write(dirty, shared)
            finally:
                self._writing = set()
            memory.trim()

    async def _write(self, dirty: list[AccountKey | bytes], shared: bool) -> None:
        """Snapshot and store the accounts a checkpoint took (and the shared models)."""
        store, loop = self.store, asyncio.get_running_loop()
        assert store is not None
        # In chunks, so that a checkpoint of many accounts holds little memory at once
        # and calls go on between chunks (an account changed meanwhile is dirty again).
        for start in range(0, max(len(dirty), 1), CHECKPOINT_CHUNK):
            chunk = dirty[start:start + CHECKPOINT_CHUNK]
            async with self._drain_lock:  # no call changes an account while it is copied
                records = [r for r in map(self._snapshot, chunk) if r is not None]
                held = sorted(self._held)
                if shared and held and start + CHECKPOINT_CHUNK >= len(dirty):
                    records.append((held[0], SHARED_KEY,
                                    encode_shared(self.engine.export_shared())))
            if not records:
                continue
            try:
                offsets = await loop.run_in_executor(self._store_executor, store.send,
                                                     records)
            except Exception as exc:  # keep the accounts dirty: the next checkpoint retries
                log.error("state checkpoint failed, will retry: %s", exc)
                for item in dirty[start:]:
                    if isinstance(item, bytes):
                        if item in self._packed:  # else unpacked since, and dirty
                            self._unwritten.add(item)
                    elif self.engine.account_state(*item) is not None:
                        self._dirty.add(item)
                return
            store.apply(records, offsets)
            self.stats.state_written += len(records)
            self._writing.difference_update(chunk)

    def _sweep(self) -> None:
        """Pack and evict idle accounts now, and set when the next sweep is due."""
        self._evict_idle()
        self._next_eviction = next_boundary(self.watermark, EVICT_EVERY_S)
        self._next_sweep = time.monotonic() + SWEEP_EVERY_S

    def _evict_idle(self) -> None:
        """Accounts idle for `state_pack_s` are packed, and the longest idle for
        `QUIET_S` too while more than `state_live_max` would stay live; if changed since
        their snapshot, the next checkpoint writes the packed bytes. Accounts idle for
        `state_idle_s` whose snapshot is written leave memory (the store has them).

        Packing does not wait for the store: when snapshots fall behind (a replay of new
        accounts), the accounts held as objects still follow event time."""
        settings = self.settings
        before = self.watermark - settings.state_idle_s
        dirty, packed, unwritten = self._dirty, self._packed, self._unwritten
        writing, stats, left = self._writing, self.stats, 0
        for key in self.engine.idle_accounts(
            self.watermark - settings.state_pack_s, keep=settings.state_live_max,
            quiet_ts=self.watermark - QUIET_S,
        ):
            record = self._snapshot(key)
            self._forget(key)
            left += 1
            if record is None:
                continue
            if key in dirty or key in writing:  # not written yet: it stays packed until it is
                dirty.discard(key)
                unwritten.add(record[1])
            elif last_call_ts(record[2]) < before:
                stats.accounts_evicted += 1
                continue
            packed[record[1]] = record[2]
            stats.accounts_packed += 1
        # Every packed account is looked at, not at every sweep (at 10^6 it takes 0.3 s);
        # those found long idle but not written yet (a replay outrunning the store) are
        # looked at again at every sweep, to leave as soon as they are written.
        looked: Iterable[tuple[bytes, bytes | None]]
        if self.watermark >= self._next_stale:
            looked = packed.items()
            self._next_stale = next_boundary(self.watermark, STALE_EVERY_S)
        else:
            looked = [(stored, packed.get(stored)) for stored in self._stale_unwritten]
        stale: list[bytes] = []
        waiting: set[bytes] = set()
        for stored, value in looked:
            if value is None or last_call_ts(value) >= before:
                continue  # unpacked since, or not idle long enough
            if stored in unwritten or stored in writing:
                waiting.add(stored)
            else:
                stale.append(stored)
        self._stale_unwritten = waiting
        for stored in stale:
            del packed[stored]
        stats.accounts_evicted += len(stale)
        if stale:
            self._packed = dict(packed)  # a dict keeps its table when emptied: rebuild it
        if left > self.engine.accounts_tracked:  # most of the live accounts went
            self.engine.shrink()
            self.observer.shrink()
            self.suspicion.share.shrink()

    def _forget(self, key: AccountKey) -> None:
        """Drop an account's state from memory: engine, link observer, share suspicion."""
        tenant_id, account_id = key
        self.engine.evict_account(tenant_id, account_id)
        self.observer.forget_account(account_id)
        self.suspicion.share.forget_account(account_id)

    async def _checkpoint_timer(self) -> None:
        now = time.monotonic()
        shared = now >= self._next_shared
        if shared:
            self._next_shared = now + SHARED_EVERY_S
        await self._checkpoint(shared=shared)

    async def _on_partitions_revoked(self, app: faust.App, revoked: set[Any], **_: Any) -> None:
        """Before partitions move: process what is buffered, snapshot, let go of them."""
        name = self.settings.internal_topic_by_account
        links = self.settings.internal_topic_link_observations
        for tp in revoked:
            if tp.topic == links:  # its keys' next observations go to another worker
                self._link_latest.pop(tp.partition, None)
        gone = {tp.partition for tp in revoked if tp.topic == name} & self._held
        if gone:
            await self._release(gone)

    async def _release(self, partitions: set[int]) -> None:
        assert self.store is not None
        count = self.settings.topic_partitions
        await self._drain(everything=True)
        for _ in range(RELEASE_CHECKPOINTS):
            await self._checkpoint(shared=True, evict=False)
            # A drain may have changed accounts of these partitions while the snapshots
            # were written: they go too, before the state leaves (nothing awaits between
            # this check and the forgetting below).
            if not any(partition_for(account, count) in partitions
                       for _, account in self._dirty) and not any(
                           self._partition_of(key) in partitions for key in self._unwritten):
                break
        else:
            log.warning("partitions %s let go with accounts changed since their last snapshot",
                        sorted(partitions))
        for key in self.engine.accounts():
            if partition_for(key[1], count) in partitions:
                self._forget(key)
        self._packed = {
            key: value for key, value in self._packed.items()
            if self._partition_of(key) not in partitions
        }
        self._unwritten &= self._packed.keys()
        self._stale_unwritten &= self._packed.keys()
        self.store.close_partitions(partitions)
        self._held -= partitions
        log.info("let go of the account state of partitions %s", sorted(partitions))

    # -- ClickHouse -----------------------------------------------------------------------

    def open_clickhouse(self) -> None:
        """Connect, apply the DDL, and start buffering rows. Call before the worker starts.

        The client lives on the sink's one thread, which every later ClickHouse call uses.
        """
        client = self._executor.submit(connect, self.settings).result()
        version = self._executor.submit(
            migrate, client, self.settings.clickhouse_database
        ).result()
        self._executor.submit(prepare_inserts).result()
        self._client = client
        self.sink = ClickHouseSink(client, self.settings.clickhouse_database)
        log.info(
            "ClickHouse %s ready (schema version %d)",
            redact_url(self.settings.resolved_clickhouse_url), version,
        )
        self._write_registry()

    async def _flush(self) -> None:
        if self.sink is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.sink.flush)
        except Exception as exc:  # keep running: the rows stay buffered for the next flush
            log.error("ClickHouse flush failed, will retry: %s", exc)

    async def _quiet_library_loggers(self) -> None:
        """Hold the Kafka libraries' loggers to the worker's level: they build debug records
        on every send otherwise (3-5% of a worker's time, bench/PROFILE.md)."""
        level = logging.getLevelName(self.settings.log_level.replace("warn", "warning").upper())
        for name in ("aiokafka", "faust", "mode"):
            logging.getLogger(name).setLevel(max(level, logging.INFO))

    async def _flush_timer(self) -> None:
        await self._flush()

    async def _on_before_shutdown(self, app: faust.App, **_: Any) -> None:
        # Streams are drained by now: what is buffered is all there will be.
        await self._drain(everything=True)
        if self.store is not None:
            await self._checkpoint(shared=True, evict=False)
            self.store.close()
        try:
            await self.output.flush()
        except KafkaException:  # each record that failed is logged; ClickHouse still flushes
            log.error("stopping with records the worker wrote not all delivered")
        await self._flush()
        if self.sink is not None and self.sink.pending:
            log.error("ClickHouse rows still pending at shutdown: %d", self.sink.pending)
        self._registry_path.unlink(missing_ok=True)
        log.info(
            "stopped: %d records in, %d valid, %d rejected, %d alerts, rows written %s",
            self.stats.records_in, self.stats.events_valid, self.stats.rejected,
            self.stats.alerts, self.sink.rows_written if self.sink else {},
        )

    # -- HTTP: health and SQL routed to this process's embedded engine --------------------

    @property
    def _registry_path(self) -> Path:
        return self.settings.state_dir / "worker.json"

    def _write_registry(self) -> None:
        """Tell `distillwatch sql` that this process holds the embedded engine, and where."""
        self._registry_path.parent.mkdir(parents=True, exist_ok=True)
        self._registry_path.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "url": f"http://{self.settings.web_host}:{self.settings.web_port}",
                    "clickhouse": redact_url(self.settings.resolved_clickhouse_url),
                }
            )
        )

    def assigned_partitions(self, topic: str | None = None) -> list[int]:
        """Partitions of `topic` this worker holds; by default of the by-account topic (its
        accounts' state)."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # not started, or rebalancing
            return []
        name = topic or self.settings.internal_topic_by_account
        return sorted(tp.partition for tp in assignment if tp.topic == name)

    def input_partitions(self) -> list[int] | None:
        """Partitions of the input topic this worker reads (None: a rebalance is under
        way, or the input consumer has not joined yet)."""
        assigned = self._input_assignment
        return None if assigned is None else sorted(assigned)

    def lagging_partitions(self) -> list[int]:
        """Partitions of the by-account topic with records this worker has not taken yet
        (the merger waits for them, however long they are silent)."""
        return [p for p, behind in self._records_behind().items() if behind > 0]

    def by_account_lag(self) -> int:
        """By-account records not yet taken, over the partitions this worker holds (a
        partition with nothing taken yet, or whose end is not known yet, counts none)."""
        return sum(self._records_behind().values())

    def _records_behind(self) -> dict[int, int]:
        """By-account partition held -> records after the last one taken, where both its
        end and the last taken are known; none while they cannot be read."""
        name = self.settings.internal_topic_by_account
        try:
            consumer = self.app.consumer
            assignment = consumer.assignment()
            taken = self._taken
            behind = {}
            for tp in assignment:
                if tp.topic == name:
                    end = consumer.highwater(tp)
                    position = _after(taken.get((name, tp.partition)))
                    # (the by-account topic has no transaction markers for an end to
                    # count: Faust writes it without transactions)
                    if end is not None and position is not None and position < end:
                        behind[tp.partition] = end - position
            return behind
        except (ConsumerNotStarted, AssertionError):
            # Not started, or a partition let go between the assignment and its highwater
            # (aiokafka asserts that it is assigned): none known this time.
            return {}
        except Exception:
            # Anything else is a fault, said once; the merger then releases by its
            # wall-clock idle rule alone rather than stopping the drain.
            if not self._lag_fault_logged:
                self._lag_fault_logged = True
                log.exception("cannot read the by-account partitions' highwaters; event-time"
                              " order falls back to the idle rule")
            return {}

    def health(self) -> dict[str, Any]:
        s = self.stats
        return {
            "partitions": self.assigned_partitions(),
            "input_partitions": self.input_partitions(),
            "records_in": s.records_in,
            # of them, read by the Python edge: the Rust reader declined them (a rejection
            # among their events, or input it is not sure to read as pydantic does)
            "records_by_python_edge": self.edge.by_python,
            "events_valid": s.events_valid,
            "rejected": s.rejected,
            "events_detected": s.events_detected,
            "alerts": s.alerts,
            "verdicts": s.verdicts,
            "redelivered": s.redelivered,
            "failed": s.failed,
            "state_restored": s.state_restored,
            "state_written": s.state_written,
            "accounts_loaded": s.accounts_loaded,
            "accounts_packed": s.accounts_packed,
            "accounts_unpacked": s.accounts_unpacked,
            "accounts_evicted": s.accounts_evicted,
            "snapshots_unreadable": s.snapshots_unreadable,
            # Accounts whose state this worker holds in memory: live, or packed.
            "accounts_tracked": self.engine.accounts_tracked + len(self._packed),
            "accounts_live": self.engine.accounts_tracked,
            "accounts_held_packed": len(self._packed),
            "open_campaigns": len(self.clusters.open_campaigns),
            "watermark": self.watermark,
            "clickhouse_rows_written": dict(self.sink.rows_written) if self.sink else {},
            "clickhouse_pending": self.sink.pending if self.sink else None,
        }

    def memory_report(self) -> dict[str, Any]:
        """Where this worker's memory is: the process (bytes), the accounts each model
        holds in memory, and what RocksDB holds for the stored ones (bytes)."""
        return {
            "process": memory.process_memory(),
            "accounts": {
                "engine": self.engine.accounts_tracked,
                "link_observer": len(self.observer),
                "share_suspicion": len(self.suspicion.share),
                "dirty": len(self._dirty) + len(self._unwritten),  # waiting for a snapshot
                "packed": len(self._packed),
                "packed_unwritten": len(self._unwritten),
            },
            "packed_bytes": sum(map(len, self._packed.values())),
            # Linking state is held per link key and per linked account, not per account
            # snapshot: it stays in memory (within its windows) whatever is packed.
            "linking": {
                "link_keys": len(self.evidence),
                "link_members": self.evidence.members_tracked,
                "campaign_accounts": self.clusters.accounts_tracked,
            },
            "merger_calls": len(self.merger),
            "input_calls_held": len(self.input_order),
            "rocksdb": self.store.memory() if self.store is not None else {},
        }

    async def _sql(self, web: Any, request: Any) -> Any:
        """Run a read-only query on this worker's ClickHouse client for `distillwatch sql`."""
        try:
            body = json.loads(await web.read_request_content(request))
        except ValueError:
            body = None
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query.strip():
            return web.json({"error": "body must be {\"query\": \"SELECT ...\"}"}, status=400)
        client = self._client
        if client is None:
            return web.json({"error": "ClickHouse is not open yet"}, status=503)
        loop = asyncio.get_running_loop()
        try:
            columns, rows = await loop.run_in_executor(
                self._executor, lambda: query_rows(client, query, readonly=True)
            )
        except Exception as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.bytes(
            json.dumps({"columns": columns, "rows": rows}, default=str).encode(),
            content_type="application/json",
        )
