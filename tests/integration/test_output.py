"""The worker's producer (`streams.output.OutputProducer`) on the real broker.

`send` returns before the broker has the record; its future settles once it has. Each
partition's records arrive in the order sent, with their keys and headers; a keyed record
sent to no partition in particular lands where the Java client would put it (alert
consumers rely on one episode's `dedup_key` staying on one partition). A record the broker
refuses settles its future with the error. Faust's commit, which flushes its own producer
before committing what its agents consumed, flushes the worker's too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaException

from streams.output import OutputProducer
from streams.pipeline import Pipeline
from tests.integration.conftest import Deployment


def test_records_arrive_in_order_per_partition_with_keys_and_headers(
        deployment: Deployment) -> None:
    topic = deployment.settings.topic_alerts

    async def run() -> None:
        output = OutputProducer(deployment.settings)
        futures = [await output.send(topic, f"v{i}".encode(), partition=i % 3,
                                     key=f"k{i}".encode(), headers=[("n", str(i).encode())])
                   for i in range(300)]
        # handed to librdkafka, not delivered yet: the futures settle on this loop
        assert not any(future.done() for future in futures)
        await asyncio.wait_for(asyncio.gather(*futures), 60)
        await output.stop()

    asyncio.run(run())
    got = deployment.consume(topic, 300)
    assert len(got) == 300
    for partition in range(3):
        values = [m.value() for m in got if m.partition() == partition]
        assert values == [f"v{i}".encode() for i in range(partition, 300, 3)]
    for message in got:
        n = int(message.value()[1:])
        assert message.key() == f"k{n}".encode()
        assert message.headers() == [("n", str(n).encode())]


def test_a_keyed_record_lands_on_the_java_clients_partition(deployment: Deployment) -> None:
    topic, partitions = deployment.settings.topic_alerts, deployment.settings.topic_partitions
    keys = [f"account:org_1:key_{i}".encode() for i in range(40)]

    async def run() -> None:
        output = OutputProducer(deployment.settings)
        await asyncio.gather(*[await output.send(topic, key, key=key) for key in keys])
        await output.stop()

    asyncio.run(run())
    got = deployment.consume(topic, len(keys))
    assert sorted(m.key() for m in got) == sorted(keys)
    assert len({m.partition() for m in got}) > 1
    for message in got:
        assert message.partition() == (murmur2(message.key()) & 0x7FFFFFFF) % partitions


def test_a_record_the_broker_refuses_settles_with_the_error(deployment: Deployment) -> None:
    """The broker takes at most 16 MiB per record (infra/kafka.sh); the worker's producer
    lets 17 MiB through, so the broker's refusal is what comes back."""
    topic = deployment.settings.topic_dead_letters

    async def run() -> tuple[BaseException | None, BaseException | None]:
        output = OutputProducer(deployment.settings)
        refused = await output.send(topic, b"x" * (16 * 1024 * 1024 + 512))
        fine = await output.send(topic, b"small")
        # the flush before a commit reports it, once
        with pytest.raises(KafkaException, match="1 records could not be delivered"):
            await asyncio.wait_for(output.flush(), 120)
        await output.stop()
        results = [refused.exception(), fine.exception()]
        return results[0], results[1]

    refused, fine = asyncio.run(run())
    assert isinstance(refused, KafkaException)
    assert "MSG_SIZE_TOO_LARGE" in str(refused)
    assert fine is None
    assert [m.value() for m in deployment.consume(deployment.settings.topic_dead_letters, 1)] \
        == [b"small"]


def test_fausts_commit_flush_waits_for_the_workers_records(
        deployment: Deployment, tmp_path: Any) -> None:
    settings = deployment.settings.model_copy(update={"state_dir": tmp_path / "state",
                                                      "clickhouse_url": None})
    pipeline = Pipeline(settings)

    async def run() -> list[bool]:
        futures = [await pipeline.output.send(settings.topic_alerts, b"a%d" % i)
                   for i in range(50)]
        await pipeline.app.producer.flush()  # what Faust's consumer awaits before a commit
        done = [future.done() for future in futures]
        await pipeline.output.stop()
        return done

    assert all(asyncio.run(run()))


def test_started_ahead_the_producer_reads_its_topics_before_its_first_send(
        deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    # What starting ahead saves (the first sends' wait for the producer id and the
    # leaders) is measured by the throughput bench (bench/PROFILE.md, "Eighteenth pass").
    topic = deployment.settings.topic_alerts

    async def run() -> None:
        output = OutputProducer(deployment.settings)
        await output.start([topic, deployment.settings.internal_topic_by_account])
        assert output._producer is not None  # started by `start`, not by a send
        await asyncio.wait_for(await output.send(topic, b"first", partition=0), 60)
        await output.stop()

    with caplog.at_level("WARNING", logger="streams.output"):
        asyncio.run(run())
    assert not [r for r in caplog.records if r.name == "streams.output"]
