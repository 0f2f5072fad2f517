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


def test_a_rebalance_mid_stream_loses_no_record_and_repeats_none(
        deployment: Deployment) -> None:
    # A reads and "sends" what it takes, committing as it goes; B joins the group midway,
    # so A's partitions are revoked (A hands over: commits through what it sent) and
    # split. Between them every record is taken exactly once: a take during the
    # rebalance is not handed on, and partitions are read again from the hand-over's
    # commit, whoever holds them after.
    values = _events(400)
    deployment.produce([(f"k{i % 13}".encode(), v) for i, v in enumerate(values)])
    group_id = f"{deployment.env['DISTILLWATCH_APP_ID']}-rebalance"

    async def run() -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
        sent: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
        done: dict[str, dict[int, int]] = {"a": {}, "b": {}}
        revokes = 0

        def member(name: str) -> InputConsumer:
            async def hand_over(partitions: list[int]) -> dict[int, int]:
                nonlocal revokes
                revokes += 1
                return {p: o for p, o in done[name].items() if p in partitions}
            return InputConsumer(deployment.settings, group_id, EdgeReader(4), hand_over,
                                 lambda _: None, 1 << 20)

        async def read(name: str, consumer: InputConsumer, stop: asyncio.Event) -> None:
            commit: dict[int, int] = {}
            while not stop.is_set():
                runs = await consumer.take(5, 0.2, [], commit)  # small takes: many of them
                commit = {}
                for run in runs:
                    sent[name] += [(run.partition, o) for o in run.offsets]
                    done[name][run.partition] = run.offsets[-1] + 1
                    commit[run.partition] = run.offsets[-1] + 1
                await asyncio.sleep(0.1)  # the worker's detection between takes

        a, b = member("a"), member("b")
        stop = asyncio.Event()
        await a.start()
        reading_a = asyncio.ensure_future(read("a", a, stop))
        deadline = time.monotonic() + 60
        while len(sent["a"]) < 60 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await b.start()
        reading_b = asyncio.ensure_future(read("b", b, stop))
        while len(sent["a"]) + len(sent["b"]) < 400 and time.monotonic() < deadline + 60:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # anything read twice would come by now
        stop.set()
        await asyncio.gather(reading_a, reading_b)
        await a.stop()
        await b.stop()
        return sent["a"], sent["b"], revokes

    by_a, by_b, revokes = asyncio.run(run())
    assert revokes >= 1 and by_b, "B never got partitions: no rebalance was tested"
    taken = by_a + by_b
    assert len(taken) == len(set(taken)) == 400
