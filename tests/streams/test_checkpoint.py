"""A worker's account bookkeeping between drains and state checkpoints.

The store here is an in-memory stand-in for `AccountStore` (RocksDB and the changelog are
tested against the real broker in tests/integration/test_restart.py); what is under test
is which accounts the worker snapshots and which it may evict, while a drain and a
checkpoint interleave on the event loop.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import Any

import pytest

from models.records import ApiCall
from streams import pipeline as pipeline_module
from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.statestore import SHARED_KEY, split_account_key


class MemoryStore:
    """Stores snapshots in a dict; `send` acknowledges every record at once."""

    def __init__(self) -> None:
        self.snapshots: dict[bytes, bytes] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.snapshots.get(key)

    def send(self, records: list[tuple[int, bytes, bytes]]) -> dict[int, int]:
        return {partition: 0 for partition, _, _ in records}

    def apply(self, records: list[tuple[int, bytes, bytes]], offsets: dict[int, int]) -> None:
        for _, key, value in records:
            self.snapshots[key] = value

    def memory(self) -> dict[str, int]:
        return {}

    def close_partitions(self, partitions: object) -> None:
        pass


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """A pipeline whose Kafka sends do nothing and whose first call raises an alert, whose
    sending waits for `worker.alert_sent` to be set: its drain stops after the first
    account until the test lets it go on."""
    pipeline = Pipeline(Settings(state_dir=tmp_path, clickhouse_url=None))
    store = MemoryStore()
    pipeline.store = store  # type: ignore[assignment]
    pipeline._next_eviction = pipeline._next_tick = math.inf  # no tick, no eviction task
    sent = pipeline.alert_sent = asyncio.Event()  # type: ignore[attr-defined]

    async def emit(alert: object) -> None:
        await sent.wait()

    async def send_nothing(*_: Any) -> list[Any]:
        return []

    process = pipeline.engine.process
    first = True

    def process_alerting_first(call: ApiCall) -> Any:
        nonlocal first
        alerts = process(call)
        if first:
            first = False
            return ["alert"]
        return alerts

    monkeypatch.setattr(pipeline, "_emit", emit)
    monkeypatch.setattr(pipeline.engine, "process", process_alerting_first)
    monkeypatch.setattr(pipeline_module, "_send_chunks", send_nothing)
    return pipeline


def calls(accounts: int) -> list[ApiCall]:
    return [ApiCall(f"e{i}", 1_800_000_000.0 + i, "org", f"key_{i}", "m", 200, 10, 100)
            for i in range(accounts)]


async def drain_with_a_checkpoint_inside(worker: Pipeline) -> None:
    """A drain of ten new accounts, and a checkpoint that starts while the drain waits for
    the first account's alert to be sent."""
    worker.merger.add(0, calls(10), now=0.0)
    drain = asyncio.ensure_future(worker._drain(everything=True))
    await asyncio.sleep(0)  # the drain has processed key_0 and waits
    checkpoint = asyncio.ensure_future(worker._checkpoint(evict=False))
    for _ in range(3):
        await asyncio.sleep(0)  # the checkpoint runs as far as it can
    worker.alert_sent.set()  # type: ignore[attr-defined]
    await asyncio.gather(drain, checkpoint)


def test_a_checkpoint_during_a_drain_loses_no_account(worker: Pipeline) -> None:
    async def run() -> None:
        await drain_with_a_checkpoint_inside(worker)

    asyncio.run(run())
    assert worker.store is not None
    stored = {split_account_key(key)[1] for key in worker.store.snapshots}  # type: ignore[attr-defined]
    waiting = {account for _, account in worker._dirty}
    assert len(worker.engine.accounts()) == 10
    # Every account the drain changed is stored or waits for the next checkpoint: an
    # account in neither could leave memory without its state ever being written.
    assert stored | waiting == {f"key_{i}" for i in range(10)}


def test_idle_accounts_leave_memory_only_once_stored(worker: Pipeline) -> None:
    async def run() -> None:
        await drain_with_a_checkpoint_inside(worker)
        worker.watermark += 10 * worker.settings.state_idle_s  # every account is idle now
        worker._next_eviction = -math.inf
        await worker._checkpoint()

    asyncio.run(run())
    assert worker.store is not None
    stored = {split_account_key(key)[1] for key in worker.store.snapshots}  # type: ignore[attr-defined]
    assert worker.stats.accounts_evicted == 10 and worker.engine.accounts() == []
    assert stored == {f"key_{i}" for i in range(10)}


def test_detect_waits_for_the_store_when_too_many_accounts_wait(
    worker: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "DIRTY_MAX", 10)
    worker.alert_sent.set()  # type: ignore[attr-defined]

    async def run() -> None:
        worker.merger.add(0, calls(10), now=0.0)
        await worker._drain(everything=True)
        await worker._keep_up_with_the_store()  # 10: not more than DIRTY_MAX
        assert len(worker._dirty) == 10
        worker.merger.add(0, calls(11)[10:], now=0.0)
        await worker._drain(everything=True)
        await worker._keep_up_with_the_store()

    asyncio.run(run())
    assert worker._dirty == set()
    assert len(worker.store.snapshots) == 11  # type: ignore[union-attr]


def test_accounts_changed_while_their_partition_is_let_go_are_stored(
    worker: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker.alert_sent.set()  # type: ignore[attr-defined]
    worker._held = set(range(worker.settings.topic_partitions))
    store = worker.store
    assert isinstance(store, MemoryStore)
    writing = threading.Event()  # the release's checkpoint is writing
    go_on = threading.Event()
    send = store.send

    def slow_send(records: list[tuple[int, bytes, bytes]]) -> dict[int, int]:
        writing.set()
        go_on.wait(10)
        return send(records)

    monkeypatch.setattr(store, "send", slow_send)

    async def run() -> None:
        worker.merger.add(0, calls(5), now=0.0)
        release = asyncio.ensure_future(worker._release(set(worker._held)))
        while not writing.is_set():
            await asyncio.sleep(0.01)
        # More calls are drained while the snapshots are on their way.
        worker.merger.add(0, calls(10)[5:], now=0.0)
        await worker._drain(everything=True)
        go_on.set()
        await release

    asyncio.run(run())
    assert worker.engine.accounts() == []  # every partition let go
    stored = {split_account_key(key)[1] for key in store.snapshots if key != SHARED_KEY}
    assert stored == {f"key_{i}" for i in range(10)}
