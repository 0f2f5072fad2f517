"""The Rust steps read a call's fields by their slots (`native/src/fields.rs`).

An `ApiCall` is read by the slot offsets registered for its type; an object of any other
type through `getattr`. The same calls as `ApiCall`s and as instances of a subclass (the
`getattr` path) must leave every step's state the same and give the same results: a
wrong offset would read another field. The behaviour core reads and writes a
`BehaviourState` (and reads an `AccountState`) the same way: a state of a subclass goes
through `getattr` and `setattr`, and must end equal, field for field.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

import msgspec
import pytest
from distillwatch_native import MinuteCounts, register_call_type, register_state_types
from hypothesis import given, settings
from hypothesis import strategies as st

import models.native  # noqa: F401  (registers ApiCall's layout)
from models.behaviour import BehaviourDetector, BehaviourState
from models.engine import AccountState, DetectionEngine
from models.linking.observe import LinkObserver
from models.linking.suspicion import LinkingSuspicion
from models.records import ApiCall
from tests.models.calls import T0


class ReadByName(ApiCall):
    """Same fields, another type: the Rust steps read it through `getattr`."""


class StateByName(BehaviourState, gc=False, eq=False):
    """Same fields, another type: the behaviour core reads and writes it by name."""


calls = st.builds(
    dict,
    step=st.sampled_from([0.0, 1.0, 30.0, 3_600.0]) | st.floats(0.0, 600.0),
    account=st.sampled_from(["a", "b", "c"]),
    status=st.sampled_from([200, 200, 429, 500]),
    input_tokens=st.sampled_from([10, 300, 4096]),
    output_tokens=st.sampled_from([0, 300, 4096]),
    n=st.sampled_from([1, 1, 4]),
    logprobs=st.booleans(),
    tool_count=st.sampled_from([0, 0, 3]),
    turn=st.sampled_from([1, 1, 7]),
    stop_reason=st.sampled_from([None, "max_tokens", "refusal", "end_turn"]),
    has_prompt=st.booleans(),
    simhash=st.none() | st.integers(0, 2**64 - 1),
    topic=st.sampled_from([None, "math", "coding", "law"]),
    cot_request=st.booleans(),
    jailbreak_score=st.sampled_from([None, 0.2, 0.6, 0.9]),
    sysprompt_probe=st.booleans(),
    ip=st.sampled_from([None, "198.51.100.7", "2001:db8::1"]),
    asn=st.sampled_from([None, 64501, 64502]),
    user_agent=st.sampled_from([None, "python-httpx/0.27", "curl/8"]),
    tls_fingerprint=st.sampled_from([None, "ja3-a", "ja3-b"]),
    created_at=st.sampled_from([None, T0 - 86_400.0, T0 - 60.0]),
    payment_fingerprint=st.sampled_from([None, "card-1", "card-2"]),
)


def _run(stream: list[ApiCall]) -> tuple[Any, ...]:
    """Every per-call step of a worker's drain over `stream`; what they leave behind."""
    engine, observer, suspicion = DetectionEngine(), LinkObserver(), LinkingSuspicion()
    minutes = MinuteCounts()
    results = []
    for call in stream:
        alerts = engine.process(call)
        shared = suspicion.update(call, engine.last_suspicion)
        observations = observer.observe(call, shared)
        results.append((len(alerts), engine.last_score, shared.hex(),
                        msgspec.json.encode(observations)))
    minutes.add(stream, [score for _, score, _, _ in results])
    accounts = sorted({call.account_id for call in stream})
    return (
        results,
        [pickle.dumps(engine.account_state("org_1", a), protocol=5) for a in accounts],
        [observer.export_account(a).tobytes() for a in accounts],
        [suspicion.share.export_account(a).tobytes() for a in accounts],
        minutes.columns(len(minutes)),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(calls, min_size=1, max_size=80))
def test_slots_and_getattr_read_the_same_fields(stream: list[dict[str, Any]]) -> None:
    ts = T0
    as_calls, as_others = [], []
    for n, fields in enumerate(stream):
        ts += fields.pop("step")
        values = dict(event_id=str(n), ts=ts, tenant_id="org_1",
                      account_id=fields.pop("account"), model="m", **fields)
        as_calls.append(ApiCall(**values))
        as_others.append(ReadByName(**values))
    assert _run(as_calls) == _run(as_others)


def test_registering_is_once_per_type() -> None:
    register_call_type(ApiCall)  # again, the same type: nothing changes

    class Lookalike(msgspec.Struct):
        ts: float
        tenant_id: str

    with pytest.raises(TypeError, match="not a slot"):
        register_call_type(Lookalike)  # lacks most fields
    with pytest.raises(ValueError, match="another call type"):
        register_call_type(ReadByName)



