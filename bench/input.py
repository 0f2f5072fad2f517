"""The input consumer alone: librdkafka (`streams.input.InputConsumer`) against the aiokafka
consumer the worker used before, in alternating rounds on the real broker.

Pre-produces N events to a topic of its own (single-event records keyed by account, or
`--batch` events per record, as `bench.throughput` does), then in each round reads them
all with a fresh consumer group of each kind, and the edge's Rust reader reads every
value, as the worker's ingest does:

- **aiokafka**: `getmany(max_records=2,000)` on the event loop, the values read by
  `EdgeReader.read_many` on a thread (the ingest until the thirteenth pass);
- **librdkafka**: `InputConsumer.take(2,000, ...)`: consume and read on the input thread.

Per record it prints the event loop thread's CPU time (what the rest of the worker
waits for: detection runs on that thread), the whole process's CPU time, and wall time.

    python -m bench.input                      # 300,000 single-event records, 5 rounds
    python -m bench.input --batch 1000 --events 1000000

Needs KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092). The topic is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from aiokafka import AIOKafkaConsumer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench._traffic import TrafficPlan, preproduce
from streams.edge import EdgeReader
from streams.input import InputConsumer
from streams.pipeline import INGEST_FETCH_BYTES, INGEST_MAX_RECORDS
from streams.settings import Settings

PARTITIONS = 4
TAKE, FETCH_BYTES = INGEST_MAX_RECORDS, INGEST_FETCH_BYTES  # as the worker's ingest


async def _aiokafka(bootstrap: str, topic: str, records: int) -> int:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"bench-aio-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", enable_auto_commit=False,
        fetch_max_bytes=FETCH_BYTES, max_partition_fetch_bytes=FETCH_BYTES // 4,
        fetch_max_wait_ms=50)
    edge, thread = EdgeReader(PARTITIONS), ThreadPoolExecutor(1, "edge")
    loop = asyncio.get_running_loop()
    await consumer.start()
    taken = calls = 0
    try:
        while taken < records:
            batches = await consumer.getmany(timeout_ms=200, max_records=TAKE)
            values = [r.value for rs in batches.values() for r in rs]
            taken += len(values)
            if values:
                reads = await loop.run_in_executor(thread, edge.read_many, values)
                calls += sum(len(valid) for valid, _ in reads)
    finally:
        await consumer.stop()
        thread.shutdown()
    return calls


async def _librdkafka(settings: Settings, records: int) -> int:
    async def hand_over(_: list[int]) -> dict[int, int]:
        return {}

    consumer = InputConsumer(settings, f"bench-rdk-{uuid.uuid4().hex[:8]}",
                             EdgeReader(PARTITIONS), hand_over, lambda _: None, FETCH_BYTES)
    await consumer.start()
    taken = calls = 0
    try:
        while taken < records:
            for run in await consumer.take(TAKE, 0.2, [], {}):
                taken += len(run.offsets)
                calls += sum(len(valid) for valid, _ in run.reads)
    finally:
        await consumer.stop()
    return calls


def _timed(read: Callable[[], Awaitable[int]]) -> tuple[float, float, float, int]:
    """(event loop thread CPU s, process CPU s, wall s, calls read) of one read."""
    async def run() -> tuple[float, float, float, int]:
        thread0, cpu0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
        calls = await read()
        return (time.thread_time() - thread0, time.process_time() - cpu0,
                time.perf_counter() - wall0, calls)
    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=1, help="events per record")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    topic = f"bench-input-{uuid.uuid4().hex[:8]}"
    settings = Settings.model_validate({"KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                                        "DISTILLWATCH_TOPIC_API_CALLS": topic})
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result()
    try:
        produced = preproduce(bootstrap, topic, TrafficPlan(accounts=10_000), 0, args.events,
                              args.batch)
        if produced.failed:
            raise SystemExit(f"{produced.failed} records failed to produce")
        records = produced.records
        print(f"{records:,} records of {args.batch} event(s) in {topic}, {PARTITIONS} "
              f"partitions; us per record")
        print(f"{'round':>5} {'consumer':>10} {'loop CPU':>9} {'CPU':>7} {'wall':>7}")
        runs: dict[str, Callable[[], Awaitable[int]]] = {
            "aiokafka": lambda: _aiokafka(bootstrap, topic, records),
            "librdkafka": lambda: _librdkafka(settings, records),
        }
        rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
        for round_ in range(args.rounds):
            names = list(runs) if round_ % 2 == 0 else list(reversed(runs))
            for name in names:
                loop_s, cpu_s, wall_s, calls = _timed(runs[name])
                if calls != args.events:
                    raise SystemExit(f"{name} read {calls:,} calls, not {args.events:,}")
                per = 1e6 / records
                rows[name].append((loop_s * per, cpu_s * per, wall_s * per))
                print(f"{round_:>5} {name:>10} {loop_s * per:>9.2f} {cpu_s * per:>7.2f} "
                      f"{wall_s * per:>7.2f}", flush=True)
        print("median (min) us per record:")
        for name, values in rows.items():
            print(f"{name:>10}: " + "  ".join(
                f"{label} {statistics.median(c):.2f} ({min(c):.2f})"
                for label, c in zip(("loop CPU", "CPU", "wall"), zip(*values, strict=True),
                                    strict=True)))
    finally:
        admin.delete_topics([topic])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
