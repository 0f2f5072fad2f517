"""CPU microseconds per event of each step a worker runs on batched input, without Kafka.

    python -m bench.steps [--events 300000] [--accounts 10000]

The steps of `streams.pipeline`, in its order, on the throughput bench's traffic in
records of 1,000 events: validating at the edge (the Rust reader of `streams.edge`),
ordering the input in event time (the edge's rows), re-keying and encoding for the
internal topic (its payloads joined), decoding there, ordering in event time, the
detection engine and the link stage (share suspicion and link observer, the
observations encoded into their records), each over slices of calls as a drain runs
them, the records taken, the link agent (the records read and counted into the key
evidence), the ClickHouse sink's buffering and row building (no insert), and one
snapshot per account. The worker's CPU per event (`python -m bench.throughput`) minus
the total here is what Kafka, Faust, asyncio and the ClickHouse insert cost on top.
After the total, what the Python edge (`decode_calls`, then msgspec's encoding) costs
for the same records, for comparison. The collector runs as in a worker (start-up heap
frozen, thresholds 50,000/20/100).
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from distillwatch_native import ObservationRecords

from bench._traffic import TrafficPlan, events
from models.engine import DetectionEngine
from models.linking.evidence import KeyEvidence, LinkEdge
from models.linking.observe import LinkObserver
from models.linking.suspicion import LinkingSuspicion
from models.records import ApiCall
from schemas.alert import Alert
from streams.cli import WORKER_GC_THRESHOLD
from streams.edge import EdgeCall, EdgeCalls, EdgeReader, edge_records
from streams.fast_decode import decode_calls
from streams.internal import (
    OBSERVATIONS_TAG,
    count_observations_or_tick,
    decode_by_account,
    encode_calls,
    group_by_partition,
)
from streams.ordering import EventTimeMerger
from streams.pipeline import INTERNAL_MAX_ITEMS, LINK_SLICE_CALLS
from streams.sinks import ClickHouseSink
from streams.statestore import encode_account

PARTITIONS = 4
_T = TypeVar("_T")


class _NoClickHouse:
    """The sink's client with nothing behind it: rows are built, not sent."""

    def insert(self, *_: Any, **__: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()
    n = args.events
    values = [e.value for e in events(TrafficPlan(accounts=args.accounts), 0, n)]
    records = [b"[" + b",".join(values[i:i + 1000]) + b"]" for i in range(0, n, 1000)]
    del values
    gc.collect()
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    rows: list[tuple[str, float]] = []

    def step(label: str, fn: Callable[[], _T]) -> _T:
        started = time.process_time()
        result = fn()
        rows.append((label, (time.process_time() - started) / n * 1e6))
        return result

    reader = EdgeReader(PARTITIONS)
    decoded = step("edge: Rust reader (JSON -> EdgeCalls, validated)",
                   lambda: [reader.read(r)[0] for r in records])
    assert reader.by_python == 0, "the Rust reader declined the bench's records"

    def order_input() -> list[EdgeCalls]:
        # As the ingest runs it: each record's calls (rows) into the edge's order, from
        # the input partitions in turn, released every few records.
        order: EventTimeMerger[EdgeCall] = EventTimeMerger(idle_s=1e9, max_hold_s=1e9,
                                                           edge=True)
        order.assign(range(PARTITIONS), 0.0)
        out: list[EdgeCalls] = []
        for i, calls in enumerate(decoded):
            order.add(i % PARTITIONS, [calls], 0.0)
            if i % (2 * PARTITIONS) == 2 * PARTITIONS - 1:
                out.append(cast(EdgeCalls, order.release(0.0)))
        order.assign([], 0.0)
        out.append(cast(EdgeCalls, order.release(0.0)))
        return out

    released = step("edge: input order (add, release)", order_input)
    internal = step("re-key by account and encode (payloads joined)", lambda: [
        value for calls in released for values in edge_records(calls, 1000).values()
        for value in values])
    by_account = step("decode internal records", lambda: [decode_by_account(v) for v in internal])

    def merge() -> list[ApiCall]:
        merger, out = EventTimeMerger(idle_s=1e9, max_hold_s=1e9), []
        merger.assign(range(PARTITIONS), 0.0)
        for i, calls in enumerate(by_account):
            assert isinstance(calls, list)
            merger.add(i % PARTITIONS, calls, 0.0)
            if i % (2 * PARTITIONS) == 2 * PARTITIONS - 1:
                out += merger.release(0.0)
        merger.assign([], 0.0)  # every partition gone: the rest goes
        return out + merger.release(0.0)

    ready = step("event-time merger (add, release)", merge)
    assert len(ready) == n, (len(ready), n)
    engine, observer, suspicion = DetectionEngine(), LinkObserver(), LinkingSuspicion()
    scores: list[float] = []
    engine_suspicion: list[float] = []

    def detect() -> None:
        # As a drain runs it: the engine over slices of calls (`process_many`).
        alerts: list[Alert] = []
        for i in range(0, n, LINK_SLICE_CALLS):
            end, error = engine.process_many(ready, i, min(n, i + LINK_SLICE_CALLS), math.inf,
                                             None, None, engine_suspicion, scores, alerts)
            assert error is None and end == min(n, i + LINK_SLICE_CALLS), error

    step("detection engine", detect)
    # As a drain writes them: encoded into their partitions' records as they are made.
    observations = ObservationRecords(OBSERVATIONS_TAG, PARTITIONS, INTERNAL_MAX_ITEMS)

    def link() -> None:
        for i in range(0, n, LINK_SLICE_CALLS):
            _, error = observer.observe_many_into(
                observations, ready[i:i + LINK_SLICE_CALLS],
                engine_suspicion[i:i + LINK_SLICE_CALLS], suspicion)
            assert error is None, error

    step("link stage: share suspicion, link observer, observations encoded", link)
    observed = len(observations)
    link_records = step("link observations: records taken", lambda: [
        value for values in observations.take().values() for value in values])
    evidence = KeyEvidence()
    edges: list[LinkEdge] = []

    def weigh() -> None:
        for value in link_records:
            count_observations_or_tick(value, evidence, edges)

    step("link agent: observations read from their records, key evidence", weigh)
    sink = ClickHouseSink(_NoClickHouse(), "db")  # type: ignore[arg-type]
    step("ClickHouse sink: count calls", lambda: [
        sink.add_calls(ready[i:i + 20_000], scores[i:i + 20_000]) for i in range(0, n, 20_000)])
    step("ClickHouse sink: build columns", sink.flush)

    def snapshots() -> None:
        for key in engine.accounts():
            account = engine.account_state(*key)
            assert account is not None
            encode_account(account, observer.export_account(key[1]),
                           suspicion.share.export_account(key[1]))

    step("account snapshots (each account once)", snapshots)

    print(f"{n:,} events in records of 1,000, {len(engine.accounts()):,} accounts, "
          f"{observed:,} link observations; CPU microseconds per event")
    for label, us in rows:
        print(f"{us:7.2f}  {label}")
    print(f"{sum(us for _, us in rows):7.2f}  total")
    edge_rows = len(rows)
    python_calls = step("", lambda: [decode_calls(r)[0] for r in records])
    step("", lambda: [
        encode_calls(group[i:i + 1000])
        for calls in python_calls
        for group in group_by_partition(calls, "account_id", PARTITIONS).values()
        for i in range(0, len(group), 1000)
    ])
    (_, decode_us), (_, encode_us) = rows[edge_rows:]
    print(f"the Python edge for the same records: {decode_us:.2f} decode (decode_calls), "
          f"{encode_us:.2f} re-key and encode (msgspec)")


if __name__ == "__main__":
    main()
