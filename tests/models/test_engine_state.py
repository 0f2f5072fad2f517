"""The engine's state survives a process: snapshots taken, evicted, imported, same alerts.

A worker pickles accounts and the shared models into its store (streams/statestore.py)
and imports them into a fresh engine; these tests do the same without any I/O.
"""

from __future__ import annotations

import pickle
from typing import Any

from models.engine import DetectionEngine
from models.records import ApiCall
from schemas.alert import Alert
from tests.models.linking.runs import simulated


def _calls() -> tuple[ApiCall, ...]:
    # Four hours of the demo scenario: campaigns, look-alikes, cohorts past their warm-up.
    return simulated("demo", 4 * 3600.0, 1.0).calls


def _dump(alerts: list[Alert]) -> list[str]:
    return [a.model_dump_json() for a in alerts]


def _copy(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def test_a_new_engine_resumes_from_snapshots_with_the_same_alerts() -> None:
    calls = _calls()
    half = len(calls) // 2
    reference = DetectionEngine()
    expected = [a for call in calls for a in reference.process(call)]
    assert any(a.status == "firing" for a in expected[len(expected) // 2:])

    first = DetectionEngine()
    got = [a for call in calls[:half] for a in first.process(call)]
    # Accounts and shared models pickled separately, as the store keeps them.
    accounts = {key: _copy(first.account_state(*key)) for key in first.accounts()}
    shared = _copy(first.export_shared())
    assert any(shared["pending"].values()), "the cut must fall inside an epoch"

    second = DetectionEngine()
    for key in DetectionEngine.shared_accounts(shared):
        second.import_account(*key, accounts.pop(key))
    second.import_shared(shared)
    for key, account in accounts.items():
        second.import_account(*key, account)
    got += [a for call in calls[half:] for a in second.process(call)]
    got += second.advance(calls[-1].ts + 7200.0)
    expected += reference.advance(calls[-1].ts + 7200.0)
    assert _dump(got) == _dump(expected)


def test_idle_accounts_leave_memory_and_come_back_unchanged() -> None:
    calls = _calls()
    reference = DetectionEngine()
    expected = [a for call in calls for a in reference.process(call)]

    engine = DetectionEngine()
    stored: dict[tuple[str, str], Any] = {}
    got: list[Alert] = []
    evicted = 0
    next_sweep = calls[0].ts + 600.0
    for call in calls:
        key = (call.tenant_id, call.account_id)
        if engine.account_state(*key) is None and key in stored:
            engine.import_account(*key, _copy(stored.pop(key)))
        got += engine.process(call)
        if call.ts >= next_sweep:  # idle 20 min: out of memory, into the "store"
            for idle in engine.idle_accounts(call.ts - 1200.0):
                stored[idle] = _copy(engine.evict_account(*idle))
                evicted += 1
            next_sweep += 600.0
    assert evicted > 100
    assert engine.accounts_tracked < reference.accounts_tracked
    assert _dump(got) == _dump(expected)
    # Accounts in an open episode never leave: they must be able to resolve.
    assert all(engine.account_state(*k) is not None for k, a in
               ((k, reference.account_state(*k)) for k in reference.accounts())
               if a is not None and a.episode is not None)


def test_samples_only_learnt_from_come_back_without_their_accounts() -> None:
    calls = _calls()
    first = DetectionEngine()
    for call in calls[: len(calls) // 2]:
        first.process(call)
    shared = _copy(first.export_shared())
    samples = [s for epoch in shared["pending"].values() for s in epoch]
    assert any(s[4] for s in samples) and any(not s[4] for s in samples)
    # Only the accounts of samples to be scored need to be in memory first...
    assert DetectionEngine.shared_accounts(shared) == {s[1] for s in samples if s[4]}
    second = DetectionEngine()
    second.import_shared(shared)  # ... and with none imported, the others still come back
    assert second.cohorts is not None
    back = [s for epoch in second.cohorts._pending.values() for s in epoch]
    assert [s[1] for s in back] == [s[1] for s in samples if not s[4]]
    assert all(s[2] is None for s in back)


def test_a_cap_on_live_accounts_takes_the_longest_idle_of_the_quiet_ones() -> None:
    engine = DetectionEngine()
    t0 = 1_800_000_000.0
    for i in range(10):  # k0 ... k9, ten seconds apart
        engine.process(ApiCall(f"e{i}", t0 + 10 * i, "org", f"k{i}", "m", 200, 10, 100))
    assert not any(engine.awaits_cohort(*key) for key in engine.accounts())
    now = t0 + 150  # k0 idle 150 s ... k9 60 s: none idle for a pack delay of 300 s
    assert engine.idle_accounts(now - 300) == []
    # Four of ten to stay: the six longest idle go, oldest first.
    assert engine.idle_accounts(now - 300, keep=4, quiet_ts=now - 60) == [
        ("org", f"k{i}") for i in range(6)
    ]
    # Only those without a call since `quiet_ts` may go, even if more than `keep` stay.
    assert engine.idle_accounts(now - 300, keep=4, quiet_ts=now - 115) == [
        ("org", "k0"), ("org", "k1"), ("org", "k2"), ("org", "k3")
    ]
    # Those idle for the pack delay go whatever the cap, and count towards it.
    assert engine.idle_accounts(now - 125, keep=4, quiet_ts=now - 60) == [
        ("org", f"k{i}") for i in range(6)
    ]
    assert engine.idle_accounts(now - 125, keep=9, quiet_ts=now - 60) == [
        ("org", "k0"), ("org", "k1"), ("org", "k2")
    ]
    assert engine.idle_accounts(now - 300, keep=10, quiet_ts=now) == []
