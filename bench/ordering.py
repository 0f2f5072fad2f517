"""Micro benchmark of `streams.ordering.EventTimeMerger`: ns per call of `add` and of
`release`, against the heap reference the differential tests hold it to.

Run from the repository root::

    python -m bench.ordering                   # 10^6 calls, both scenarios, both mergers
    python -m bench.ordering --calls 200000 --scenario lagging --impl merger

The input is synthetic and seeded, built before timing starts: `--partitions` partitions
each deliver records of `--record` calls, 20,000 per second of event time per partition,
event times rounded to `--resolution` seconds (at the default millisecond about 20 calls
of a partition share a time, in no particular account order, the hard case for sorting;
`--resolution 1e-6` makes equal times rare), about 2 % of the calls of a record up to
0.2 s early, out of order. Partitions start up to 3 s of event time apart, so tens of
thousands of calls wait for the slowest. Records come in a shuffled round robin, one record
every 12.5 ms of wall clock, with `release` after every `--release-every` records (every
50 ms by default), as the detect stage does. Scenarios:

- **even**: the partitions keep pace, a few seconds of event time apart;
- **lagging**: partition 0 is 60 s of event time behind the others, so the others'
  calls wait until `max_hold_s` (2 s) lets them go: about 40 releases' worth held.

Timing is the CPU time of the thread (`time.thread_time_ns`, so that other processes on
the machine do not count; about 1 us per reading, 1-2 ns per call here) around each
`add` and `release`, with the garbage collector set as in `distillwatch worker`; ns/call
divides by the number of calls, best of `--repeat` runs. The mergers timed are checked
to release every call once, in the same order.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import time
from collections.abc import Callable
from typing import Protocol

from models.records import ApiCall
from streams.cli import WORKER_GC_THRESHOLD
from streams.ordering import EventTimeMerger

T0 = 1_800_000_000.0
TICK_S = 0.0125  # wall clock between records
RATE = 20_000.0  # calls per second of event time, per partition


class Merger(Protocol):
    def add(self, partition: int, calls: list[ApiCall], now: float) -> None: ...
    def release(self, now: float) -> list[ApiCall]: ...


def records(calls: int, partitions: int, size: int, lagging: bool, resolution: float,
            seed: int) -> list[tuple[int, list[ApiCall]]]:
    """(partition, calls) in delivery order."""
    rng = random.Random(seed)
    position = [T0 + rng.uniform(0, 3) for _ in range(partitions)]
    if lagging:
        position[0] -= 60.0
    tenants = [f"tenant{i}" for i in range(20)]
    accounts = [f"acct{i}" for i in range(5_000)]
    out: list[tuple[int, list[ApiCall]]] = []
    made = 0
    while made < calls:
        order = list(range(partitions))
        rng.shuffle(order)
        for partition in order:
            n = min(size, calls - made)
            if n <= 0:
                break
            start = position[partition]
            times = [round((start + i / RATE) / resolution) * resolution for i in range(n)]
            for _ in range(n // 50):  # a few calls arrive late within their record
                i = rng.randrange(n)
                times[i] = round((times[i] - rng.uniform(0, 0.2)) / resolution) * resolution
            position[partition] = start + n / RATE
            out.append((partition, [
                ApiCall(f"e{made + i}", ts, rng.choice(tenants), rng.choice(accounts),
                        "m", 200, 1, 1)
                for i, ts in enumerate(times)]))
            made += n
    return out


def run(make: Callable[[], Merger], feed: list[tuple[int, list[ApiCall]]],
        release_every: int) -> tuple[int, int, list[str]]:
    """Total ns in add, total ns in release, and the event ids in release order."""
    merger = make()
    clock = time.thread_time_ns
    add_ns = release_ns = 0
    released: list[str] = []
    now = 0.0
    for n, (partition, calls) in enumerate(feed, 1):
        now += TICK_S
        t = clock()
        merger.add(partition, calls, now)
        add_ns += clock() - t
        if n % release_every == 0:
            t = clock()
            out = merger.release(now)
            release_ns += clock() - t
            released.extend(c.event_id for c in out)
    t = clock()
    out = merger.release(math.inf)
    release_ns += clock() - t
    released.extend(c.event_id for c in out)
    return add_ns, release_ns, released


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--record", type=int, default=1_000, help="calls per record")
    parser.add_argument("--release-every", type=int, default=4, help="records")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--scenario", choices=["even", "lagging", "both"], default="both")
    parser.add_argument("--impl", choices=["merger", "heap", "both"], default="both")
    parser.add_argument("--resolution", type=float, default=1e-3, help="of event times, s")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    mergers: dict[str, Callable[[], Merger]] = {}
    if args.impl in ("heap", "both"):
        # The reference lives with the tests that compare the two.
        from tests.streams.test_ordering import HeapEventTimeMerger
        mergers["heap (reference)"] = HeapEventTimeMerger
    if args.impl in ("merger", "both"):
        mergers["EventTimeMerger"] = EventTimeMerger
    scenarios = ["even", "lagging"] if args.scenario == "both" else [args.scenario]

    print(f"{args.calls:,} calls, {args.partitions} partitions, records of {args.record}, "
          f"release every {args.release_every} records; event times in steps of "
          f"{args.resolution:g} s; best of {args.repeat}")
    print(f"{'scenario':<9} {'merger':<17} {'add ns/call':>12} {'release ns/call':>16} "
          f"{'total ns/call':>14}")
    for scenario in scenarios:
        feed = records(args.calls, args.partitions, args.record, scenario == "lagging",
                       args.resolution, args.seed)
        total = sum(len(calls) for _, calls in feed)
        gc.collect()
        gc.freeze()  # the prebuilt input, as a worker's modules and app are
        thresholds = gc.get_threshold()
        gc.set_threshold(*WORKER_GC_THRESHOLD)
        orders: dict[str, list[str]] = {}
        try:
            for name, make in mergers.items():
                best_add = best_release = math.inf
                for _ in range(args.repeat):
                    add_ns, release_ns, orders[name] = run(make, feed, args.release_every)
                    best_add, best_release = min(best_add, add_ns), min(best_release,
                                                                        release_ns)
                    gc.collect()
                n = args.calls
                print(f"{scenario:<9} {name:<17} {best_add / n:>12.0f} "
                      f"{best_release / n:>16.0f} {(best_add + best_release) / n:>14.0f}")
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
        for name, order in orders.items():
            assert len(set(order)) == len(order) == total, f"{name} lost or repeated calls"
        if len(orders) == 2:
            first, second = orders.values()
            assert first == second, "the mergers released calls in different orders"


if __name__ == "__main__":
    main()
