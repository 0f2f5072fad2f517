"""Microseconds per event of each step a worker does, in one process, without Kafka.

    python -m bench._stages [--events 50000] [--accounts 10000]

Prices the steps of `streams.pipeline` one by one (validation with pydantic, the
msgspec mirror of the prototype, `streams.fast_decode.decode_calls` with the GC on and off,
flattening to `ApiCall`, the internal topic encoding,
the detection engine with the ClickHouse sink's buffering), so PROFILE.md can say what
the Kafka/Faust machinery costs on top: the worker's CPU per event minus these.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

from bench._prototype_app import _many, _one, to_call
from bench._traffic import TrafficPlan, events
from models.records import ApiCall
from schemas.decode import decode_api_calls
from streams.fast_decode import decode_calls
from streams.internal import decode_by_account, encode_calls
from streams.pipeline import engine_from_settings
from streams.settings import Settings
from streams.sinks import ClickHouseSink

REPEAT = 3  # runs of each step; the fastest is reported, the others were disturbed


def timed(label: str, n: int, fn: Callable[[], object], rows: list[tuple[str, float]]) -> None:
    """Best CPU time of `REPEAT` runs of `fn`, per event: this process's CPU seconds, so
    other work on a shared machine does not count, as it would on the wall clock."""
    fn()  # warm up (and any first-call caches)
    best = float("inf")
    for _ in range(REPEAT):
        began = time.process_time()
        fn()
        best = min(best, time.process_time() - began)
    rows.append((label, best / n * 1e6))


def gc_off(fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` run with the cyclic garbage collector disabled (as a tuned worker might)."""
    def run() -> object:
        gc.disable()
        try:
            return fn()
        finally:
            gc.enable()
    return run


def each(fn: Callable[[bytes], object], values: list[bytes]) -> Callable[[], None]:
    """`fn` over every value, each result dropped at once as a worker drops a handled record
    (a list of 30,000 results would make the collector's work grow with the run)."""
    def run() -> None:
        for value in values:
            fn(value)
    return run


def pydantic_calls(value: bytes) -> list[ApiCall]:
    """The edge as it was: pydantic validation, then each event flattened."""
    return [ApiCall.from_event(e) for e in decode_api_calls(value)[0]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()
    n = args.events
    plan = TrafficPlan(accounts=args.accounts)
    values = [e.value for e in events(plan, 0, n)]
    batches = [b"[" + b",".join(values[i:i + 1000]) + b"]" for i in range(0, n, 1000)]
    rows: list[tuple[str, float]] = []

    timed("pydantic decode_api_calls, single-event records", n,
          lambda: [decode_api_calls(v) for v in values], rows)
    timed("pydantic decode_api_calls, batches of 1,000", n,
          lambda: [decode_api_calls(b) for b in batches], rows)
    for gc_label, wrap in (("GC on", lambda fn: fn), ("GC off", gc_off)):
        timed(f"edge before: pydantic + from_event, single-event records, {gc_label}", n,
              wrap(each(pydantic_calls, values)), rows)
        timed(f"edge before: pydantic + from_event, batches of 1,000, {gc_label}", n,
              wrap(each(pydantic_calls, batches)), rows)
        timed(f"edge after: decode_calls (msgspec), single-event records, {gc_label}", n,
              wrap(each(decode_calls, values)), rows)
        timed(f"edge after: decode_calls (msgspec), batches of 1,000, {gc_label}", n,
              wrap(each(decode_calls, batches)), rows)
    evs = [decode_api_calls(v)[0][0] for v in values]
    timed("ApiCall.from_event (pydantic event -> ApiCall)", n,
          lambda: [ApiCall.from_event(e) for e in evs], rows)
    timed("msgspec WireEvent decode + to_call, single", n,
          lambda: [to_call(_one(v)) for v in values], rows)
    timed("msgspec WireEvent decode + to_call, batches of 1,000", n,
          lambda: [to_call(e) for b in batches for e in _many(b)], rows)
    calls = [ApiCall.from_event(e) for e in evs]
    chunks = [calls[i:i + 1000] for i in range(0, n, 1000)]
    timed("internal encode_calls (msgpack list[ApiCall]), 1,000 per record", n,
          lambda: [encode_calls(c) for c in chunks], rows)
    blobs = [encode_calls(c) for c in chunks]
    timed("internal decode_by_account, 1,000 per record", n,
          lambda: [decode_by_account(b) for b in blobs], rows)

    settings = Settings()

    def detect() -> None:
        engine = engine_from_settings(settings)
        sink = ClickHouseSink(None, "x")  # type: ignore[arg-type]  # buffers only
        for c in calls:
            engine.process(c)
            sink.add_call(c, engine.last_score)

    timed("DetectionEngine.process + sink.add_call (fresh engine)", n, detect, rows)
    width = max(len(label) for label, _ in rows)
    print(f"{n:,} events, {args.accounts:,} accounts; CPU microseconds per event, best of {REPEAT}")
    for label, us in rows:
        print(f"  {label.ljust(width)}  {us:7.2f}")


if __name__ == "__main__":
    main()
