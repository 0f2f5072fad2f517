"""Memory of the per-account models in one process, held live and held packed.

    python -m bench.memory [--accounts 1000000] [--pack-s 300 | --no-packing]

Runs one call per account of the throughput bench's traffic (records of 1,000 decoded at
the edge, one millisecond of event time apart) through what a worker keeps per account
(detection engine, linking suspicion, link observer). Like a worker, every
`EVICT_EVERY_S` of event time it packs the accounts idle for `--pack-s` (their snapshot,
`streams.statestore.encode_account`, kept in a dict by store key, the live objects
forgotten); at the end event time moves on and every idle account is packed. Then the
packed accounts are dropped, as eviction to the store does. After each step: resident
anonymous memory (the heaps, from /proc) and the blocks Python's allocator has handed
out, with a collection and a heap trim first. `--no-packing` holds every account live.
"""

from __future__ import annotations

import argparse
import gc
import math
from itertools import islice

from bench._traffic import TrafficPlan, events
from models.engine import DetectionEngine
from models.linking.observe import LinkObserver
from models.linking.suspicion import LinkingSuspicion
from streams.cli import WORKER_GC_THRESHOLD
from streams.fast_decode import decode_calls
from streams.memory import process_memory, trim
from streams.pipeline import EVICT_EVERY_S, next_boundary
from streams.settings import Settings
from streams.statestore import account_key, encode_account


def _reading(label: str) -> dict[str, int]:
    gc.collect()
    trim()
    now = process_memory()
    print(f"{label:34s} anonymous {now['anonymous'] / 2**20:8.1f} MiB, "
          f"Python blocks {now['python_blocks']:,}", flush=True)
    return now


class Models:
    """The three per-account models and the packed accounts, as a worker holds them."""

    def __init__(self) -> None:
        self.engine = DetectionEngine()
        self.observer = LinkObserver()
        self.suspicion = LinkingSuspicion()
        self.packed: dict[bytes, bytes] = {}

    def pack_idle(self, before_ts: float) -> int:
        engine, observer, share = self.engine, self.observer, self.suspicion.share
        keys = engine.idle_accounts(before_ts)
        for tenant_id, account_id in keys:
            account = engine.evict_account(tenant_id, account_id)
            assert account is not None
            self.packed[account_key(tenant_id, account_id)] = encode_account(
                account, observer.export_account(account_id), share.export_account(account_id))
            observer.forget_account(account_id)
            share.forget_account(account_id)
        return len(keys)

    def rebuild_dicts(self) -> None:
        """A dict keeps its table once emptied: the models rebuild theirs, as a worker has
        them do after a sweep that took most of the live accounts."""
        self.engine.shrink()
        self.observer.shrink()
        self.suspicion.share.shrink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--pack-s", type=float, default=Settings().state_pack_s,
                        help="event-time seconds idle before an account is packed")
    parser.add_argument("--no-packing", action="store_true", help="hold every account live")
    args = parser.parse_args()
    n = args.accounts
    models = Models()
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    start = _reading("start")
    values = (event.value for event in events(TrafficPlan(accounts=n), 0, n))
    next_sweep, live_max, ts = -math.inf, 0, 0.0
    while record := list(islice(values, 1000)):  # records of 1,000, made as they are read
        for call in decode_calls(b"[" + b",".join(record) + b"]")[0]:
            models.engine.process(call)
            models.observer.observe(call, models.suspicion.update(
                call, models.engine.last_suspicion))
            ts = call.ts
        live_max = max(live_max, models.engine.accounts_tracked)
        if not args.no_packing and ts >= next_sweep:
            models.pack_idle(ts - args.pack_s)
            next_sweep = next_boundary(ts, EVICT_EVERY_S)
    engine = models.engine
    tracked = engine.accounts_tracked + len(models.packed)
    held = _reading(f"{tracked:,} accounts held")
    grown = held["anonymous"] - start["anonymous"]
    print(f"  {engine.accounts_tracked:,} live (at most {live_max:,} at once), "
          f"{len(models.packed):,} packed: {grown / tracked:,.0f} B and "
          f"{(held['python_blocks'] - start['python_blocks']) / tracked:.1f} Python blocks"
          " per account")
    if not args.no_packing:
        # Event time moves on: the cohort epochs are scored and every account is idle.
        engine.advance(ts + 3600.0)
        models.pack_idle(math.inf)
        models.rebuild_dicts()
        idle = _reading(f"{engine.accounts_tracked:,} live, {len(models.packed):,} packed")
        packed = len(models.packed)
        value_bytes = sum(map(len, models.packed.values())) / max(packed, 1)
        print(f"  {(idle['anonymous'] - start['anonymous']) / tracked:,.0f} B and "
              f"{(idle['python_blocks'] - start['python_blocks']) / tracked:.1f} Python blocks"
              f" per account, every one idle ({value_bytes:,.0f} B of snapshot each)")
    for tenant_id, account_id in engine.accounts():
        engine.evict_account(tenant_id, account_id)
        models.observer.forget_account(account_id)
        models.suspicion.share.forget_account(account_id)
    models.packed = {}
    models.rebuild_dicts()
    _reading("every account dropped")


if __name__ == "__main__":
    main()
