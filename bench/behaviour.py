"""Micro benchmark of the engine's per-call behaviour step: µs per call of
`BehaviourDetector.assess_one` (counting and the gate; judging for the calls past it) and
of `BehaviourDetector.suspicion`, the Rust core against the frozen Python reference in
`tests/models/behaviour_reference.py`, in alternation in one process.

Run from the repository root::

    python -m bench.behaviour                               # throughput traffic, 5 rounds
    python -m bench.behaviour --accounts 10000 --events 300000 --rounds 7
    python -m bench.behaviour --simulated .data/default/events.jsonl --events 300000

Traffic as in `python -m bench.observe` (the throughput bench's generator, or a simulated
scenario), one state per account. Each round builds a fresh detector and states per
implementation and times, in CPU time of the process, `assess_one` over every call, then
`suspicion` of each call's account at the call's time; the order of the two
implementations alternates between rounds, and both see the same calls. The loop's own
cost is in both columns. Before timing, the two implementations' findings, suspicions and
final states are compared; a difference aborts the run.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench._rounds import alternate
from bench.observe import simulated_calls, throughput_calls
from models.behaviour import BehaviourDetector, BehaviourState
from models.records import ApiCall
from tests.models.behaviour_reference import ReferenceBehaviourDetector

IMPLEMENTATIONS: dict[str, Callable[[], BehaviourDetector]] = {
    "reference": ReferenceBehaviourDetector,
    "rust core": BehaviourDetector,
}


def _states(detector: BehaviourDetector, calls: list[ApiCall]) -> list[BehaviourState]:
    """Each call's account state (one per account, shared by its calls)."""
    by_account: dict[str, BehaviourState] = {}
    return [by_account.setdefault(call.account_id, detector.new_state()) for call in calls]


def run(factory: Callable[[], BehaviourDetector], calls: list[ApiCall]) -> tuple[float, float]:
    """CPU seconds of the `assess_one` pass and of the `suspicion` pass over `calls`."""
    detector = factory()
    states = _states(detector, calls)
    assess, suspicion = detector.assess_one, detector.suspicion
    gc.collect()
    gc.freeze()
    started = time.process_time()
    for state, call in zip(states, calls, strict=True):
        assess(state, call)
    assessed = time.process_time()
    for state, call in zip(states, calls, strict=True):
        suspicion(state, call.ts)
    judged = time.process_time()
    gc.unfreeze()
    return assessed - started, judged - assessed


def check_identical(calls: list[ApiCall]) -> int:
    """Findings, suspicions and final states of both implementations are equal; returns
    how many calls were judged (past the gate with a finding)."""
    outputs = []
    for factory in IMPLEMENTATIONS.values():
        detector = factory()
        states = _states(detector, calls)
        scores, suspicions = [], []
        for state, call in zip(states, calls, strict=True):
            finding = detector.assess_one(state, call)
            scores.append(None if finding is None else finding.score)
            suspicions.append(detector.suspicion(state, call.ts))
        finals = {id(state): pickle.dumps(state) for state in states}
        outputs.append((scores, suspicions, sorted(finals.values())))
    if outputs[0] != outputs[1]:
        raise SystemExit("the Rust core differs from the reference on this traffic")
    return sum(score is not None for score in outputs[0][0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--simulated", type=Path, default=None,
                        help="a simulator's events.jsonl instead of the throughput traffic")
    args = parser.parse_args(argv)
    if args.simulated is not None:
        calls = simulated_calls(args.simulated, args.events)
        traffic = f"simulated ({args.simulated})"
    else:
        calls = throughput_calls(args.accounts, args.events)
        traffic = "throughput (bench/_traffic.py)"
    accounts = len({call.account_id for call in calls})
    judged = check_identical(calls)
    print(f"traffic: {traffic}, {len(calls):,} calls, {accounts:,} accounts, {judged:,} "
          "with a finding; findings, suspicions and states identical")
    alternate({name: partial(run, factory, calls) for name, factory in IMPLEMENTATIONS.items()},
              args.rounds, len(calls), ("assess", "suspicion"))


if __name__ == "__main__":
    main()
