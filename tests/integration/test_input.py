"""The input topic's consumer (`streams.input.InputConsumer`) on the real broker.

It takes what librdkafka holds, in runs per partition read by the edge; a take returns
as soon as a record has come, not at its timeout; offsets it is given are committed, and
a consumer of the same group starts from them.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

from streams.edge import EdgeReader
from streams.input import InputConsumer, InputRun
from tests.integration.conftest import Deployment
from tests.traffic import START, chatter


def _events(n: int, account: str = "key_1") -> list[bytes]:
    return [json.dumps(e).encode() for e in chatter("org", account, n=n, start=START)]


class _Group:
    """An `InputConsumer` of the deployment's input topic, with the worker's callbacks
    recorded: the partitions assigned, and the hand-overs asked for."""

    def __init__(self, deployment: Deployment, group: str) -> None:
        self.assigned: list[list[int]] = []
        self.handed_over: list[list[int]] = []
        self.consumer = InputConsumer(deployment.settings, group, EdgeReader(4),
                                      self._hand_over, self.assigned.append, 1 << 20)

    async def _hand_over(self, partitions: list[int]) -> dict[int, int]:
        self.handed_over.append(partitions)
        return {}

    async def take_all(self, expected: int, timeout_s: float = 60.0) -> list[InputRun]:
        runs: list[InputRun] = []
        deadline = time.monotonic() + timeout_s
        while sum(len(r.offsets) for r in runs) < expected and time.monotonic() < deadline:
            runs += await self.consumer.take(1_000, 0.5, [], {})
        return runs


def test_records_come_in_runs_per_partition_read_by_the_edge(deployment: Deployment) -> None:
    values = _events(40)
    deployment.produce([(f"k{i % 7}".encode(), v) for i, v in enumerate(values)])

    async def run() -> list[InputRun]:
        group = _Group(deployment, f"{deployment.env['DISTILLWATCH_APP_ID']}-input")
        await group.consumer.start()
        try:
            runs = await group.take_all(40)
        finally:
            await group.consumer.stop()
        assert group.assigned and sorted(group.assigned[-1]) == [0, 1, 2, 3]
        assert group.handed_over  # leaving the group revokes its partitions
        return runs

    runs = asyncio.run(run())
    taken = [(run.partition, offset) for run in runs for offset in run.offsets]
    assert len(taken) == 40 and len(set(taken)) == 40
    for run in runs:
        assert run.offsets == sorted(run.offsets)
        assert len(run.reads) == len(run.offsets) == len(run.keys)
    # Each record read by the edge: one valid call each, the event's own.
    calls = [call for run in runs for valid, rejected in run.reads if not rejected
             for call in valid]
    assert len(calls) == 40
    assert sorted(c.ts for c in calls) == sorted(
        datetime.fromisoformat(json.loads(v)["ts"]).timestamp() for v in values)
    assert sum(run.size for run in runs) == sum(len(v) for v in values)
    # Every record's key and event came through with it.
    assert {key for run in runs for key in run.keys} == {f"k{i}".encode() for i in range(7)}


def test_a_take_returns_when_a_record_comes_not_at_its_timeout(
        deployment: Deployment) -> None:
    async def run() -> tuple[float, int]:
        group = _Group(deployment, f"{deployment.env['DISTILLWATCH_APP_ID']}-trickle")
        await group.consumer.start()
        try:
            # Joined and caught up: nothing to take.
            deadline = time.monotonic() + 60
            while not group.assigned and time.monotonic() < deadline:
                await group.consumer.take(1_000, 0.2, [], {})
            loop = asyncio.get_running_loop()
            loop.call_later(1.0, deployment.produce, [(b"k", _events(1)[0])])
            started = time.monotonic()
            runs = await group.consumer.take(1_000, 20.0, [], {})
            return time.monotonic() - started, sum(len(r.offsets) for r in runs)
        finally:
            await group.consumer.stop()

    waited, taken = asyncio.run(run())
    assert taken == 1
    assert waited < 10.0, f"the take waited {waited:.1f} s for one record"


def test_committed_offsets_are_where_the_group_resumes(deployment: Deployment) -> None:
    deployment.produce([(b"k", v) for v in _events(30)])  # one key: one partition
    group_id = f"{deployment.env['DISTILLWATCH_APP_ID']}-commit"

    async def first() -> tuple[int, list[int]]:
        group = _Group(deployment, group_id)
        await group.consumer.start()
        try:
            runs = await group.take_all(30)
            (partition,) = {run.partition for run in runs}
            offsets = [o for run in runs for o in run.offsets]
            # Commit through the 12th record (next offset: its offset + 1), with a take.
            await group.consumer.take(1, 0.1, [], {partition: offsets[11] + 1})
            return partition, offsets
        finally:
            await group.consumer.stop()

    async def second() -> list[InputRun]:
        group = _Group(deployment, group_id)
        await group.consumer.start()
        try:
            return await group.take_all(18)
        finally:
            await group.consumer.stop()

    partition, offsets = asyncio.run(first())
    again = asyncio.run(second())
    assert [(r.partition, o) for r in again for o in r.offsets] == [
        (partition, o) for o in offsets[12:]]
