"""The edge: input records decoded, re-keyed and sent in slices of bounded size."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from streams import pipeline as pipeline_module
from streams.input import InputRun
from streams.internal import decode_by_account, partition_for
from streams.pipeline import Pipeline
from streams.settings import Settings
from tests.traffic import START, chatter


def test_a_large_fetch_is_sent_in_slices_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = Pipeline(Settings(state_dir=tmp_path, clickhouse_url=None, state_store=False))
    monkeypatch.setattr(pipeline_module, "INGEST_SLICE_CALLS", 10)
    log: list[Any] = []  # ("ordered", calls) and ("sent", partition, calls)

    async def send(topic: Any, value: bytes, *, partition: int, **_: Any) -> Any:
        item = decode_by_account(value)
        if isinstance(item, list):  # (not the edge's progress)
            log.append(("sent", partition, item))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    add = worker.input_order.add

    def logged_add(partition: int, offset: int, calls: list[Any], *rest: Any) -> None:
        log.append(("ordered", sum(len(c) for c in calls)))  # (each record's calls)
        add(partition, offset, calls, *rest)

    monkeypatch.setattr(worker.output, "send", send)
    monkeypatch.setattr(worker.input_order, "add", logged_add)
    events = [e for i in range(4) for e in chatter("org", f"key_{i}", n=6, start=START)]
    run = InputRun.read(worker.edge, 0, [
        (n, None, json.dumps(events[6 * n:6 * n + 6]).encode()) for n in range(4)])
    _, done = asyncio.run(worker._ingest_batch([run], [], now=0.0))
    assert done == {0: 4}  # every record's calls are sent: all may be committed
    # 6 calls per record, slices of at least 10: ordered and sent (one record per
    # partition) after the 2nd record and after the 4th, not all at the end.
    kinds = [entry[0] for entry in log]
    collapsed = [kind for i, kind in enumerate(kinds) if i == 0 or kind != kinds[i - 1]]
    assert collapsed == ["ordered", "sent", "ordered", "sent"]
    assert [entry[1] for entry in log if entry[0] == "ordered"] == [12, 12]
    sent = [(partition, call) for kind, *rest in log if kind == "sent"
            for partition, calls in [rest] for call in calls]
    assert sorted(call.event_id for _, call in sent) == sorted(e["event_id"] for e in events)
    partitions = worker.settings.topic_partitions
    assert all(partition == partition_for(call.account_id, partitions) for partition, call in sent)
    assert worker.stats.events_valid == 24 and worker.stats.records_in == 4


def test_the_input_is_taken_in_counts_that_follow_the_size_of_its_records() -> None:
    budget = pipeline_module.IngestBudget(take_bytes=1_000_000, max_records=2_000)

    def take(*sizes: int | None) -> int:
        budget.took(len(sizes), sum(n or 0 for n in sizes), len(sizes))
        return budget.records

    # Before any size is known a backlog of batches must not come in all at once.
    assert budget.records == pipeline_module.FIRST_TAKE_RECORDS
    assert take(1_000, 1_000) == 1_000  # single events: a thousand make the budget
    assert take(100) == 2_000  # smaller still: capped at the most per fetch
    assert take(50_000, 150_000) == 10  # batches: a few at a time
    assert take() == 10  # an empty take teaches nothing
    assert take(5_000_000) == 1  # one record over the budget: still one at a time
    assert take(None, None) == 2_000  # tombstones (no value) weigh nothing


def test_a_take_is_cut_to_the_room_left_in_the_input_order() -> None:
    """Past its `max_buffered` the input order lets calls go ahead of a partition still
    behind: the ingest takes no more records than fill the room left, at the calls per
    record it last saw, and at least one (the partition behind must deliver)."""
    budget = pipeline_module.IngestBudget(take_bytes=32_000_000, max_records=8_000)
    budget.took(40, 40 * 750_000, 40 * 1_000)  # batches of 1,000 events
    assert budget.records == 42
    assert budget.fitting(1_000_000) == 42  # room for more than the bytes allow
    assert budget.fitting(25_500) == 25
    assert budget.fitting(999) == 1
    assert budget.fitting(-5_000) == 1
    budget.took(8_000, 8_000_000, 7_000)  # single events, some invalid: one call a record
    assert budget.fitting(25_500) == 8_000 and budget.fitting(3_000) == 3_000


@pytest.mark.parametrize("partitions", [1, 4, 12, 48])
def test_every_partition_a_worker_reads_fits_in_one_fetch(partitions: int) -> None:
    # Faust's consumer reads the by-account, link-observation and feedback topics
    # (`partitions` each) and the campaign edges; aiokafka fetches 50 MB at most, filling
    # partitions in the same order every time: a last partition left out would starve.
    size = pipeline_module._fetch_size_per_partition(partitions)
    assert 0 < size <= 16 * 1024 * 1024
    assert (3 * partitions + 1) * size <= 50 * 1024 * 1024


def test_records_taken_before_are_skipped_and_counted(tmp_path: Path) -> None:
    # A consumer that goes back to an offset it had read (a seek after a rebalance that
    # left the partition here) delivers records again: each is processed once.
    worker = Pipeline(Settings(state_dir=tmp_path, clickhouse_url=None, state_store=False))

    async def no_send(*_: Any) -> list[Any]:
        return []

    worker._send_released = no_send  # type: ignore[method-assign]
    events = chatter("org", "key_0", n=5, start=START)
    values = [json.dumps(e).encode() for e in events]
    first = InputRun.read(worker.edge, 3, [(10 + n, None, v) for n, v in enumerate(values[:3])])
    again = InputRun.read(worker.edge, 3, [(11 + n, b"k", v) for n, v in enumerate(values[1:])])
    asyncio.run(worker._ingest_batch([first], [], now=0.0))
    asyncio.run(worker._ingest_batch([again], [], now=0.0))
    assert worker.stats.records_in == 5 and worker.stats.redelivered == 2
    assert worker.stats.events_valid == 5
    assert len(worker.input_order) == 5
    assert again.after(12).offsets == [13, 14] and again.after(9) is again
    assert again.after(14).offsets == [] and again.after(14).reads == []
