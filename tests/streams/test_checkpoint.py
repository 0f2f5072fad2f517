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
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from models.linking.observe import LinkObservation
from models.records import ApiCall
from schemas.feedback import AnalystVerdict
from streams import pipeline as pipeline_module
from streams.internal import decode_observations, partition_for
from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.sinks import ClickHouseSink
from streams.statestore import SHARED_KEY, split_account_key
from tests.models.linking.runs import simulated


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

    async def send_nothing(*_: Any, **__: Any) -> None:
        return None

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
    monkeypatch.setattr(pipeline.output, "send", send_nothing)  # the link observations
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
        # The first sweep packs those not yet stored (the checkpoint then writes them);
        # the next lets every account go.
        for _ in range(2):
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


def call_of(account: str, ts: float) -> ApiCall:
    return ApiCall(f"{account}@{ts}", ts, "org", account, "m", 200, 10, 100)


LATER = 1_800_000_000.0 + 2_000.0  # past the ten accounts' cohort epoch and the pack delay


async def pack_ten(worker: Pipeline) -> None:
    """Ten accounts called and stored; then a call of another account 2,000 s later moves
    event time on, and a sweep finds the ten idle."""
    worker.alert_sent.set()  # type: ignore[attr-defined]
    worker.merger.add(0, calls(10), now=0.0)
    await worker._drain(everything=True)
    worker.merger.add(0, [call_of("key_late", LATER)], now=0.0)
    await worker._drain(everything=True)
    worker._next_eviction = -math.inf
    await worker._checkpoint()


