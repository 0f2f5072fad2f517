"""Ticks travel behind the records they vouch for: a detect worker's tick goes to every
link partition after the observations of the calls up to it, and the link stage's tick
goes to the clusterer after the edges of every observation up to it. So the clusterer
runs no tick before that tick's edges have come, and its campaigns do not depend on how
its records are batched, even when one drain spans hours of event time (a backlog).

The stages run here as a worker runs them, in one process: the producer and the streams
are stand-ins holding the records in memory, in the order they were sent (the stages on
a real broker are in tests/integration)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from pathlib import Path

import msgspec

from models.engine import DetectionEngine
from models.linking import CampaignLinker, LinkEdge
from models.records import ApiCall
from schemas.alert import Alert
from streams.internal import EDGES_TAG, OBSERVATIONS_TAG, TICK_TAG
from streams.pipeline import Pipeline, engine_from_settings
from streams.replay import replay
from streams.settings import Settings
from tests.models.linking.runs import simulated
from tests.streams.stand_ins import Recorder, Stream

_edges = msgspec.msgpack.Decoder(list[LinkEdge]).decode
_float = msgspec.msgpack.Decoder(float).decode


def comparable(alerts: Iterable[Alert]) -> list[str]:
    return [a.model_dump_json(exclude={"detected_at"}) for a in alerts if a.kind == "campaign"]


async def stages(calls: list[ApiCall], path: Path, drains: int,
                 cluster_batch: int) -> tuple[list[Alert], Recorder, float]:
    """Campaign alerts of the three stages over `calls`: detect in `drains` drains, each of
    a backlog, then the link stage reading its partitions one after another (each hours
    of event time ahead of the next), then the clusterer taking its records
    `cluster_batch` at a time. Returns them with the records sent and the clusterer's
    last watermark."""
    worker = Pipeline(Settings(state_dir=path, clickhouse_url=None, state_store=False))
    output = worker.output = Recorder()  # type: ignore[assignment]
    alerts: list[Alert] = []

    async def emit(alert: Alert) -> None:
        alerts.append(alert)

    worker._emit = emit  # type: ignore[method-assign]
    partitions = worker.settings.topic_partitions
    worker.assigned_partitions = lambda topic=None: list(range(partitions))  # type: ignore
    step = math.ceil(len(calls) / drains)
    for start in range(0, len(calls), step):
        worker.merger.add(0, calls[start:start + step], now=0.0)
        await worker._drain(everything=True)
    links = worker.settings.internal_topic_link_observations
    by_partition = sorted(output.records(links), key=lambda record: record[0])  # stable
    async for _ in worker._link(Stream(links, by_partition, 1)):  # type: ignore[arg-type]
        pass
    edges = worker.settings.internal_topic_campaign_edges
    stream = Stream(edges, output.records(edges), cluster_batch)
    async for _ in worker._cluster(stream):  # type: ignore[arg-type]
        pass
    return [a for a in alerts if a.kind == "campaign"], output, worker.cluster_watermark


def hydra() -> list[ApiCall]:
    """Two hours of a hydra campaign, in event-time order."""
    return list(simulated("hydra", duration_s=7200.0, fleet_scale=0.2).calls)


def test_each_tick_comes_after_the_records_it_vouches_for(tmp_path: Path) -> None:
    calls = hydra()
    _, output, _ = asyncio.run(stages(calls, tmp_path, drains=6, cluster_batch=1))
    settings = Settings(state_dir=tmp_path, clickhouse_url=None, state_store=False)
    # Detect sends its ticks to every link partition and none to the clusterer's topic
    # straight: on each link partition, no observation sent after a tick is older. (Ties:
    # a drain ends at the count of calls given here, and the next starts at the same ts.)
    links = output.records(settings.internal_topic_link_observations)
    ticked = 0
    for partition in range(settings.topic_partitions):
        tick = -math.inf
        for p, value in links:
            if p != partition:
                continue
            if value[:1] == TICK_TAG:
                tick = max(tick, _float(value[1:]))
                ticked += 1
                continue
            assert value[:1] == OBSERVATIONS_TAG
            observations = msgspec.msgpack.decode(value[1:])
            assert all(o["ts"] >= tick for o in observations)
    assert ticked >= 6 * settings.topic_partitions // 2
    # The link stage's ticks: no edge sent after one is older than it.
    tick, ticks, edges = -math.inf, 0, 0
    for _, value in output.records(settings.internal_topic_campaign_edges):
        if value[:1] == TICK_TAG:
            assert _float(value[1:]) >= tick
            tick, ticks = _float(value[1:]), ticks + 1
            continue
        assert value[:1] == EDGES_TAG
        batch = _edges(value[1:])
        edges += len(batch)
        assert all(edge.ts >= tick for edge in batch)
    assert ticks > 1 and edges > 100


def test_campaigns_do_not_depend_on_how_the_clusterer_batches_its_records(
    tmp_path: Path,
) -> None:
    """Two hours of a hydra campaign through the three stages in three drains of a
    backlog: the clusterer taking one record at a time names the campaigns that taking
    them all at once does, and that the offline replay (`distillwatch score`) does up to
    the clusterer's watermark. (With detect's ticks sent to the clusterer straight, the
    first record it read was the tick of a whole drain, and it ran the ticks of that
    drain's hours with the edges of the first record alone.)"""
    calls = hydra()
    one_by_one, _, watermark = asyncio.run(
        stages(calls, tmp_path / "one", drains=3, cluster_batch=1))
    all_at_once, _, _ = asyncio.run(
        stages(calls, tmp_path / "all", drains=3, cluster_batch=10**9))
    assert comparable(one_by_one) == comparable(all_at_once)
    assert any(a.status == "firing" for a in one_by_one)

    settings = Settings(state_dir=tmp_path, clickhouse_url=None, state_store=False)
    engine: DetectionEngine = engine_from_settings(settings)
    offline = [a for a in replay(engine, sorted(calls, key=lambda c: c.ts), CampaignLinker())
               if a.kind == "campaign" and a.event_time.timestamp() <= watermark - 120.0]
    assert comparable(one_by_one) == comparable(offline)
