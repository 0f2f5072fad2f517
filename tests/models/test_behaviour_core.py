"""`BehaviourDetector`'s counting, suspicion and judging in Rust against the Python they
replaced.

The same calls go to `BehaviourDetector` (its `BehaviourCore`) and to the frozen
`ReferenceBehaviourDetector`, each with a state of its own; after every call the two
states must pickle to the same bytes (every float32 counter, the landmark, templates,
topic bits, timing), the gate must agree and the suspicion must be the same double, at
the call's time and later, and every finding (the call's own, and the account's judged at
those times) must have the same score, evidence and sentences. Calls come from small
pools around every threshold the counting reads: late by seconds and by hours (too old
to count), gaps long enough to move the landmark, known and unknown topic labels,
SimHashes a few bits apart, counts past 32 bits, withheld (flagged) calls, account ages
around the young-account ramp, a cohort percentile usable or not. A simulated hydra
fleet is judged by both, call for call, through the engine.
"""

from __future__ import annotations

import pickle
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.base import Finding
from models.behaviour import _NO_TEMPLATES, BehaviourDetector, BehaviourState
from models.engine import DetectionEngine
from models.records import ApiCall
from tests.models.behaviour_reference import ReferenceBehaviourDetector
from tests.models.calls import T0
from tests.models.linking.runs import simulated

TEMPLATE = 0x0123_4567_89AB_CDEF
simhashes = st.sampled_from([
    TEMPLATE, TEMPLATE ^ 0b1, TEMPLATE ^ 0xFF, TEMPLATE ^ 0x1FF, 0, 0xFF, 0x1FF, 2**64 - 1,
]) | st.integers(0, 2**64 - 1)
topics = st.sampled_from([
    None, "coding", "math", "history", "data_analysis", "astrology", "キー", "", "Math",
])
# Seconds after the previous call: mostly seconds, sometimes hours (the landmark moves
# after 10 hours), sometimes back in time (late; hours late is too old to count).
steps = st.sampled_from([0.0, 0.5, 1.0, 30.0]) | st.floats(0.0, 600.0) | st.sampled_from(
    [3_600.0, 36_000.0, 36_001.0, 90_000.0, -5.0, -3_600.0, -36_000.0, -36_001.0, -90_000.0]
)

calls = st.builds(
    dict,
    step=steps,
    status=st.sampled_from([200, 200, 400, 429, 500, 529]),
    input_tokens=st.sampled_from([0, 10, 300, 4096]) | st.integers(0, 2**64 - 1),
    output_tokens=st.sampled_from([0, 300, 4096, 5000]) | st.integers(0, 2**64 - 1),
    n=st.sampled_from([1, 1, 2, 8]),
    logprobs=st.booleans(),
    tool_count=st.sampled_from([0, 0, 1, 3]),
    turn=st.sampled_from([1, 1, 2, 9]),
    stop_reason=st.sampled_from([None, "max_tokens", "refusal", "end_turn", "Refusal"]),
    has_prompt=st.booleans(),
    simhash=st.none() | simhashes,
    topic=topics,
    cot_request=st.booleans(),
    jailbreak_score=st.sampled_from([None, 0.0, 0.49, 0.5, 0.95]),
    sysprompt_probe=st.booleans(),
    withhold=st.sampled_from([False, False, False, True]),
    # Account ages around the young-account ramp (7 days), and none.
    created_at=st.sampled_from([None, None, T0 - 30 * 86_400.0, T0 - 6.5 * 86_400.0,
                                T0 - 3_600.0, T0 + 3_600.0]),
)
# A cohort percentile usable from before the stream (in thousandths), usable only long
# after it, or none.
cohorts = st.sampled_from([0, (int(T0) - 60) << 10 | 995, (int(T0) - 60) << 10 | 920,
                           (int(T0) + 10**7) << 10 | 999])


def _state_bytes(state: BehaviourState) -> bytes:
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def _readable(state: BehaviourState) -> dict[str, Any]:
    return {
        "counts": state.counts.tolist(), "landmark": state.landmark,
        "withheld": None if state.withheld is None else state.withheld.tolist(),
        "templates": state.templates.tolist(), "template_next": state.template_next,
        "topics": state.topics, "last_ts": state.last_ts, "gap_mean": state.gap_mean,
        "gap_dev": state.gap_dev,
    }


def _same_finding(got: Finding | None, want: Finding | None) -> None:
    """The same finding: score and evidence bit for bit (a float's repr is exact), and the
    same sentences."""
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert got.score.hex() == want.score.hex()
        assert repr(got.evidence) == repr(want.evidence)
        assert got.explain is want.explain
        assert got.signals == want.signals


