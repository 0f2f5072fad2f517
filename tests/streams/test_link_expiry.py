"""The link stage's expiry waits for its slowest partition: the edges it finds do not
depend on how far apart its partitions are read. The stream and the producer here are
stand-ins holding records in memory (the link stage on a real broker is in
tests/integration)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import msgspec
from faust.types import TP

from models.linking import LinkEdge, LinkObservation
from streams.internal import TICK_TAG, encode_observations
from streams.pipeline import LINK_PARTITION_IDLE_S, Pipeline, link_low_watermark
from streams.settings import Settings
from tests.models.calls import T0
from tests.streams.stand_ins import Recorder, Stream

_edges = msgspec.msgpack.Decoder(list[LinkEdge]).decode


def observation(account: str, ts: float, key: str) -> LinkObservation:
    return LinkObservation("tls", key, f"org_{account}", account, ts, 0.8, ts)


def partitions() -> dict[int, list[list[LinkObservation]]]:
    """Partition 0: a key two tenants' accounts show 80 minutes apart (within the
    evidence's 90-minute member ttl), so they link. Partition 1: three hours of pairs on
    other keys, which link too."""
    slow = [[observation("a", T0, "shared")], [observation("b", T0 + 4800, "shared")]]
    fast = [[observation(f"x{i}", T0 + 600 * i, f"k{i}"),
             observation(f"y{i}", T0 + 600 * i + 1, f"k{i}")] for i in range(19)]
    return {0: slow, 1: fast}


async def linked(tmp_path: Path, order: list[int]) -> tuple[set[tuple[str, str]], Pipeline]:
    """The (key, account) pairs of the edges the link stage sends, reading the
    partitions' records in `order` (a partition number per record)."""
    worker = Pipeline(Settings(state_dir=tmp_path, clickhouse_url=None, state_store=False))
    output = worker.output = Recorder()  # type: ignore[assignment]
    queues = {p: list(records) for p, records in partitions().items()}
    records = [(p, encode_observations(queues[p].pop(0))) for p in order]
    assert not any(queues.values())
    stream = Stream(worker.settings.internal_topic_link_observations, records, 1)
    async for _ in worker._link(stream):  # type: ignore[arg-type]
        pass
    sent = output.records(worker.settings.internal_topic_campaign_edges)
    return {(edge.key, edge.account_id) for _, value in sent if value[:1] != TICK_TAG
            for edge in _edges(value[1:])}, worker


def test_edges_do_not_depend_on_how_far_apart_partitions_are_read(tmp_path: Path) -> None:
    in_step, _ = asyncio.run(linked(tmp_path / "a", [0, 1, 0] + [1] * 18))
    # Partition 1 read three hours of event time ahead before partition 0's second record:
    # expired at the latest of any partition, the shared key was gone when "b" came.
    skewed, worker = asyncio.run(linked(tmp_path / "b", [0] + [1] * 19 + [0]))
    assert ("shared", "a") in in_step and ("shared", "b") in in_step
    assert skewed == in_step
    assert worker._link_latest == {0: T0 + 4800, 1: T0 + 600 * 18 + 1}


def test_a_revoked_link_partition_no_longer_holds_expiry_back(tmp_path: Path) -> None:
    worker = Pipeline(Settings(state_dir=tmp_path, clickhouse_url=None, state_store=False))
    worker._link_latest = {0: T0, 1: T0 + 7200.0}
    links = worker.settings.internal_topic_link_observations
    revoked = {TP(links, 0), TP("other", 1)}
    asyncio.run(worker._on_partitions_revoked(worker.app, revoked))  # type: ignore[arg-type]
    assert worker._link_latest == {1: T0 + 7200.0}


def test_the_low_watermark_is_the_slowest_partition_not_long_silent() -> None:
    assert link_low_watermark({}) == -math.inf
    assert link_low_watermark({0: T0 + 50.0, 3: T0, 5: T0 + 900.0}) == T0
    # One partition silent for longer than LINK_PARTITION_IDLE_S does not hold it back.
    later = T0 + LINK_PARTITION_IDLE_S + 1
    assert link_low_watermark({0: T0, 1: later, 2: later + 59}) == later
