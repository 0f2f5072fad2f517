"""Memory of the per-account models in one process, and what evicting every account gives back.

    python -m bench.memory [--accounts 1000000]

Runs one call per account of the throughput bench's traffic (records of 1,000 decoded at
the edge) through what a worker keeps per account (detection engine, linking suspicion,
link observer), then forgets every account as eviction does, then rebuilds the three
dictionaries. After each step: resident anonymous memory (the heaps, from /proc) and the
blocks Python's allocator has handed out, with a collection and a heap trim first.
"""

from __future__ import annotations

import argparse
import gc
from itertools import islice

from bench._traffic import TrafficPlan, events
from models.engine import DetectionEngine
from models.linking.observe import LinkObserver
from models.linking.suspicion import LinkingSuspicion
from streams.cli import WORKER_GC_THRESHOLD
from streams.fast_decode import decode_calls
from streams.memory import process_memory, trim


def _reading(label: str) -> dict[str, int]:
    gc.collect()
    trim()
    now = process_memory()
    print(f"{label:34s} anonymous {now['anonymous'] / 2**20:8.1f} MiB, "
          f"Python blocks {now['python_blocks']:,}", flush=True)
    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.accounts
    engine, observer, suspicion = DetectionEngine(), LinkObserver(), LinkingSuspicion()
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    start = _reading("start")
    values = (event.value for event in events(TrafficPlan(accounts=n), 0, n))
    while record := list(islice(values, 1000)):  # records of 1,000, made as they are read
        for call in decode_calls(b"[" + b",".join(record) + b"]")[0]:
            engine.process(call)
            observer.observe(call, suspicion.update(call, engine.last_suspicion))
    held = _reading(f"{engine.accounts_tracked:,} accounts held")
    per_account = (held["anonymous"] - start["anonymous"]) / max(engine.accounts_tracked, 1)
    blocks = (held["python_blocks"] - start["python_blocks"]) / max(engine.accounts_tracked, 1)
    print(f"  {per_account:,.0f} B and {blocks:.1f} Python blocks per account")
    for tenant_id, account_id in engine.accounts():
        engine.evict_account(tenant_id, account_id)
        observer.forget_account(account_id)
        suspicion.share.forget_account(account_id)
    _reading("every account evicted")
    engine._accounts = dict(engine._accounts)  # a dict keeps its table once emptied
    observer._accounts = dict(observer._accounts)
    suspicion.share._accounts = dict(suspicion.share._accounts)
    _reading("dictionaries rebuilt")


if __name__ == "__main__":
    main()
