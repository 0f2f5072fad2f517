"""Micro benchmark of the detection core: events/s of `DetectionEngine.process` on one
core, and bytes of engine state per account.

Run from the repository root::

    python -m bench.core                      # 10,000 and 100,000 accounts, then 1,000,000 sparse
    python -m bench.core --accounts 1000 --events 200000 --sparse-accounts 0

The traffic is synthetic and seeded: one hour of event time, most accounts ordinary
(chat with a few trace requests, agentic coding), `--harvesters` of them harvesting
reasoning traces and sending `--harvest-traffic` of the events, so that the scoring and
alert paths are exercised too. Events are built before timing starts; the timing covers
`process` only (and one final `advance`), in wall-clock time and in CPU time of the
process (the rate one dedicated core gives, whatever else the machine runs). State
bytes are measured in a second pass under tracemalloc: memory still allocated after
processing, divided by the number of accounts. The id strings of the account keys are
shared with the records and reported apart.

The sparse run holds a million accounts that send `--sparse-events` requests each (most
accounts of a real fleet are idle at any moment): it measures the state of an idle
account, and the speed when most events meet an account for the first time.

The garbage collector runs as in `distillwatch worker` (`streams/cli.py`): what exists
before timing starts (here the prebuilt events, there modules and the app) is frozen out
of collection, and the thresholds are raised to `WORKER_GC_THRESHOLD`. `--gc cpython`
measures CPython's default thresholds instead, with nothing frozen; the prebuilt
events then weigh on every full collection, which a worker never carries. The output
says which setting was measured.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from models.engine import DetectionEngine
from models.records import ApiCall
from streams.cli import WORKER_GC_THRESHOLD

T0 = 1_800_000_000.0
SPAN_S = 3600.0


@dataclass(frozen=True, slots=True)
class Result:
    accounts: int
    events: int
    events_per_s: float  # wall clock
    events_per_cpu_s: float  # CPU time of this process: the rate on one dedicated core
    state_bytes_per_account: float
    id_bytes_per_account: float
    alerts: int


def synthetic_calls(
    accounts: int, events: int, harvesters: int, harvest_traffic: float, seed: int
) -> list[ApiCall]:
    """`events` calls over `accounts` accounts in one hour of event time, nearly sorted.

    The first `harvesters` accounts harvest reasoning traces and send `harvest_traffic`
    of all events between them; the others share the rest evenly.
    """
    rng = random.Random(seed)
    ids = [(f"org_{i % 997}", f"key_{i:07d}") for i in range(accounts)]
    ordinary = accounts - harvesters
    harvester_weight = harvest_traffic * ordinary / (harvesters * (1 - harvest_traffic))
    weights = [harvester_weight if i < harvesters else 1.0 for i in range(accounts)]
    chosen = rng.choices(range(accounts), weights=weights, k=events)
    calls = []
    for n, account in enumerate(chosen):
        tenant_id, account_id = ids[account]
        ts = T0 + SPAN_S * n / events + rng.random()  # slightly out of order
        common: dict[str, Any] = {"event_id": f"evt_{n}", "ts": ts, "tenant_id": tenant_id,
                  "account_id": account_id, "model": "frontier-large", "status": 200,
                  "has_prompt": True, "has_client": True, "endpoint": "messages"}
        if account < harvesters:
            calls.append(ApiCall(**common, input_tokens=250, output_tokens=4096,
                                 stop_reason="max_tokens", turn=1, topic="math",
                                 cot_request=rng.random() < 0.95, max_tokens=4096))
        elif account % 3 == 0:
            calls.append(ApiCall(**common, input_tokens=12_000, output_tokens=600,
                                 stop_reason="tool_use", turn=rng.randint(2, 30),
                                 tool_count=6, topic="coding"))
        else:
            calls.append(ApiCall(**common, input_tokens=900, output_tokens=350,
                                 stop_reason="end_turn", turn=rng.randint(1, 8), topic="chat",
                                 cot_request=rng.random() < 0.05))
    return calls


@contextmanager
def collector(setting: str) -> Iterator[None]:
    """Run the block under the garbage-collector `setting`: `worker` or `cpython`."""
    gc.collect()
    if setting == "cpython":
        yield
        return
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def measure(
    accounts: int,
    events: int,
    harvesters: int,
    harvest_traffic: float,
    seed: int,
    gc_setting: str = "worker",
) -> Result:
    calls = synthetic_calls(accounts, events, harvesters, harvest_traffic, seed)
    with collector(gc_setting):
        elapsed, cpu, alerts = _time_process(calls)

    engine = DetectionEngine()
    process = engine.process
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for call in calls:
        process(call)
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    tracked = engine.accounts_tracked
    seen = {(c.tenant_id, c.account_id) for c in calls}
    id_bytes = sum(sys.getsizeof(t) + sys.getsizeof(a) for t, a in seen) / len(seen)
    return Result(
        accounts, events, events / elapsed, events / cpu, retained / tracked, id_bytes, alerts
    )


def _time_process(calls: list[ApiCall]) -> tuple[float, float, int]:
    """Wall-clock seconds, CPU seconds and alerts of one engine processing `calls`."""
    engine = DetectionEngine()
    process = engine.process
    alerts = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    for call in calls:
        if out := process(call):
            alerts += len(out)
    alerts += len(engine.advance(calls[-1].ts + 2 * SPAN_S))
    return time.perf_counter() - started, time.process_time() - cpu_started, alerts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--harvesters", type=int, default=100)
    parser.add_argument("--harvest-traffic", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sparse-accounts", type=int, default=1_000_000)
    parser.add_argument("--sparse-events", type=int, default=2, help="events per sparse account")
    parser.add_argument(
        "--gc", choices=["worker", "cpython"], default="worker",
        help="garbage collector as `distillwatch worker` sets it (default), or CPython's defaults",
    )
    args = parser.parse_args(argv)
    runs = [(accounts, args.events) for accounts in args.accounts]
    if args.sparse_accounts:
        runs.append((args.sparse_accounts, args.sparse_accounts * args.sparse_events))

    if args.gc == "worker":
        print("gc: as `distillwatch worker` (streams/cli.py): start-up heap frozen, thresholds "
              f"{WORKER_GC_THRESHOLD}")
    else:
        print(f"gc: CPython defaults, thresholds {gc.get_threshold()}, nothing frozen")
    print(f"{'accounts':>9} {'events':>10} {'events/s':>10} {'ev/CPU-s':>10} {'us/event':>9} "
          f"{'state B/acct':>12} {'+id strings':>11} {'alerts':>7}")
    for accounts, events in runs:
        r = measure(
            accounts, events, args.harvesters, args.harvest_traffic, args.seed, args.gc
        )
        print(f"{r.accounts:>9,} {r.events:>10,} {r.events_per_s:>10,.0f} "
              f"{r.events_per_cpu_s:>10,.0f} {1e6 / r.events_per_cpu_s:>9.2f} "
              f"{r.state_bytes_per_account:>12,.0f} "
              f"{r.id_bytes_per_account:>11,.0f} {r.alerts:>7,}")


if __name__ == "__main__":
    main()
