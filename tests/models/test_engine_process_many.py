"""`DetectionEngine.process_many`: a worker's drain of calls, the common call in Rust.

Whatever path a call takes (counted and judged in `BehaviourCore.process_many`, or handed
to the engine's Python), the engine must end where a loop of `process` leaves it: the
same alerts, scores, suspicions, account states and shared models.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import random
from collections.abc import Sequence

import pytest

from models.behaviour import BehaviourDetector
from models.engine import AccountKey, DetectionEngine
from models.records import ApiCall
from schemas.alert import Alert
from tests.models.calls import T0, build_call, build_harvest_call, spread
from tests.models.linking.runs import simulated


class CountingEngine(DetectionEngine):
    """The production engine, counting the calls its Python `process` runs."""

    python_calls = 0

    def process(self, call: ApiCall) -> list[Alert]:
        self.python_calls += 1
        return super().process(call)


def one_by_one(engine: DetectionEngine, calls: Sequence[ApiCall]
               ) -> tuple[list[float], list[float], list[Alert]]:
    suspicions, scores, alerts = [], [], []
    for call in calls:
        alerts += engine.process(call)
        suspicions.append(engine.last_suspicion)
        scores.append(engine.last_score)
    return suspicions, scores, alerts


def in_slices(engine: DetectionEngine, calls: list[ApiCall], seed: int = 1
              ) -> tuple[list[float], list[float], list[Alert]]:
    rng = random.Random(seed)
    suspicions: list[float] = []
    scores: list[float] = []
    alerts: list[Alert] = []
    done = 0
    while done < len(calls):
        stop = min(len(calls), done + rng.choice((1, 7, 500, 4000)))
        end, error = engine.process_many(
            calls, done, stop, math.inf, None, None, suspicions, scores, alerts)
        assert error is None and end == stop
        done = end
    return suspicions, scores, alerts


def assert_same_engines(a: DetectionEngine, b: DetectionEngine) -> None:
    assert a.accounts() == b.accounts()
    for key in a.accounts():
        assert pickle.dumps(a.account_state(*key)) == pickle.dumps(b.account_state(*key)), key
    assert pickle.dumps(a.export_shared()) == pickle.dumps(b.export_shared())
    assert (a.watermark, a.last_score, a.last_suspicion, a.open_episodes) == (
        b.watermark, b.last_score, b.last_suspicion, b.open_episodes)


def dumps(alerts: list[Alert]) -> list[dict[str, object]]:
    return [alert.model_dump() for alert in alerts]


def mixed_traffic() -> list[ApiCall]:
    """Ordinary accounts, two harvesting keys that open, escalate and resolve episodes,
    a sweep key, late calls (one by hours), over four hours of cohort epochs."""
    rng = random.Random(5)
    calls: list[ApiCall] = []
    for i in range(40):
        kind = {"turn": 1, "topic": "coding"} if i % 3 else {"turn": 4, "cot_request": True}
        calls += [build_call(t, account_id=f"user_{i}", **kind)  # type: ignore[arg-type]
                  for t in spread(T0 + rng.uniform(0, 3600), 4 * 3600, 80)]
    for key in ("swarm_1", "swarm_2"):
        calls += [build_harvest_call(t, account_id=key) for t in spread(T0 + 600, 1800, 120)]
        calls += [build_harvest_call(t, account_id=key) for t in spread(T0 + 3 * 3600, 600, 30)]
    calls += [build_call(t, account_id="sweeper", turn=1, n=4, logprobs=True,
                         topic=("math", "law", "coding", "history")[int(t) % 4])
              for t in spread(T0 + 1800, 3600, 200)]
    calls.sort(key=lambda call: call.ts)
    late = [build_call(calls[i].ts - 300.0, account_id="user_3") for i in (900, 2000)]
    late.append(build_call(calls[3000].ts - 8 * 3600.0, account_id="user_4"))
    for offset, call in enumerate(late):
        calls.insert(900 + 1000 * offset, call)
    return calls


@pytest.mark.parametrize("traffic", ["mixed", "hydra"])
def test_process_many_ends_where_process_ends(traffic: str) -> None:
    calls = (mixed_traffic() if traffic == "mixed"
             else list(simulated("hydra", duration_s=7200.0, fleet_scale=0.2).calls))
    expected_engine, engine = DetectionEngine(), CountingEngine()
    expected = one_by_one(expected_engine, calls)
    got = in_slices(engine, calls)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert dumps(got[2]) == dumps(expected[2])
    assert len(expected[2]) >= 4  # episodes opened, escalated and (mixed) resolved
    assert_same_engines(expected_engine, engine)
    # The common call did not go through Python's `process`: an account's first call,
    # calls in an episode and a cohort epoch's finalisation do.
    assert engine.python_calls < len(calls) / 3, (engine.python_calls, len(calls))


def test_an_engine_without_the_rust_path_processes_many_the_same() -> None:
    calls = mixed_traffic()
    native, python = DetectionEngine(), DetectionEngine()
    python._native = False
    assert native._native
    assert in_slices(native, calls, seed=2) == in_slices(python, calls, seed=3)
    assert_same_engines(native, python)
    # A detector of another type, or two detectors: no Rust path, the answers of `process`.
    for detectors in ([Again()], [BehaviourDetector(), Again()]):
        engine, reference = DetectionEngine(detectors), DetectionEngine(detectors)
        assert not engine._native
        assert in_slices(engine, calls) == one_by_one(reference, calls)
        assert_same_engines(engine, reference)


class Again(BehaviourDetector):
    name = "again"


@pytest.mark.parametrize("native", [True, False])
def test_it_stops_after_the_first_call_at_or_after_until_ts(native: bool) -> None:
    calls = mixed_traffic()[:3000]
    engine = DetectionEngine()
    engine._native = native
    until = calls[1234].ts
    first = next(i for i, call in enumerate(calls) if call.ts >= until)
    suspicions: list[float] = []
    scores: list[float] = []
    end, error = engine.process_many(
        calls, 0, len(calls), until, None, None, suspicions, scores, [])
    assert (end, error) == (first + 1, None)
    assert len(suspicions) == len(scores) == first + 1
    assert engine.watermark == max(call.ts for call in calls[:first + 1])
    end, error = engine.process_many(
        calls, end, len(calls), math.inf, None, None, suspicions, scores, [])
    assert (end, error) == (len(calls), None)
    reference = DetectionEngine()
    assert one_by_one(reference, calls)[:2] == (suspicions, scores)
    assert_same_engines(reference, engine)


@pytest.mark.parametrize("native", [True, False])
def test_prepare_sees_each_key_not_known_before_its_call(native: bool) -> None:
    calls = mixed_traffic()[:4000]
    engine = DetectionEngine()
    engine._native = native
    known: set[AccountKey] = {("org_1", "user_1")}
    prepared: list[tuple[AccountKey, bool]] = []

    def prepare(key: AccountKey) -> None:
        prepared.append((key, engine.account_state(*key) is None))
        known.add(key)

    end, error = engine.process_many(calls, 0, len(calls), math.inf, known, prepare, [], [], [])
    assert (end, error) == (len(calls), None)
    keys = list(dict.fromkeys((call.tenant_id, call.account_id) for call in calls))
    assert prepared == [(key, True) for key in keys if key != ("org_1", "user_1")]
    # Known keys go straight on, whatever `prepare` does.
    again = len(prepared)
    engine.process_many(calls, 0, 100, math.inf, known, prepare, [], [], [])
    assert len(prepared) == again


@pytest.mark.parametrize("native", [True, False])
def test_a_call_that_raises_is_returned_with_its_index_and_the_rest_goes_on(native: bool) -> None:
    calls = mixed_traffic()[:3000]
    known_account = calls[2000].account_id
    bad_known = build_call(calls[2000].ts, account_id=known_account, status="oops")
    bad_new = build_call(calls[2500].ts, account_id="never_seen", turn="x")
    broken = calls[:2000] + [bad_known] + calls[2000:2500] + [bad_new] + calls[2500:]
    engine = DetectionEngine()
    engine._native = native
    suspicions: list[float] = []
    scores: list[float] = []
    failures: list[tuple[int, type[BaseException]]] = []
    done = 0
    while done < len(broken):
        end, error = engine.process_many(
            broken, done, len(broken), math.inf, None, None, suspicions, scores, [])
        if error is not None:
            failures.append((end, type(error)))
            done = end + 1
        else:
            done = end
    assert failures == [(2000, TypeError), (2501, TypeError)]
    assert len(suspicions) == len(scores) == len(calls)
    reference = DetectionEngine()
    for call in broken:
        with contextlib.suppress(TypeError):
            reference.process(call)
    assert_same_engines(reference, engine)


@pytest.mark.parametrize("native", [True, False])
def test_an_interrupt_is_not_returned_as_a_call_error(native: bool) -> None:
    calls = mixed_traffic()[:100]
    engine = DetectionEngine()
    engine._native = native

    def prepare(key: AccountKey) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.process_many(calls, 0, len(calls), math.inf, set(), prepare, [], [], [])
