"""Micro benchmark of reading by-account records: msgspec's decoder of `list[ApiCall]`
against the Rust `CallDecoder` (native/src/calls.rs), CPU µs per call.

    python -m bench.decode_internal [--events 300000] [--accounts 10000] [--rounds 7]
                                    [--slots 65536]

The records are those of `python -m bench.steps`: the throughput bench's traffic read by
the Rust edge in records of 1,000 events, grouped by by-account partition (4) and encoded
1,000 calls at most to a record. Both decoders are checked to give the same calls (by
repr) before timing. Three things are timed, in alternating rounds:

- **decode, discard**: each record's calls dropped before the next is read, as
  `python -m bench.decode` does (their memory is reused at once);
- **decode, keep**: every record's calls kept in a list, as the detect stage holds a
  drain's calls (memory touched for the first time is part of it);
- **free kept**: dropping that list, as a drain does after the link stage.

The Rust decoder keeps its cache across rounds, as a worker does (warm after the first).
Timing is the CPU time of the process (`time.process_time_ns`) divided by the calls; the
garbage collector runs as in `distillwatch worker` (start-up heap frozen, thresholds
`WORKER_GC_THRESHOLD`).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import msgspec
from distillwatch_native import CallDecoder

from bench._traffic import TrafficPlan, events
from models.records import ApiCall
from streams.cli import WORKER_GC_THRESHOLD
from streams.edge import EdgeReader, encode_edge_calls, group_by_destination

PARTITIONS = 4


def by_account_records(count: int, accounts: int) -> list[bytes]:
    """`bench.steps`' internal records of `count` events of `accounts` ordinary accounts."""
    values = [e.value for e in events(TrafficPlan(accounts=accounts), 0, count)]
    reader = EdgeReader(PARTITIONS)
    records = []
    for i in range(0, count, 1000):
        calls, rejected = reader.read(b"[" + b",".join(values[i:i + 1000]) + b"]")
        assert rejected == [], "the edge rejected events of the bench's traffic"
        for group in group_by_destination(calls).values():
            records += [encode_edge_calls(group[j:j + 1000]) for j in range(0, len(group), 1000)]
    assert reader.by_python == 0, "the Rust edge declined the bench's records"
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--slots", type=int, default=65_536, help="the Rust cache's slots")
    args = parser.parse_args()

    records = by_account_records(args.events, args.accounts)
    read_msgspec = msgspec.msgpack.Decoder(list[ApiCall]).decode
    decoder = CallDecoder(ApiCall, slots=args.slots)

    def msgspec_calls(value: bytes) -> object:
        return read_msgspec(memoryview(value)[1:])

    def rust_calls(value: bytes) -> object:
        calls = decoder.decode(value, 1)
        assert calls is not None, "the Rust decoder declined a record"
        return calls

    decoders: dict[str, Callable[[bytes], object]] = {"msgspec": msgspec_calls,
                                                      "Rust": rust_calls}
    assert all(repr(msgspec_calls(v)) == repr(rust_calls(v)) for v in records)
    n = sum(len(read_msgspec(memoryview(v)[1:])) for v in records)

    timings: dict[tuple[str, str], list[float]] = {}

    def timed(row: str, name: str, work: Callable[[], None]) -> None:
        began = time.process_time_ns()
        work()
        timings.setdefault((row, name), []).append((time.process_time_ns() - began) / n / 1e3)

    def discard(decode: Callable[[bytes], object]) -> Callable[[], None]:
        def run() -> None:
            for value in records:
                decode(value)
        return run

    kept: list[object] = []

    def keep(decode: Callable[[bytes], object]) -> Callable[[], None]:
        def run() -> None:
            kept.extend([decode(value) for value in records])
        return run

    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    try:
        for _ in range(args.rounds):
            for name, decode in decoders.items():
                timed("decode, discard", name, discard(decode))
                timed("decode, keep", name, keep(decode))
                timed("free kept", name, kept.clear)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()

    print(f"{n:,} calls in {len(records):,} by-account records ({args.accounts:,} accounts); "
          f"CPU µs per call, {args.rounds} rounds; Rust cache {decoder.cached:,} of "
          f"{decoder.slots:,} slots")
    print(f"{'timed':<18} {'decoder':<8} {'median':>7} {'best':>7}")
    for (row, name), times in timings.items():
        print(f"{row:<18} {name:<8} {statistics.median(times):>7.3f} {min(times):>7.3f}")
    for name in decoders:
        keep_and_free = [k + f for k, f in zip(timings["decode, keep", name],
                                               timings["free kept", name], strict=True)]
        print(f"{'keep + free':<18} {name:<8} {statistics.median(keep_and_free):>7.3f} "
              f"{min(keep_and_free):>7.3f}")


if __name__ == "__main__":
    main()
