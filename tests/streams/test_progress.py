"""The edge's progress travels behind its calls to the by-account partitions where detect
would wait, and lets detect release calls without waiting for a partition that has nothing
more to send: at the end of a burst or a backlog, the last calls no longer wait for the
idle rule. The producer and
the stream are stand-ins holding the records in memory (the pipeline on a real broker is
in tests/integration)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from models.records import ApiCall
from streams.input import InputRun
from streams.internal import PROGRESS_TAG, decode_by_account, encode_calls, encode_progress
from streams.pipeline import Pipeline
from streams.settings import Settings
from tests.streams.stand_ins import Recorder, Stream
from tests.traffic import START, by_time, chatter


def worker(path: Path) -> tuple[Pipeline, Recorder]:
    pipeline = Pipeline(Settings(state_dir=path, clickhouse_url=None, state_store=False))
    output = pipeline.output = Recorder()  # type: ignore[assignment]
    return pipeline, output


def sent_by_account(pipeline: Pipeline, output: Recorder) -> list[tuple[int, bytes]]:
    records = output.records(pipeline.settings.internal_topic_by_account)
    output.sent.clear()
    return records


def test_the_edge_sends_its_progress_behind_the_calls_where_detect_would_wait(
    tmp_path: Path,
) -> None:
    """While the edge holds calls, its progress goes to the partitions that got none of
    those it let go; once it holds none, to every partition, after its calls."""
    pipeline, output = worker(tmp_path)
    partitions = pipeline.settings.topic_partitions
    early = by_time(*(chatter("org", f"key_{i}", n=5, start=START) for i in range(2)))
    late = chatter("org", "key_9", n=5, start=START + timedelta(seconds=1000))
    runs = [InputRun.read(pipeline.edge, 0, [(0, None, json.dumps(early).encode())]),
            InputRun.read(pipeline.edge, 1, [(0, None, json.dumps(late).encode())])]
    # Input partition 1 is ahead: its calls wait for partition 0 to come that far.
    asyncio.run(pipeline._ingest_batch(runs, [], now=0.0))
    records = sent_by_account(pipeline, output)
    calls = {p: decode_by_account(v) for p, v in records if v[:1] != PROGRESS_TAG}
    assert len(pipeline.input_order) == 5 and 0 < len(calls) < partitions
    latest = max(c.ts for group in calls.values() for c in group)  # type: ignore[union-attr]
    assert [(p, decode_by_account(v)) for p, v in records if v[:1] == PROGRESS_TAG] == [
        (p, latest) for p in range(partitions) if p not in calls]
    # Nothing let go, nothing said.
    asyncio.run(pipeline._ingest_batch([], [], now=0.05))
    assert sent_by_account(pipeline, output) == []
    # Both input partitions idle: the rest goes, and then the edge holds nothing.
    asyncio.run(pipeline._ingest_batch([], [], now=1.0))
    records = sent_by_account(pipeline, output)
    assert not len(pipeline.input_order)
    latest = max(c.ts for p, v in records if v[:1] != PROGRESS_TAG
                 for c in decode_by_account(v))  # type: ignore[union-attr]
    assert latest == START.timestamp() + 1000 + 4 * 20 + 3
    assert [(p, decode_by_account(v)) for p, v in records if v[:1] == PROGRESS_TAG] == [
        (p, latest) for p in range(partitions)]
    for partition in range(partitions):  # ... each after the calls sent to its partition
        tags = [v[:1] for p, v in records if p == partition]
        assert tags[-1] == PROGRESS_TAG and tags.count(PROGRESS_TAG) == 1


def call(ts: float, account: str) -> ApiCall:
    return ApiCall(f"{account}-{ts}", ts, "org", account, "m", 200, 1, 1)


def detected(tmp_path: Path, progress_of_1: float | None) -> tuple[int, int]:
    """Calls detected, and still waiting, after one batch: partition 0 has calls up to
    t0 + 5, partition 1 up to t0 + 2, partitions 2 and 3 none; the edge's progress is
    t0 + 6 on 2 and 3, and `progress_of_1` on 1 (None: not said)."""
    pipeline, output = worker(tmp_path)
    held = list(range(pipeline.settings.topic_partitions))
    pipeline.assigned_partitions = lambda topic=None: held  # type: ignore[method-assign]
    t0 = START.timestamp()
    records = [(0, encode_calls([call(t0 + 1, "a"), call(t0 + 5, "a")])),
               (1, encode_calls([call(t0 + 2, "b")])),
               (2, encode_progress(t0 + 6)), (3, encode_progress(t0 + 6))]
    if progress_of_1 is not None:
        records.append((1, encode_progress(t0 + progress_of_1)))
    stream = Stream(pipeline.settings.internal_topic_by_account, records, len(records))

    async def detect() -> None:
        async for _ in pipeline._detect(stream):  # type: ignore[arg-type]
            pass

    asyncio.run(detect())
    assert not [t for t, _, _ in output.sent if t == pipeline.settings.topic_dead_letters]
    return pipeline.stats.events_detected, len(pipeline.merger)


def test_the_edge_s_progress_lets_detect_release_without_waiting(tmp_path: Path) -> None:
    # Partition 1 has nothing up to t0 + 6: the call at t0 + 5 goes at once.
    assert detected(tmp_path / "a", 6.0) == (3, 0)
    # Without it, partition 1 holds the call at t0 + 5 back until it idles (a second).
    assert detected(tmp_path / "b", None) == (2, 1)
    # Progress short of the call: it waits.
    assert detected(tmp_path / "c", 4.0) == (2, 1)