def _stream(fields_list: list[dict[str, Any]]) -> list[ApiCall]:
    ts, out = T0, []
    for n, fields in enumerate(fields_list):
        fields = dict(fields)
        ts += fields.pop("step")
        out.append(ApiCall(event_id=str(n), ts=ts, tenant_id="org_1",
                           account_id=fields.pop("account"), model="m", **fields))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(calls, min_size=1, max_size=80))
def test_a_state_by_its_slots_and_by_name_ends_the_same(stream: list[dict[str, Any]]) -> None:
    detector = BehaviourDetector()
    by_slot, by_name = BehaviourState(), StateByName()
    for call in _stream(stream):
        # Counting writes the counters, the landmark, the timing, templates and topics;
        # judging and the suspicion read them back.
        assert detector.assess_one(by_slot, call) == detector.assess_one(by_name, call)
        detector.learn_one(by_slot, call)
        detector.learn_one(by_name, call)
        assert detector.suspicion(by_slot, call.ts) == detector.suspicion(by_name, call.ts)
    assert pickle.dumps(msgspec.structs.astuple(by_slot)) == pickle.dumps(
        msgspec.structs.astuple(by_name))


def test_a_slot_written_holds_its_value_and_lets_go_of_the_old() -> None:
    """The core writes the call's own event-time float into the state (landmark, last
    call time): the state holds a reference to it, and drops it when a later call
    replaces it. A slot write that forgot either would show in the reference counts."""
    detector = BehaviourDetector()
    state = BehaviourState()
    first = build_stream_call(T0 + 0.5)
    # Counted before any assertion: pytest's rewritten asserts keep what they compared.
    before = sys.getrefcount(first.ts)
    detector.observe_one(state, first)
    held_by_both = sys.getrefcount(first.ts) - before
    second = build_stream_call(T0 + 30.25)
    detector.observe_one(state, second)
    held_by_landmark = sys.getrefcount(first.ts) - before
    last_is_second, landmark_is_first = state.last_ts is second.ts, state.landmark is first.ts
    del state
    held_after = sys.getrefcount(first.ts) - before
    assert (held_by_both, held_by_landmark, held_after) == (2, 1, 0)
    assert last_is_second and landmark_is_first


def build_stream_call(ts: float) -> ApiCall:
    return _stream([{"step": ts - T0, "account": "a", "status": 200, "input_tokens": 10,
                     "output_tokens": 300, "n": 1, "logprobs": False, "tool_count": 0,
                     "turn": 1, "stop_reason": None, "has_prompt": True, "simhash": None,
                     "topic": None, "cot_request": False, "jailbreak_score": None,
                     "sysprompt_probe": False}])[0]


def test_registering_the_state_types_is_once_per_type() -> None:
    # Again: nothing changes. A BehaviourState (no GC tracking, msgspec's own setattr)
    # has its fields written in place.
    assert register_state_types(BehaviourState, AccountState) is True

    class Lookalike(msgspec.Struct):
        counts: list[float]

    with pytest.raises(TypeError, match="landmark is not a slot of the behaviour state type"):
        register_state_types(Lookalike, AccountState)
    with pytest.raises(ValueError, match="another behaviour state type"):
        register_state_types(StateByName, AccountState)


_OWN_SETATTR = """
import msgspec
from distillwatch_native import register_state_types
from models.behaviour import BehaviourDetector, BehaviourState
from tests.models.calls import build_call

written = []


class Watched(BehaviourState, gc=False, eq=False):
    def __setattr__(self, name, value):
        written.append(name)
        super().__setattr__(name, value)


class Account(msgspec.Struct, gc=False):
    detector_states: tuple = ()
    episode: object = None


print(register_state_types(Watched, Account))
detector, watched, plain = BehaviourDetector(), Watched(), BehaviourState()
for ts in (1_800_000_000.5, 1_800_000_030.25):
    detector.observe_one(watched, build_call(ts))
    detector.observe_one(plain, build_call(ts))
print(sorted(set(written)))
print(msgspec.structs.astuple(watched) == msgspec.structs.astuple(plain))
"""


def test_a_state_type_with_its_own_setattr_is_written_through_it() -> None:
    """Registered in a fresh interpreter (a process registers one state type): a state
    type with a `__setattr__` of its own is read by its slots, but every write goes
    through its `__setattr__`, and the state ends as a plain one does."""
    import subprocess
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", _OWN_SETATTR], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout.split("\n")
    assert out[0] == "False"
    assert out[1] == str(["gap_dev", "gap_mean", "landmark", "last_ts", "topics"])
    assert out[2] == "True"
