"""Micro benchmark of `streams.fast_decode.decode_calls`: µs of CPU per event, on records of
the throughput benchmark's traffic, against the reference decoding it must equal.

Run from the repository root::

    python -m bench.decode                    # 50,000 events, 7 rounds
    python -m bench.decode --events 200000 --rounds 11

The events are `bench/_traffic.py`'s (`TrafficPlan(accounts=--accounts)`: one event per
millisecond of event time, each with its own `ts`), encoded before timing starts and sent
either as JSON arrays of `--batch` events (a gateway's flush) or one event per record.

Two decodings run through the same `decode_calls` control flow, in alternating rounds:

- **reference**: `simhash` and `country` checked by msgspec patterns while reading, and
  each event flattened by `ApiCall.from_event(event, _seconds)` (keyword arguments, every
  timestamp parsed by `parse_rfc3339`): the module as of commit abc5075;
- **module**: `streams.fast_decode` as it is (the patterns checked in `_to_call`, a
  positional build, timestamps memoised: warm after the first round, as in a worker).

Both are checked to give the same calls and rejections on the traffic (by repr, so that
1.0 and 1, or 0.0 and -0.0, would differ). The two stages are timed apart too: msgspec's
read of a batch, and the flattening of events already read.

Timing is the CPU time of the process (`time.process_time_ns`: other processes on a shared
machine do not count), divided by the number of events; the output gives the median and
the best of the rounds. Each record's results are dropped before the next, as a worker
hands them on. The garbage collector runs as in `distillwatch worker`: the prebuilt input
frozen out of collection, thresholds at `WORKER_GC_THRESHOLD`.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Annotated, Any

import msgspec
from msgspec import Meta

import streams.fast_decode as fast_decode
from bench._traffic import TrafficPlan, events
from models.records import ApiCall
from streams.cli import WORKER_GC_THRESHOLD
from streams.fast_decode import decode_calls

# The reference Structs: the module's, with simhash and country as msgspec patterns.
SimHashPattern = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{16}\Z")]
CountryPattern = Annotated[str, Meta(pattern=r"^[A-Z]{2}\Z")]


class _Prompt(fast_decode._Prompt, frozen=True, gc=False):
    simhash: SimHashPattern | None = None


class _Client(fast_decode._Client, frozen=True, gc=False):
    country: CountryPattern | None = None


class _Event(fast_decode._Event, frozen=True, gc=False):
    prompt: _Prompt | None = None
    client: _Client | None = None


class _ClosedPrompt(fast_decode._ClosedPrompt, frozen=True, gc=False,
                    forbid_unknown_fields=True):
    simhash: SimHashPattern | None = None


class _ClosedClient(fast_decode._ClosedClient, frozen=True, gc=False,
                    forbid_unknown_fields=True):
    country: CountryPattern | None = None


class _ClosedEvent(fast_decode._ClosedEvent, frozen=True, gc=False,
                   forbid_unknown_fields=True):
    prompt: _ClosedPrompt | None = None
    client: _ClosedClient | None = None


def _from_event(event: Any) -> ApiCall:
    return ApiCall.from_event(event, fast_decode._seconds)


REFERENCE = {
    "_read_open_event": msgspec.json.Decoder(_Event).decode,
    "_read_closed_event": msgspec.json.Decoder(_ClosedEvent).decode,
    "_read_closed_batch": msgspec.json.Decoder(list[_ClosedEvent]).decode,
    "_to_call": _from_event,
}


@contextmanager
def reference() -> Iterator[None]:
    """`decode_calls` reading and flattening as the reference does (it looks these names up
    in its module at each call)."""
    module: Any = fast_decode
    kept = {name: getattr(module, name) for name in REFERENCE}
    for name, value in REFERENCE.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in kept.items():
            setattr(module, name, value)


DECODINGS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "reference": reference, "module": nullcontext,
}


def each(decode: Callable[[bytes], object], records: list[bytes]) -> Callable[[], object]:
    def run() -> None:
        for record in records:
            decode(record)
    return run


def cpu_us_per_event(work: Callable[[], object], count: int) -> float:
    began = time.process_time_ns()
    work()
    return (time.process_time_ns() - began) / count / 1_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1_000, help="events per JSON array")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    singles = [e.value for e in events(TrafficPlan(accounts=args.accounts), 0, args.events)]
    batches = [b"[" + b",".join(singles[i:i + args.batch]) + b"]"
               for i in range(0, len(singles), args.batch)]
    n = len(singles)

    outputs = []
    for decoding in DECODINGS.values():
        with decoding():
            outputs.append([repr(decode_calls(r)) for r in batches + singles[:2_000]])
    assert outputs[0] == outputs[1], "the decodings gave different calls or rejections"
    assert all(decode_calls(b)[1] == [] for b in batches), "the traffic has rejections"

    # Events already read, for the flattening alone: the first 10 batches, enough times
    # over to make about as many events as the other rows.
    sample = [fast_decode._read_closed_batch(b) for b in batches[:10]]
    repeats = -(-n // sum(len(record) for record in sample))

    def flatten_sample(to_call: Callable[[Any], ApiCall]) -> Callable[[], object]:
        def run() -> None:
            for _ in range(repeats):
                for record in sample:
                    [to_call(e) for e in record]
        return run

    # (what is timed, decoding in place, work, events per run)
    rows: list[tuple[str, str, Callable[[], object], int]] = []
    for name in DECODINGS:
        rows.append((f"decode_calls, batches of {args.batch:,}", name,
                     each(decode_calls, batches), n))
        rows.append(("decode_calls, single-event records", name, each(decode_calls, singles), n))
    rows.append((f"stage: msgspec read, batches of {args.batch:,}", "reference",
                 each(REFERENCE["_read_closed_batch"], batches), n))
    rows.append((f"stage: msgspec read, batches of {args.batch:,}", "module",
                 each(fast_decode._read_closed_batch, batches), n))
    rows.append(("stage: flattening", "reference", flatten_sample(_from_event),
                 repeats * sum(len(record) for record in sample)))
    rows.append(("stage: flattening", "module", flatten_sample(fast_decode._to_call),
                 repeats * sum(len(record) for record in sample)))

    timings: list[list[float]] = [[] for _ in rows]
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    try:
        for _ in range(args.rounds):  # the rows alternate within each round
            for (_, name, work, count), times in zip(rows, timings, strict=True):
                with DECODINGS[name]():
                    times.append(cpu_us_per_event(work, count))
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()

    print(f"{n:,} events of bench/_traffic.py ({args.accounts:,} accounts); CPU µs per event, "
          f"{args.rounds} rounds")
    print(f"{'timed':<38} {'decoding':<10} {'median':>7} {'best':>7}")
    for (timed, name, _, _), times in zip(rows, timings, strict=True):
        print(f"{timed:<38} {name:<10} {statistics.median(times):>7.2f} {min(times):>7.2f}")


if __name__ == "__main__":
    main()