@settings(max_examples=300, deadline=None)
@given(st.lists(calls, min_size=1, max_size=60), st.sampled_from([0.0, 1.0, 600.0, 90_000.0]),
       cohorts)
def test_counting_suspicion_and_judging_are_the_pythons_bit_for_bit(
    stream: list[dict[str, Any]], later: float, cohort: int
) -> None:
    tuned, reference = BehaviourDetector(), ReferenceBehaviourDetector()
    state, expected = tuned.new_state(), reference.new_state()
    state.cohort = expected.cohort = cohort
    ts = T0
    for n, fields in enumerate(stream):
        ts += fields.pop("step")
        withhold = fields.pop("withhold")
        call = ApiCall(event_id=str(n), ts=ts, tenant_id="org_1", account_id="key_1",
                       model="m", **fields)
        got, want = tuned.assess_one(state, call), reference.assess_one(expected, call)
        _same_finding(got, want)
        if withhold:
            tuned.withhold_one(state, call)
            reference.withhold_one(expected, call)
        assert _state_bytes(state) == _state_bytes(expected), (
            _readable(state), _readable(expected))
        assert (state.templates is _NO_TEMPLATES) == (expected.templates is _NO_TEMPLATES)
        for at in (ts, ts + later):
            assert tuned.suspicion(state, at).hex() == reference.suspicion(expected, at).hex()
            _same_finding(tuned.judge(state, at, call.created_at),
                          reference.judge(expected, at, call.created_at))


def test_observing_counts_as_assessing_does() -> None:
    tuned, reference = BehaviourDetector(), ReferenceBehaviourDetector()
    state, expected = tuned.new_state(), reference.new_state()
    for i in range(50):
        call = ApiCall(event_id=str(i), ts=T0 + 7.0 * i, tenant_id="t", account_id="a",
                       model="m", status=200, input_tokens=300, output_tokens=4096,
                       turn=1, has_prompt=True, cot_request=True, simhash=TEMPLATE + i % 3,
                       topic=("math", "law", "astrology")[i % 3])
        tuned.observe_one(state, call)
        reference.observe_one(expected, call)
    assert _state_bytes(state) == _state_bytes(expected)
    assert tuned.suspicion(state, T0 + 400.0) > 0.5  # a harvester: the check has teeth


def test_a_detector_pickles_without_its_core_and_counts_after_loading() -> None:
    detector = pickle.loads(pickle.dumps(BehaviourDetector(min_harvest=(4.0, 20.0, 50.0))))
    assert detector.min_harvest == (4.0, 20.0, 50.0)
    state = detector.new_state()
    detector.observe_one(state, ApiCall(event_id="e", ts=T0, tenant_id="t", account_id="a",
                                        model="m", status=200, input_tokens=1,
                                        output_tokens=2))
    assert state.landmark == T0 and state.counts[0] == 1.0


def test_the_state_keeps_the_calls_own_time_objects() -> None:
    # As the Python did: an account's landmark and last call time are the float of a
    # call, not floats of their own (48 bytes an account, measured by bench.core).
    detector = BehaviourDetector()
    state = detector.new_state()
    first = ApiCall(event_id="1", ts=T0 + 0.5, tenant_id="t", account_id="a", model="m",
                    status=200, input_tokens=1, output_tokens=2)
    later = ApiCall(event_id="2", ts=T0 + 40_000.25, tenant_id="t", account_id="a",
                    model="m", status=200, input_tokens=1, output_tokens=2)
    detector.observe_one(state, first)
    assert state.landmark is first.ts and state.last_ts is first.ts
    detector.observe_one(state, later)  # past the renormalising gap: a new landmark
    assert state.landmark is later.ts and state.last_ts is later.ts


class _Judges(BehaviourDetector):
    """Judges with the Rust core and checks each finding against the Python's."""

    judged = 0

    def _judge(self, state: BehaviourState, ts: float, created_at: float | None) -> Finding | None:
        got = super()._judge(state, ts, created_at)
        _same_finding(got, ReferenceBehaviourDetector._judge(self, state, ts, created_at))
        self.judged += got is not None
        return got


def test_a_simulated_hydra_fleet_is_judged_as_the_python_did() -> None:
    detector = _Judges()
    engine = DetectionEngine(detectors=[detector])
    alerts = [alert for call in simulated("hydra", duration_s=7200.0, fleet_scale=0.2).calls
              for alert in engine.process(call)]
    # The fleet's harvesters were judged (and alerted on) call after call.
    assert detector.judged > 1_000 and alerts
