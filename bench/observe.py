"""Micro benchmark of the account-side linking step: µs per call of
`LinkingSuspicion.update` and `LinkObserver.observe`, the tuned code against the frozen
reference copy in `tests/models/linking/reference.py`, in alternation in one process.

Run from the repository root::

    python -m bench.observe                               # throughput traffic, 5 rounds
    python -m bench.observe --accounts 10000 --events 300000 --rounds 7
    python -m bench.observe --simulated .data/default/events.jsonl --events 300000
    python -m bench.observe --own-identity --accounts 100000  # identity memo missing

Traffic:

- `throughput` (default): the throughput bench's generator (`bench/_traffic.py`), encoded
  to JSON in records of 1,000 events and decoded with the worker's edge decoder
  (`streams.fast_decode.decode_calls`): `--accounts` ordinary accounts round robin, all
  with the same client, account and prompt, and one event in 100 from a harvester;
  with `--own-identity` every account has its own payment fingerprint and creation
  time, so more accounts than the observer's identity memo holds miss it on every call;
- `--simulated PATH`: the first `--events` lines of a simulator scenario
  (`distillwatch simulate`), decoded the same way and sorted by event time: accounts
  with their own clients and prompts, campaigns sharing some of them.

Each round builds a fresh observer and suspicion per implementation and times, in CPU
time of the process, first `suspicion.update` over every call (engine suspicion 0.0)
and then `observer.observe` over every call with the suspicions just computed; the order
of the two implementations alternates between rounds, and both see the same calls. The
loop's own cost (`for call, s in zip(...)`) is included in both columns. The garbage
collector runs as in `distillwatch worker`, and both implementations' module-level memos
stay warm between rounds, as in a long-running worker. Before timing, the two
implementations' observations and final per-account states are compared; a difference
aborts the run.
"""

from __future__ import annotations

import argparse
import gc
import time
import zlib
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from bench._rounds import alternate
from bench._traffic import TrafficPlan, events
from models.linking.observe import LinkObservation, LinkObserver
from models.linking.suspicion import LinkingSuspicion
from models.records import ApiCall
from streams.fast_decode import decode_calls
from tests.models.linking.reference import ReferenceLinkingSuspicion, ReferenceLinkObserver

RECORD_EVENTS = 1_000  # events per JSON array, as a gateway's batched record

Observer = Callable[[ApiCall, float], list[LinkObservation]]
Suspicion = Callable[[ApiCall, float], float]
Implementation = tuple[Callable[[], Any], Callable[[], Any]]  # observer, suspicion factories

IMPLEMENTATIONS: dict[str, Implementation] = {
    "reference": (ReferenceLinkObserver, ReferenceLinkingSuspicion),
    "tuned": (LinkObserver, LinkingSuspicion),
}


def _decode_records(lines: Iterable[bytes]) -> list[ApiCall]:
    calls: list[ApiCall] = []
    pending: list[bytes] = []
    for line in lines:
        pending.append(line)
        if len(pending) == RECORD_EVENTS:
            calls.extend(decode_calls(b"[" + b",".join(pending) + b"]")[0])
            pending = []
    if pending:
        calls.extend(decode_calls(b"[" + b",".join(pending) + b"]")[0])
    return calls


def throughput_calls(accounts: int, count: int, own_identity: bool = False) -> list[ApiCall]:
    """`count` calls of the throughput bench's traffic over `accounts` ordinary accounts;
    with `own_identity`, each account with its own payment fingerprint and creation time."""
    plan = TrafficPlan(accounts=accounts)
    calls = _decode_records(event.value for event in events(plan, 0, count))
    if own_identity:
        calls = [_own_identity(call) for call in calls]
    return calls


def _own_identity(call: ApiCall) -> ApiCall:
    number = zlib.crc32(call.account_id.encode())
    return msgspec.structs.replace(
        call,
        payment_fingerprint=f"pf_{number:08x}",  # a new string per call, as decoded
        created_at=(call.created_at or 0.0) - number % 86_400,
    )


def simulated_calls(path: Path, count: int) -> list[ApiCall]:
    """The first `count` events of a simulated scenario, in event-time order."""
    with path.open("rb") as handle:
        lines = (line.strip() for line, _ in zip(handle, range(count), strict=False))
        calls = _decode_records(line for line in lines if line)
    calls.sort(key=lambda call: call.ts)
    return calls


def run(implementation: Implementation, calls: list[ApiCall]) -> tuple[float, float]:
    """CPU seconds of the suspicion pass and of the observe pass over `calls`."""
    observer = implementation[0]()
    suspicion = implementation[1]()
    update: Suspicion = suspicion.update
    observe: Observer = observer.observe
    gc.collect()
    gc.freeze()
    started = time.process_time()
    values = [update(call, 0.0) for call in calls]
    updated = time.process_time()
    for call, value in zip(calls, values, strict=True):
        observe(call, value)
    observed = time.process_time()
    gc.unfreeze()
    return updated - started, observed - updated


def check_identical(calls: list[ApiCall]) -> int:
    """Observations and final states of both implementations are equal; returns how many
    observations the traffic causes."""
    outputs = []
    for observer_factory, suspicion_factory in IMPLEMENTATIONS.values():
        observer, suspicion = observer_factory(), suspicion_factory()
        observations = [
            observer.observe(call, suspicion.update(call, 0.0)) for call in calls
        ]
        accounts = {call.account_id for call in calls}
        states = {
            account: (
                observer.export_account(account).tolist(),
                suspicion.share.export_account(account).tolist(),
            )
            for account in accounts
        }
        outputs.append((observations, states))
    (reference, reference_states), (tuned, tuned_states) = outputs
    if reference != tuned or reference_states != tuned_states:
        raise SystemExit("the tuned implementation differs from the reference on this traffic")
    return sum(len(batch) for batch in reference)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--simulated", type=Path, default=None,
                        help="a simulator's events.jsonl instead of the throughput traffic")
    parser.add_argument("--own-identity", action="store_true",
                        help="every throughput account with its own payment and creation time")
    args = parser.parse_args(argv)

    if args.simulated is not None:
        calls = simulated_calls(args.simulated, args.events)
        traffic = f"simulated ({args.simulated})"
    else:
        calls = throughput_calls(args.accounts, args.events, args.own_identity)
        traffic = "throughput (bench/_traffic.py)"
        if args.own_identity:
            traffic += ", an identity per account"
    accounts = len({call.account_id for call in calls})
    observations = check_identical(calls)
    print(f"traffic: {traffic}, {len(calls):,} calls, {accounts:,} accounts, "
          f"{observations:,} observations ({observations / len(calls):.3f} per call); "
          "outputs and states identical")
    alternate({name: partial(run, implementation, calls)
               for name, implementation in IMPLEMENTATIONS.items()},
              args.rounds, len(calls), ("update", "observe"))


if __name__ == "__main__":
    main()
