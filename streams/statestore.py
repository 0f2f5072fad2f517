"""Account state on disk and in a changelog topic, so a worker restarts into its state.

The detection engine keeps its accounts in memory. A worker snapshots the accounts it
changed every few seconds (wall clock) and writes each snapshot twice:

- to a compacted Kafka topic, `<app>-account-state-changelog`, keyed by account and in
  the partition of the account's by-account partition: the durable copy, which follows
  the partition to whichever worker holds it next;
- to a RocksDB database per partition (rocksdict) under `<state_dir>/accounts/`: the
  local copy, together with the changelog offset it is complete up to.

When a worker is given a partition, it replays only the changelog records past that
offset into the database (everything, on a new machine), then loads accounts lazily:
an account's snapshot is read back into memory at its next call. Accounts idle for a
while leave memory once their snapshot is written, so the memory of a worker follows
the accounts that are active, not every account it has ever seen.

A snapshot is one byte of format version, one byte saying whether the account has an
open alert episode (such accounts are indexed, so a restarted worker loads them at once
and can resolve their episodes), then the account's state packed by `models.packing`
(version 3; version 2, the pickled state, is still read). A snapshot of another format
version is not loaded: the account starts afresh, and the worker counts it. The same
bytes are what a worker keeps in memory of an account idle for a few minutes.

The engine's shared models (cohorts, feedback, tenant limits) go under one more key in
the lowest partition the worker holds, and are restored from there on start-up.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import time
from array import array
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from models import packing
from models.engine import AccountState
from streams.errors import StreamsError
from streams.kafka import confluent_config
from streams.settings import Settings

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 3  # 3: accounts packed by models.packing
PICKLED_VERSION = 2  # 2: pickled state (engine and behaviour states as msgspec structs)
OFFSET_KEY = b"\x00changelog-offset"  # local only: the changelog offset the database holds
SHARED_KEY = b"\x00engine-shared"  # the engine's shared models (changelog and local)
_OPEN = b"\x01"  # local index: _OPEN + account key for accounts with an open episode
_ACCOUNT_SEP = "\x1f"
_PRODUCE_TIMEOUT_S = 60.0
# RocksDB memory per partition database: memtables up to 16 MiB in all, an 8 MiB block
# cache. RocksDB's defaults (64 MiB memtables, two of them) would cost more than the
# accounts that leave memory for it.
_MEMTABLE_BYTES = 8 << 20
_MEMTABLES_TOTAL_BYTES = 16 << 20
_BLOCK_CACHE_BYTES = 8 << 20
_MEMORY_PROPERTIES = {  # what `AccountStore.memory` reports, and the RocksDB property read
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "block_cache": "rocksdb.block-cache-usage",
    "table_readers": "rocksdb.estimate-table-readers-mem",
}


class StateStoreError(StreamsError):
    """The state store could not write or restore a snapshot."""


def account_key(tenant_id: str, account_id: str) -> bytes:
    """The store and changelog key of an account."""
    return f"{tenant_id}{_ACCOUNT_SEP}{account_id}".encode()


def split_account_key(key: bytes) -> tuple[str, str]:
    tenant_id, _, account_id = key.decode().partition(_ACCOUNT_SEP)
    return tenant_id, account_id


def encode_account(
    account: AccountState, link: array[int] | None, share: array[float] | None
) -> bytes:
    """One account's snapshot: version, open-episode flag, packed state."""
    head = bytes((SNAPSHOT_VERSION, 1 if account.episode is not None else 0))
    return head + packing.pack(account, link, share)


def encode_shared(state: dict[str, Any]) -> bytes:
    """The snapshot of the engine's shared models: version 2, no flag, pickled."""
    return bytes((PICKLED_VERSION, 0)) + pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def decode_snapshot(value: bytes) -> Any | None:
    """The state of a snapshot ((account, link, share) for an account, a dict for the
    shared models), or None if it is of another format version."""
    if len(value) < 2:
        return None
    if value[0] == SNAPSHOT_VERSION:
        return packing.unpack(memoryview(value)[2:])
    if value[0] == PICKLED_VERSION:
        return pickle.loads(value[2:])
    return None


def last_call_ts(value: bytes) -> float:
    """Event time of the last call of the account of a version-3 snapshot."""
    return packing.last_call_ts(value, 2)


@dataclass(frozen=True)
class Restored:
    """What restoring one partition did."""

    partition: int
    records: int  # changelog records replayed into the local database
    from_offset: int
    seconds: float


