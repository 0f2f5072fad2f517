"""The Rust steps read a call's fields by their slots (`native/src/fields.rs`).

An `ApiCall` is read by the slot offsets registered for its type; an object of any other
type through `getattr`. The same calls as `ApiCall`s and as instances of a subclass (the
`getattr` path) must leave every step's state the same and give the same results: a
wrong offset would read another field.
"""

from __future__ import annotations

import pickle
from typing import Any

import msgspec
import pytest
from distillwatch_native import MinuteCounts, register_call_type
from hypothesis import given, settings
from hypothesis import strategies as st

import models.native  # noqa: F401  (registers ApiCall's layout)
from models.engine import DetectionEngine
from models.linking.observe import LinkObserver
from models.linking.suspicion import LinkingSuspicion
from models.records import ApiCall
from tests.models.calls import T0


class ReadByName(ApiCall):
    """Same fields, another type: the Rust steps read it through `getattr`."""


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