def test_idle_stored_accounts_are_kept_packed_as_their_snapshot(
    worker: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    shrunk: list[str] = []
    for name, model in (("engine", worker.engine), ("observer", worker.observer),
                        ("share", worker.suspicion.share)):
        monkeypatch.setattr(model, "shrink", lambda name=name: shrunk.append(name))
    asyncio.run(pack_ten(worker))
    assert shrunk == ["engine", "observer", "share"]  # ten of eleven left: tables rebuilt
    store = worker.store
    assert isinstance(store, MemoryStore)
    assert worker.stats.accounts_packed == 10 and worker.stats.accounts_evicted == 0
    assert worker.engine.accounts() == [("org", "key_late")]
    assert len(worker.observer) == len(worker.suspicion.share) == 1
    # What is kept is the stored snapshot, byte for byte.
    assert worker._packed == {
        key: value for key, value in store.snapshots.items() if key != b"org\x1fkey_late"
    }
    assert worker.memory_report()["accounts"]["packed"] == 10


def test_a_sweep_packs_the_longest_idle_while_more_accounts_are_live_than_the_cap(
    worker: Pipeline,
) -> None:
    worker.settings = worker.settings.model_copy(update={"state_live_max": 4})
    first = calls(10)  # key_0 ... key_9, a second apart

    async def run() -> None:
        worker.alert_sent.set()  # type: ignore[attr-defined]
        worker.merger.add(0, first, now=0.0)
        await worker._drain(everything=True)
        assert not any(worker.engine.awaits_cohort("org", c.account_id) for c in first)
        # Two minutes on: all idle for less than the pack delay, key_0 ... key_9 quiet.
        worker.merger.add(0, [call_of("key_late", first[-1].ts + 120)], now=0.0)
        await worker._drain(everything=True)
        worker._next_eviction = -math.inf
        await worker._checkpoint()

    asyncio.run(run())
    # Eleven live, four to stay: the seven longest idle are packed, the newest stay.
    assert sorted(account for _, account in worker.engine.accounts()) == [
        "key_7", "key_8", "key_9", "key_late"
    ]
    assert sorted(worker._packed) == sorted(f"org\x1fkey_{i}".encode() for i in range(7))
    assert worker.stats.accounts_packed == 7 and worker.stats.accounts_evicted == 0
    store = worker.store
    assert isinstance(store, MemoryStore)
    assert all(store.snapshots[key] == value for key, value in worker._packed.items())


def test_a_packed_account_is_unpacked_at_its_next_call_without_reading_the_store(
    worker: Pipeline,
) -> None:
    async def run() -> None:
        await pack_ten(worker)
        assert worker.store is not None
        worker.store.snapshots.clear()  # type: ignore[attr-defined]
        worker.merger.add(0, [call_of("key_3", LATER + 1)], now=0.0)
        await worker._drain(everything=True)
        account = worker.engine.account_state("org", "key_3")
        assert account is not None and account.detector_states[0].last_ts == LATER + 1

    asyncio.run(run())
    assert worker.stats.accounts_unpacked == 1 and worker.stats.accounts_loaded == 0
    assert b"org\x1fkey_3" not in worker._packed and len(worker._packed) == 9
    assert ("org", "key_3") in worker._dirty
    assert worker.observer.export_account("key_3") is not None


def test_packed_accounts_leave_memory_once_idle_for_the_idle_time(worker: Pipeline) -> None:
    async def run() -> None:
        await pack_ten(worker)
        worker.watermark = LATER + worker.settings.state_idle_s + 1
        worker._next_eviction = -math.inf
        await worker._checkpoint()

    asyncio.run(run())
    assert worker._packed == {}
    # The ten packed ones, and key_late (stored, idle as long) straight from the models.
    assert worker.stats.accounts_evicted == 11 and worker.engine.accounts() == []


def test_a_verdict_on_a_packed_account_is_applied_and_stored_again(worker: Pipeline) -> None:
    verdict = AnalystVerdict(
        schema_version=1, tenant_id="org", account_id="key_4", verdict="benign",
        analyst="a@example.com", ts=datetime.fromtimestamp(LATER + 5, UTC),
    )

    async def run() -> None:
        await pack_ten(worker)
        worker._apply_verdict(verdict)

    asyncio.run(run())
    assert worker.stats.accounts_unpacked == 1
    assert worker.engine.account_state("org", "key_4") is not None
    assert ("org", "key_4") in worker._dirty  # its next snapshot has the verdict


def test_a_partition_let_go_takes_its_packed_accounts(worker: Pipeline) -> None:
    count = worker.settings.topic_partitions

    async def run() -> None:
        await pack_ten(worker)
        worker._held = set(range(count))
        await worker._release({partition_for("key_1", count)})

    asyncio.run(run())
    kept = {split_account_key(key)[1] for key in worker._packed}
    expected = {f"key_{i}" for i in range(10)
                if partition_for(f"key_{i}", count) != partition_for("key_1", count)}
    assert kept == expected and 0 < len(kept) < 10


async def pack_ten_unwritten(worker: Pipeline) -> None:
    """Ten accounts called, then a sweep (no checkpoint) after event time moved on: they
    are packed before any snapshot of them is written."""
    worker.alert_sent.set()  # type: ignore[attr-defined]
    worker.merger.add(0, calls(10), now=0.0)
    await worker._drain(everything=True)
    worker.merger.add(0, [call_of("key_late", LATER)], now=0.0)
    await worker._drain(everything=True)
    worker._evict_idle()


def test_accounts_not_yet_written_are_packed_and_written_from_their_packed_bytes(
    worker: Pipeline,
) -> None:
    store = worker.store
    assert isinstance(store, MemoryStore)

    async def run() -> None:
        await pack_ten_unwritten(worker)
        assert store.snapshots == {}
        assert len(worker._unwritten) == 10 and worker._dirty == {("org", "key_late")}
        packed = dict(worker._packed)
        await worker._checkpoint(evict=False)
        assert {k: v for k, v in store.snapshots.items() if k in packed} == packed

    asyncio.run(run())
    assert worker._unwritten == set() and worker._dirty == set()
    assert len(store.snapshots) == 11  # the ten, from their packed bytes, and key_late


def test_an_unwritten_packed_account_comes_back_with_its_state(worker: Pipeline) -> None:
    async def run() -> None:
        await pack_ten_unwritten(worker)
        worker.merger.add(0, [call_of("key_3", LATER + 1)], now=0.0)
        await worker._drain(everything=True)

    asyncio.run(run())
    account = worker.engine.account_state("org", "key_3")
    assert account is not None
    state = account.detector_states[0]
    assert state.counts[0] > 1.0  # two calls counted, not one: the first came back with it
    assert ("org", "key_3") in worker._dirty and b"org\x1fkey_3" not in worker._unwritten
    assert worker.stats.accounts_unpacked == 1 and worker.stats.accounts_loaded == 0


def test_an_unwritten_packed_account_leaves_memory_only_once_written(
    worker: Pipeline,
) -> None:
    async def run() -> None:
        await pack_ten_unwritten(worker)
        worker.watermark = LATER + 10 * worker.settings.state_idle_s
        worker._evict_idle()
        # All eleven idle far longer than state_idle_s, none written: all stay, packed.
        assert len(worker._unwritten) == len(worker._packed) == 11
        assert worker.stats.accounts_evicted == 0
        await worker._checkpoint(evict=False)  # writes them
        assert worker._unwritten == set() and len(worker._packed) == 11
        worker._next_eviction = worker._next_stale = -math.inf
        await worker._checkpoint()  # sweeps: written, they may go

    asyncio.run(run())
    assert worker._packed == {} and worker._unwritten == set()
    assert worker.stats.accounts_evicted == 11  # the ten and key_late, all written
    assert len(worker.store.snapshots) == 11  # type: ignore[union-attr]


def test_accounts_found_too_long_idle_before_they_were_written_go_at_the_next_sweep(
    worker: Pipeline,
) -> None:
    """Not only at the next look at every packed account (ten minutes of event time on):
    in a replay that outruns the store that would hold hundreds of thousands of them."""

    async def run() -> None:
        await pack_ten_unwritten(worker)
        worker.watermark = LATER + 10 * worker.settings.state_idle_s
        worker._evict_idle()  # the look at every packed account: none written, all stay
        assert len(worker._packed) == 11 and worker.stats.accounts_evicted == 0
        await worker._checkpoint(evict=False)  # writes them
        # key_0 has a call meanwhile: unpacked, it stays.
        worker.merger.add(0, [call_of("key_0", worker.watermark)], now=0.0)
        await worker._drain(everything=True)
        assert worker._next_stale > worker.watermark  # the next such look is far off
        worker._evict_idle()  # a sweep

    asyncio.run(run())
    assert len(worker._packed) == 0 and worker.stats.accounts_evicted == 10
    assert worker.engine.accounts_tracked == 1 and worker._stale_unwritten == set()


def test_a_failed_checkpoint_keeps_packed_accounts_to_write(
    worker: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = worker.store
    assert isinstance(store, MemoryStore)

    def broken(records: object) -> dict[int, int]:
        raise RuntimeError("broker down")

    async def run() -> None:
        await pack_ten_unwritten(worker)
        with monkeypatch.context() as patch:
            patch.setattr(store, "send", broken)
            await worker._checkpoint(evict=False)
        assert len(worker._unwritten) == 10 and worker._dirty == {("org", "key_late")}
        await worker._checkpoint(evict=False)

    asyncio.run(run())
    assert len(store.snapshots) == 11 and worker._unwritten == set()


def test_a_partition_let_go_writes_its_unwritten_packed_accounts(worker: Pipeline) -> None:
    store = worker.store
    assert isinstance(store, MemoryStore)

    async def run() -> None:
        await pack_ten_unwritten(worker)
        worker._held = set(range(worker.settings.topic_partitions))
        await worker._release(set(worker._held))

    asyncio.run(run())
    stored = {split_account_key(key)[1] for key in store.snapshots if key != SHARED_KEY}
    assert stored == {f"key_{i}" for i in range(10)} | {"key_late"}
    assert worker._packed == {} and worker._unwritten == set()


def hold_the_second_chunk(
    worker: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """Checkpoints write five accounts at a time, and the store's first send waits until
    the test lets it go on: (writing, go_on)."""
    monkeypatch.setattr(pipeline_module, "CHECKPOINT_CHUNK", 5)
    store = worker.store
    assert isinstance(store, MemoryStore)
    writing, go_on = threading.Event(), threading.Event()
    send = store.send

    def slow_send(records: list[tuple[int, bytes, bytes]]) -> dict[int, int]:
        if not writing.is_set():
            writing.set()
            go_on.wait(10)
        return send(records)

    monkeypatch.setattr(store, "send", slow_send)
    return writing, go_on


async def sweep_in_a_drain_while_writing(worker: Pipeline, writing: threading.Event,
                                         go_on: threading.Event, ts: float) -> None:
    """A checkpoint takes what there is to write; while its first chunk is on its way, a
    drain moves event time to `ts` and, a sweep being due, sweeps (the checkpoint holds
    its lock). Then the checkpoint finishes, and the next one writes what is left."""
    checkpoint = asyncio.ensure_future(worker._checkpoint(evict=False))
    while not writing.is_set():
        await asyncio.sleep(0.01)
    worker._next_eviction = worker._next_stale = -math.inf
    worker.merger.add(0, [call_of("key_later", ts)], now=0.0)
    await worker._drain(everything=True)
    assert worker._next_eviction > ts  # the drain swept
    go_on.set()
    await checkpoint
    await worker._checkpoint(evict=False)


def test_a_drain_sweeping_during_a_checkpoint_loses_no_account_it_was_writing(
    worker: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, go_on = hold_the_second_chunk(worker, monkeypatch)
    worker.alert_sent.set()  # type: ignore[attr-defined]

    async def run() -> None:
        worker.merger.add(0, calls(10), now=0.0)
        await worker._drain(everything=True)
        # Far enough on that an account taken by the checkpoint and not yet written
        # would be let go outright if the sweep thought it stored.
        await sweep_in_a_drain_while_writing(
            worker, writing, go_on, LATER + 10 * worker.settings.state_idle_s)

    asyncio.run(run())
    stored = {split_account_key(key)[1] for key in worker.store.snapshots}  # type: ignore[union-attr]
    assert stored == {f"key_{i}" for i in range(10)} | {"key_later"}
    # None was known written when the sweep came (the first five were on their way):
    # all ten stayed, packed, and were written.
    assert worker.stats.accounts_evicted == 0 and len(worker._packed) == 10
    assert worker._unwritten == set() and worker._writing == set()


def test_a_stale_look_during_a_checkpoint_keeps_the_packed_accounts_it_writes(
    worker: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, go_on = hold_the_second_chunk(worker, monkeypatch)

    async def run() -> None:
        await pack_ten_unwritten(worker)  # key_late live and dirty, the ten packed unwritten
        await sweep_in_a_drain_while_writing(
            worker, writing, go_on, LATER + 10 * worker.settings.state_idle_s)

    asyncio.run(run())
    stored = {split_account_key(key)[1] for key in worker.store.snapshots}  # type: ignore[union-attr]
    assert stored == {f"key_{i}" for i in range(10)} | {"key_late", "key_later"}
    assert worker._unwritten == set() and worker._writing == set()


def test_the_memory_page_counts_the_linking_state_held_outside_account_snapshots(
    worker: Pipeline,
) -> None:
    assert worker.memory_report()["linking"] == {
        "link_keys": 0, "link_members": 0, "campaign_accounts": 0}
    for account in ("a", "b", "c"):
        worker.evidence.add(LinkObservation(
            "tls", "t13d_build", f"org_{account}", account, 1.8e9, 0.8, 1.8e9))
    worker.evidence.add(LinkObservation("ip", "10.0.0.1", "org_a", "a", 1.8e9, 0.8, 1.8e9))
    assert worker.memory_report()["linking"] == {
        "link_keys": 2, "link_members": 4, "campaign_accounts": 0}


@dataclass
class Drained:
    """What one drain of a whole run did: its alerts, and each send of link observations
    with the accounts the engine held at that moment."""

    pipeline: Pipeline
    alerts: list[Any]
    sends: list[tuple[int, int, list[LinkObservation]]]  # (accounts held, partition, items)

    def by_partition(self) -> dict[int, list[LinkObservation]]:
        out: dict[int, list[LinkObservation]] = {}
        for _, partition, items in self.sends:
            out.setdefault(partition, []).extend(items)
        return out


def drain_in_one(run: list[ApiCall], path: Path, monkeypatch: pytest.MonkeyPatch, *,
                 observations_slice: int, sweeps: bool) -> Drained:
    """A fresh pipeline (its store in memory, no ticks) takes `run` in one drain, as from a
    backlog; sweeps are due from the start if `sweeps`, else never."""
    pipeline = Pipeline(Settings(state_dir=path, clickhouse_url=None))
    pipeline.store = MemoryStore()  # type: ignore[assignment]
    pipeline._next_tick = math.inf
    pipeline._next_eviction = -math.inf if sweeps else math.inf
    drained = Drained(pipeline, [], [])

    async def record(topic: str, value: bytes, partition: int) -> None:
        assert topic == pipeline.settings.internal_topic_link_observations
        drained.sends.append((pipeline.engine.accounts_tracked, partition,
                              decode_observations(value)))

    async def emit(alert: Any) -> None:
        drained.alerts.append(alert)

    async def drain() -> None:
        pipeline.merger.add(0, run, now=0.0)
        await pipeline._drain(everything=True)

    monkeypatch.setattr(pipeline.output, "send", record)
    monkeypatch.setattr(pipeline_module, "OBSERVATIONS_SLICE", observations_slice)
    monkeypatch.setattr(pipeline_module, "LINK_SLICE_CALLS", 50)
    monkeypatch.setattr(pipeline, "_emit", emit)
    asyncio.run(drain())
    return drained


def test_a_long_drain_sends_its_link_observations_in_slices_all_of_them_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain of a backlog sends link observations as it makes them (else they pile up:
    about three per call); what it sends is what one send at its end sends."""
    run = simulated("hydra", duration_s=1800.0, fleet_scale=0.2).calls
    sliced = drain_in_one(run, tmp_path / "sliced", monkeypatch,
                          observations_slice=200, sweeps=False)
    # Sent while the drain went on, not all at its end.
    assert len({held for held, _, _ in sliced.sends}) > 3
    whole = drain_in_one(run, tmp_path / "whole", monkeypatch,
                         observations_slice=10**9, sweeps=False)
    assert len({held for held, _, _ in whole.sends}) == 1
    assert sum(map(len, whole.by_partition().values())) > 3 * 200
    assert sliced.by_partition() == whole.by_partition()


def test_a_long_drain_packs_the_accounts_that_go_idle_in_it_and_alerts_as_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hours of a hydra campaign in one drain (a backlog): sweeping on the way packs
    accounts and unpacks them at their next call, and changes no alert and no link
    observation against the same drain without sweeps. The drain sweeps when event time
    says so, however few link observations its calls make (none sent before its end); the
    link stage runs over the calls before each sweep, as a packed account takes its link
    state along."""
    run = simulated("hydra", duration_s=7200.0, fleet_scale=0.2).calls
    swept = drain_in_one(run, tmp_path / "swept", monkeypatch,
                         observations_slice=10**9, sweeps=True)
    whole = drain_in_one(run, tmp_path / "whole", monkeypatch,
                         observations_slice=10**9, sweeps=False)
    assert swept.pipeline.stats.accounts_packed > 0
    assert swept.pipeline.stats.accounts_unpacked > 0
    assert whole.pipeline.stats.accounts_packed == 0
    # At the drain's end (its one send), the accounts idle for minutes are not live.
    (held_swept,) = {held for held, _, _ in swept.sends}
    (held_whole,) = {held for held, _, _ in whole.sends}
    assert held_swept < held_whole
    assert len(swept.alerts) > 0 and swept.alerts == whole.alerts
    assert swept.by_partition() == whole.by_partition()


def test_a_long_drain_sweeps_by_event_time_and_leaves_the_writing_to_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hours of event time in one drain pass 120 sweep boundaries: the drain packs
    idle accounts at each, writes no snapshot (a checkpoint per minute of event time
    wrote the same active accounts again and again in a fast replay), and the next
    checkpoint writes every account the drain touched, packed or live, once."""
    run = simulated("hydra", duration_s=7200.0, fleet_scale=0.2).calls
    drained = drain_in_one(run, tmp_path / "swept", monkeypatch,
                           observations_slice=10**9, sweeps=True)
    pipeline = drained.pipeline
    store = pipeline.store
    assert isinstance(store, MemoryStore)
    assert pipeline.stats.accounts_packed > 0
    assert pipeline.stats.state_written == 0 and store.snapshots == {}
    assert pipeline._unwritten  # packed in the drain, waiting for the checkpoint
    asyncio.run(pipeline._checkpoint(evict=False))
    stored = {split_account_key(key)[1] for key in store.snapshots}
    assert stored == {call.account_id for call in run}
    assert pipeline.stats.state_written == len(stored)
    assert pipeline._dirty == set() and pipeline._unwritten == set()


def test_a_call_the_link_stage_refuses_is_dead_lettered_and_the_drain_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link stage runs over slices of a drain's calls in one Rust call. A call it
    refuses (here its account's observer array is of another size) is dead-lettered with
    the reason and left out of the sink's counts; the calls after it, in its slice and
    the next, are observed and counted."""
    pipeline = Pipeline(Settings(state_dir=tmp_path, clickhouse_url=None, state_store=False))
    pipeline._next_tick = math.inf
    pipeline.sink = ClickHouseSink(None, "db")  # type: ignore[arg-type]  # never flushed
    letters: list[tuple[str, str]] = []
    observed: list[str] = []

    async def dead_letter(rejection: Any, topic: str, message: Any) -> None:
        letters.append((rejection.kind, rejection.reason))

    async def record(topic: str, value: bytes, partition: int) -> None:
        assert topic == pipeline.settings.internal_topic_link_observations
        observed.extend(item.account_id for item in decode_observations(value))

    async def emit(alert: Any) -> None:
        pass

    monkeypatch.setattr(pipeline, "_dead_letter", dead_letter)
    monkeypatch.setattr(pipeline, "_emit", emit)
    monkeypatch.setattr(pipeline.output, "send", record)
    monkeypatch.setattr(pipeline_module, "LINK_SLICE_CALLS", 4)
    pipeline.observer.import_account("key_2", array("I", [0, 0, 0]))
    run = [ApiCall(f"e{i}", 1_800_000_000.0 + i, "org", f"key_{i}", "m", 200, 10, 100,
                   ip=f"10.0.{i}.1") for i in range(10)]

    async def drain() -> None:
        pipeline.merger.add(0, run, now=0.0)
        await pipeline._drain(everything=True)

    asyncio.run(drain())
    assert letters == [("processing_error", "ValueError: an account state of another size")]
    assert pipeline.stats.events_detected == 10
    accounts = {f"key_{i}" for i in range(10)}
    assert set(observed) == accounts - {"key_2"}  # key_3 in its slice, key_4..key_9 after
    columns = pipeline.sink._minutes.columns(100)
    counted = dict(zip(columns[2], columns[3], strict=True))  # account -> requests
    assert counted == {account: 1 for account in accounts - {"key_2"}}


def test_a_long_drain_lets_other_tasks_run_between_its_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest and the link agent share the drain's event loop: a drain of a backlog
    steps aside after each slice of the link stage, so the next input take is read on
    the input thread while the drain goes on, instead of after it."""
    pipeline = Pipeline(Settings(state_dir=tmp_path, clickhouse_url=None, state_store=False))
    pipeline._next_tick = math.inf
    monkeypatch.setattr(pipeline_module, "LINK_SLICE_CALLS", 10)
    run = [ApiCall(f"e{i}", 1_800_000_000.0 + i, "org", f"key_{i % 7}", "m", 200, 10, 100)
           for i in range(100)]
    seen: list[float] = []  # the engine's event time each time the other task ran

    async def other_task() -> None:
        while True:
            seen.append(pipeline.engine.watermark)
            await asyncio.sleep(0)

    async def drain() -> None:
        pipeline.merger.add(0, run, now=0.0)
        task = asyncio.ensure_future(other_task())
        await asyncio.sleep(0)
        await pipeline._drain(everything=True)
        task.cancel()

    asyncio.run(drain())
    during = [ts for ts in seen if run[0].ts <= ts < run[-1].ts]
    assert len(during) >= 8  # once after each slice of ten calls but the last
    assert pipeline.stats.events_detected == 100