class AccountStore:
    """The worker's account snapshots: RocksDB per partition, and the changelog topic.

    `restore` and `send` block on Kafka: call them off the event loop. The database
    methods (`get`, `apply`, `open_accounts`, `shared`) are quick local reads and writes.
    """

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.internal_topic_account_state
        self.directory = settings.state_dir / "accounts"
        self._settings = settings
        self._dbs: dict[int, Rdict] = {}
        self._producer: Producer | None = None

    # -- restore --------------------------------------------------------------------------

    def restore(self, partitions: Iterable[int]) -> list[Restored]:
        """Open each partition's database and bring it up to the end of its changelog."""
        done = []
        for partition in sorted(partitions):
            if partition not in self._dbs:
                done.append(self._restore(partition))
        return done

    def _open(self, partition: int) -> Rdict:
        path = self.directory / str(partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.set_write_buffer_size(_MEMTABLE_BYTES)
        options.set_max_write_buffer_number(2)
        options.set_db_write_buffer_size(_MEMTABLES_TOTAL_BYTES)
        table = BlockBasedOptions()
        table.set_block_cache(Cache(_BLOCK_CACHE_BYTES))
        table.set_bloom_filter(10, False)  # most reads are of accounts never stored
        options.set_block_based_table_factory(table)
        return Rdict(str(path), options=options)

    def _restore(self, partition: int) -> Restored:
        started = time.monotonic()
        db = self._open(partition)
        held = db.get(OFFSET_KEY)
        next_offset = int(held) + 1 if held is not None else 0
        consumer = Consumer(confluent_config(
            self._settings,
            **{
                "group.id": f"{self._settings.app_id}-state-restore",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            },
        ))
        records = 0
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=30.0
            )
            start = max(next_offset, low)
            if start > next_offset and held is not None:
                # Compaction or retention removed offsets this database never saw:
                # what it holds may be stale, so rebuild it from the changelog.
                log.warning("partition %d: changelog starts at %d past the local %d; rebuilding",
                            partition, low, next_offset)
                db.close()
                shutil.rmtree(self.directory / str(partition), ignore_errors=True)
                db = self._open(partition)
            if start < high:
                consumer.assign([TopicPartition(self.topic, partition, start)])
                position = start
                while position < high:
                    messages = consumer.consume(num_messages=10_000, timeout=5.0)
                    batch = WriteBatch(raw_mode=True)
                    for message in messages:
                        error = message.error()
                        if error is not None:
                            if error.code() == KafkaError._PARTITION_EOF:
                                position = high
                                continue
                            raise StateStoreError(f"restoring {self.topic}[{partition}]: {error}")
                        _put(batch, message.key(), message.value())
                        position = int(message.offset() or 0) + 1
                        records += 1
                    batch.put(OFFSET_KEY, str(position - 1).encode())
                    db.write(batch)
        finally:
            consumer.close()
        self._dbs[partition] = db
        restored = Restored(partition, records, start, time.monotonic() - started)
        log.info("state of partition %d: %d changelog records replayed from offset %d in %.1fs",
                 partition, records, start, restored.seconds)
        return restored

    # -- reads ----------------------------------------------------------------------------

    def get(self, partition: int, key: bytes) -> bytes | None:
        db = self._dbs.get(partition)
        value = None if db is None else db.get(key)
        return value if isinstance(value, bytes) else None

    def shared(self, partition: int) -> bytes | None:
        return self.get(partition, SHARED_KEY)

    def open_accounts(self, partition: int) -> list[tuple[bytes, bytes]]:
        """(key, snapshot) of every account of the partition with an open episode."""
        db = self._dbs.get(partition)
        if db is None:
            return []
        out = []
        for index_key, _ in db.items(from_key=_OPEN):
            if not (isinstance(index_key, bytes) and index_key.startswith(_OPEN)):
                break
            key = index_key[len(_OPEN):]
            value = db.get(key)
            if isinstance(value, bytes):
                out.append((key, value))
        return out

    # -- writes ---------------------------------------------------------------------------

    def send(self, records: list[tuple[int, bytes, bytes]]) -> dict[int, int]:
        """Write (partition, key, snapshot) records to the changelog and wait for them;
        returns the highest offset written per partition."""
        if self._producer is None:
            self._producer = Producer(confluent_config(
                self._settings,
                **{
                    "linger.ms": 20,
                    "compression.type": "lz4",
                    "message.max.bytes": 16 * 1024 * 1024,
                    "queue.buffering.max.messages": 1_000_000,
                    "enable.idempotence": True,
                },
            ))
        producer = self._producer
        offsets: dict[int, int] = {}
        errors: list[str] = []

        def delivered(err: Any, message: Any) -> None:
            if err is not None:
                errors.append(str(err))
                return
            partition, offset = message.partition(), message.offset()
            if offset > offsets.get(partition, -1):
                offsets[partition] = offset

        for partition, key, value in records:
            while True:
                try:
                    producer.produce(self.topic, value=value, key=key, partition=partition,
                                     on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        left = producer.flush(_PRODUCE_TIMEOUT_S)
        if left or errors:
            raise StateStoreError(
                f"{left} state snapshots undelivered, {len(errors)} failed"
                + (f" (first: {errors[0]})" if errors else "")
            )
        return offsets

    def apply(self, records: list[tuple[int, bytes, bytes]], offsets: dict[int, int]) -> None:
        """Write records `send` delivered into the local databases, with their offsets."""
        batches: dict[int, WriteBatch] = defaultdict(lambda: WriteBatch(raw_mode=True))
        for partition, key, value in records:
            if partition in self._dbs:
                _put(batches[partition], key, value)
        for partition, batch in batches.items():
            if partition in offsets:
                batch.put(OFFSET_KEY, str(offsets[partition]).encode())
            self._dbs[partition].write(batch)

    def memory(self) -> dict[str, int]:
        """Bytes RocksDB holds in memory for this worker's partitions: memtables, block
        caches and table readers (indexes and Bloom filters), summed over partitions."""
        totals = dict.fromkeys(_MEMORY_PROPERTIES, 0)
        for db in self._dbs.values():
            for name, prop in _MEMORY_PROPERTIES.items():
                totals[name] += db.property_int_value(prop) or 0
        return totals

    def close_partitions(self, partitions: Iterable[int]) -> None:
        """Close the databases of partitions this worker no longer holds (files stay)."""
        for partition in partitions:
            db = self._dbs.pop(partition, None)
            if db is not None:
                db.close()

    def close(self) -> None:
        self.close_partitions(list(self._dbs))
        if self._producer is not None:
            self._producer.flush(_PRODUCE_TIMEOUT_S)


def _put(batch: WriteBatch, key: bytes | None, value: bytes | None) -> None:
    if key is None:
        return
    if value is None:
        batch.delete(key)
        batch.delete(_OPEN + key)
        return
    batch.put(key, value)
    if key == SHARED_KEY:
        return
    if len(value) > 1 and value[1] == 1:
        batch.put(_OPEN + key, b"")
    else:
        batch.delete(_OPEN + key)

