"""Microseconds per event of each step a worker does, in one process, without Kafka.

    python -m bench._stages [--events 50000] [--accounts 10000]

Prices the steps of `streams.pipeline` one by one (validation with pydantic, the
msgspec mirror of the prototype, flattening to `ApiCall`, the internal topic encoding,
the detection engine with the ClickHouse sink's buffering), so PROFILE.md can say what
the Kafka/Faust machinery costs on top: the worker's CPU per event minus these.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import msgspec

from bench._prototype_app import _many, _one, to_call
from bench._traffic import TrafficPlan, events
from models.records import ApiCall
from schemas.decode import decode_api_calls
from streams.internal import decode_internal, encode_call
from streams.pipeline import engine_from_settings
from streams.settings import Settings
from streams.sinks import ClickHouseSink


def timed(label: str, n: int, fn: Callable[[], object], rows: list[tuple[str, float]]) -> None:
    fn()  # warm up (and any first-call caches)
    began = time.perf_counter()
    fn()
    rows.append((label, (time.perf_counter() - began) / n * 1e6))


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
    evs = [decode_api_calls(v)[0][0] for v in values]
    timed("ApiCall.from_event (pydantic event -> ApiCall)", n,
          lambda: [ApiCall.from_event(e) for e in evs], rows)
    timed("msgspec WireEvent decode + to_call, single", n,
          lambda: [to_call(_one(v)) for v in values], rows)
    timed("msgspec WireEvent decode + to_call, batches of 1,000", n,
          lambda: [to_call(e) for b in batches for e in _many(b)], rows)
    calls = [ApiCall.from_event(e) for e in evs]
    timed("internal encode_call (msgpack, one record per call)", n,
          lambda: [encode_call(c) for c in calls], rows)
    encoded = [encode_call(c) for c in calls]
    timed("internal decode_internal", n, lambda: [decode_internal(v) for v in encoded], rows)
    enc_list = msgspec.msgpack.Encoder().encode
    dec_list = msgspec.msgpack.Decoder(list[ApiCall]).decode
    chunks = [calls[i:i + 1000] for i in range(0, n, 1000)]
    timed("msgpack list[ApiCall] encode, 1,000 per record", n,
          lambda: [enc_list(c) for c in chunks], rows)
    blobs = [enc_list(c) for c in chunks]
    timed("msgpack list[ApiCall] decode, 1,000 per record", n,
          lambda: [dec_list(b) for b in blobs], rows)

    settings = Settings()

    def detect() -> None:
        engine = engine_from_settings(settings)
        sink = ClickHouseSink(None, "x")  # type: ignore[arg-type]  # buffers only
        for c in calls:
            engine.process(c)
            sink.add_call(c, engine.last_score)

    timed("DetectionEngine.process + sink.add_call (fresh engine)", n, detect, rows)
    width = max(len(label) for label, _ in rows)
    print(f"{n:,} events, {args.accounts:,} accounts; microseconds per event")
    for label, us in rows:
        print(f"  {label.ljust(width)}  {us:7.2f}")


if __name__ == "__main__":
    main()
