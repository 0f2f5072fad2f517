"""Which by-account partitions the event-time merger waits for: those with records the
worker has not taken yet, read from the consumer's assignment and highwaters. The
consumer here is a stand-in with those two methods (the merger's waiting on a real
broker is in tests/integration)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.exceptions import ConsumerNotStarted
from faust.types import TP

from streams.pipeline import Pipeline
from streams.settings import Settings


class Consumer:
    def __init__(self, topic: str, highwaters: dict[int, int], fault: Exception | None = None):
        self.topic, self.highwaters, self.fault = topic, highwaters, fault

    def assignment(self) -> set[TP]:
        return {TP(self.topic, p) for p in self.highwaters} | {TP("other", 0)}

    def highwater(self, tp: TP) -> int:
        if self.fault is not None:
            raise self.fault
        return self.highwaters[tp.partition]


@pytest.fixture
def worker(tmp_path: Path) -> Pipeline:
    return Pipeline(Settings(state_dir=tmp_path, clickhouse_url=None))


def test_partitions_with_records_not_taken_yet_are_lagging(worker: Pipeline) -> None:
    topic = worker.settings.internal_topic_by_account
    worker.app.consumer = Consumer(topic, {0: 10, 1: 10, 2: 5})  # type: ignore[assignment]
    worker._taken = {(topic, 0): 9, (topic, 1): 4, ("other", 0): 0}
    # 0: all taken (last offset 9, highwater 10); 1: five to take; 2: none taken yet
    # (position unknown).
    assert worker.lagging_partitions() == [1]


@pytest.mark.parametrize("fault", [ConsumerNotStarted("not yet"),
                                   AssertionError("Partition is not assigned")])
def test_a_consumer_not_started_or_a_partition_let_go_means_none_lagging_quietly(
    worker: Pipeline, fault: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    topic = worker.settings.internal_topic_by_account
    worker.app.consumer = Consumer(topic, {0: 10}, fault)  # type: ignore[assignment]
    worker._taken = {(topic, 0): 4}
    with caplog.at_level(logging.WARNING):
        assert worker.lagging_partitions() == []
    assert caplog.records == []


def test_any_other_fault_means_none_lagging_and_is_logged_once(
    worker: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    topic = worker.settings.internal_topic_by_account
    worker.app.consumer = Consumer(topic, {0: 10}, KeyError("p0"))  # type: ignore[assignment]
    worker._taken = {(topic, 0): 4}
    with caplog.at_level(logging.WARNING):
        assert worker.lagging_partitions() == []
        assert worker.lagging_partitions() == []
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "highwaters" in caplog.records[0].getMessage()


def test_the_lag_counts_the_records_not_taken_of_partitions_with_a_position(
    worker: Pipeline,
) -> None:
    topic = worker.settings.internal_topic_by_account
    highwaters: dict[int, int | None] = {0: 10, 1: 10, 2: 5, 3: None}
    worker.app.consumer = Consumer(topic, highwaters)  # type: ignore[arg-type, assignment]
    worker._taken = {(topic, 0): 9, (topic, 1): 4, (topic, 3): 4, ("other", 0): 0}
    # 0: all taken; 1: offsets 5-9; 2: nothing taken yet; 3: its end not known yet
    assert worker.by_account_lag() == 5
    assert worker.lagging_partitions() == [1]


class Input:
    """The input consumer's one method the catch-up looks at."""

    def __init__(self) -> None:
        self.behind: list[int] = []

    def lagging(self, partitions: list[int]) -> list[int]:
        return [p for p in partitions if p in self.behind]


def test_the_aggregates_are_flushed_once_a_backlog_is_worked_off(worker: Pipeline) -> None:
    topic = worker.settings.internal_topic_by_account
    worker.app.consumer = Consumer(topic, {0: 500, 1: 500})  # type: ignore[assignment]
    flushes: list[int] = []
    worker.sink = SimpleNamespace(flush=lambda: flushes.append(1))  # type: ignore[assignment]
    worker._input_assigned([0, 1])
    worker.input = source = Input()  # type: ignore[assignment]

    async def after_drains(*taken: tuple[int, int]) -> int:
        """The flushes after drains that took up to these (partition 0, partition 1)."""
        for last in taken:
            worker._taken = {(topic, 0): last[0], (topic, 1): last[1]}
            worker._flush_once_caught_up()
            await asyncio.sleep(0.05)  # the flush runs on the sink's thread
        return len(flushes)

    async def scenario() -> None:
        # Live traffic: a few records behind at each drain, then none. No extra insert.
        assert await after_drains((490, 495), (499, 499), (495, 499), (499, 499)) == 0
        # A backlog: hundreds of records behind. Caught up with the by-account topic
        # while input is still unread, it waits; once input is read too, it flushes once.
        source.behind = [1]
        assert await after_drains((10, 10), (300, 200), (499, 499)) == 0
        source.behind = []
        assert await after_drains((499, 499)) == 1
        assert await after_drains((499, 499), (499, 499)) == 1

    asyncio.run(scenario())
