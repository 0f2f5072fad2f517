"""ReasoningHarvestDetector: the event-time window, the rule, and its silences."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.errors import ConfigurationError, DetectionError
from models.reasoning import ReasoningHarvestDetector, ReasoningHarvestState
from models.records import ApiCall
from tests.models.calls import T0, CallFactory, build_call, build_harvest_call, spread


def window(state: ReasoningHarvestState) -> tuple[int, int, int]:
    return state.window_requests, state.window_cot, state.window_shaped


def observe_all(
    detector: ReasoningHarvestDetector, state: ReasoningHarvestState, calls: list[ApiCall]
) -> None:
    for call in calls:
        detector.observe_one(state, call)


# --- the window ---------------------------------------------------------------------


def test_window_counts_only_the_last_window_of_buckets(harvest_call: CallFactory) -> None:
    detector = ReasoningHarvestDetector(window_s=600, bucket_s=60)
    state = detector.new_state()
    # One call a minute for 15 minutes: minutes 0..14. The window ends at minute 14.
    observe_all(detector, state, [harvest_call(T0 + 60 * m + 5) for m in range(15)])
    assert window(state) == (10, 10, 10)  # minutes 5..14


def test_window_counts_cot_and_shape_separately(
    make_call: CallFactory, harvest_call: CallFactory
) -> None:
    detector = ReasoningHarvestDetector()
    state = detector.new_state()
    calls = [
        make_call(T0 + 1),  # ordinary chat
        harvest_call(T0 + 2),  # trace request, harvest-shaped
        harvest_call(T0 + 3, turn=4),  # trace request deep in a conversation
        harvest_call(T0 + 4, tool_count=2),  # trace request with tools
        harvest_call(T0 + 5, stop_reason="end_turn", output_tokens=100),  # short answer
        harvest_call(T0 + 6, stop_reason="end_turn", output_tokens=900),  # longer than prompt
    ]
    observe_all(detector, state, calls)
    assert window(state) == (6, 5, 2)


def test_out_of_order_call_within_window_lands_in_its_own_bucket(
    harvest_call: CallFactory,
) -> None:
    detector = ReasoningHarvestDetector(window_s=600, bucket_s=60)
    state = detector.new_state()
    detector.observe_one(state, harvest_call(T0 + 9 * 60 + 1))  # minute 9
    detector.observe_one(state, harvest_call(T0 + 2 * 60 + 1))  # late: minute 2
    assert window(state) == (2, 2, 2)
    # Minute 12 pushes minutes 0..2 out of the window: the late call leaves with them.
    detector.observe_one(state, harvest_call(T0 + 12 * 60))
    assert window(state) == (2, 2, 2)
    # Minute 11 was not reached yet: minute 2 stayed until the window passed it.
    state = detector.new_state()
    detector.observe_one(state, harvest_call(T0 + 9 * 60 + 1))
    detector.observe_one(state, harvest_call(T0 + 2 * 60 + 1))
    detector.observe_one(state, harvest_call(T0 + 11 * 60))
    assert window(state) == (3, 3, 3)


def test_call_older_than_window_is_not_counted_but_still_scored(
    harvest_call: CallFactory,
) -> None:
    detector = ReasoningHarvestDetector(min_cot_requests=5)
    state = detector.new_state()
    observe_all(detector, state, [harvest_call(t) for t in spread(T0 + 3600, 300, 20)])
    old = harvest_call(T0)  # an hour before the window
    signal = detector.score_one(state, old)
    assert signal is not None and "of 20 requests" in signal.detail
    detector.observe_one(state, old)
    assert window(state) == (20, 20, 20)


def test_a_gap_longer_than_the_window_empties_it(harvest_call: CallFactory) -> None:
    detector = ReasoningHarvestDetector()
    state = detector.new_state()
    observe_all(detector, state, [harvest_call(t) for t in spread(T0, 600, 100)])
    detector.observe_one(state, harvest_call(T0 + 5000))
    assert window(state) == (1, 1, 1)
    assert sum(state.counts) == 3


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=3000, allow_nan=False),
            st.booleans(),
            st.booleans(),
        ),
        max_size=80,
    ),
    st.sampled_from([(600.0, 60.0), (300.0, 30.0), (60.0, 60.0), (90.0, 7.5)]),
)
def test_window_matches_a_brute_force_count(
    events: list[tuple[float, bool, bool]], shape: tuple[float, float]
) -> None:
    window_s, bucket_s = shape
    n = round(window_s / bucket_s)
    detector = ReasoningHarvestDetector(
        window_s=window_s, bucket_s=bucket_s, min_cot_requests=1, min_cot_share=0.0
    )
    state = detector.new_state()
    accepted: list[tuple[int, bool, bool]] = []
    newest: int | None = None
    for offset, cot, long_answer in events:
        call = build_call(
            T0 + offset, cot_request=cot, turn=1, output_tokens=2000 if long_answer else 10
        )
        bucket = int(call.ts // bucket_s)
        if newest is None or bucket > newest - n:
            accepted.append((bucket, cot, cot and long_answer))
        newest = bucket if newest is None else max(newest, bucket)
        expected = [a for a in accepted if a[0] > newest - n]
        expected_totals = (len(expected), sum(a[1] for a in expected), sum(a[2] for a in expected))
        # score_one sees exactly the window observe_one is about to produce
        signal = detector.score_one(state, call)
        detector.observe_one(state, call)
        assert window(state) == expected_totals
        if expected_totals[1]:
            assert signal is not None
            assert signal.value == expected_totals[1] / expected_totals[0]
        else:
            assert signal is None


# --- the rule -----------------------------------------------------------------------


def test_harvesting_gives_a_high_score_and_a_readable_reason(
    make_call: CallFactory, harvest_call: CallFactory
) -> None:
    detector = ReasoningHarvestDetector()
    state = detector.new_state()
    times = spread(T0, 600, 1240)
    # 1,141 of 1,240 requests (92%) ask for traces.
    calls = [harvest_call(t) if i < 1141 else make_call(t) for i, t in enumerate(times)]
    assert sum(c.cot_request for c in calls) == 1141
    observe_all(detector, state, calls[:-1])
    signal = detector.score_one(state, calls[-1])
    assert signal is not None
    assert signal.name == "cot_request_rate"
    assert 0.9 <= signal.score <= 1.0
    assert signal.value == pytest.approx(0.92, abs=0.001)
    assert signal.baseline is None
    assert signal.detail.startswith(
        "92% of 1,240 requests in 10 min asked for full reasoning traces; "
        "100% of those were single-turn, tool-free and output-heavy"
    )


def test_small_volume_is_quiet_even_when_every_request_harvests(
    harvest_call: CallFactory,
) -> None:
    detector = ReasoningHarvestDetector(min_cot_requests=50)
    state = detector.new_state()
    calls = [harvest_call(t) for t in spread(T0, 600, 49)]
    observe_all(detector, state, calls[:-1])
    assert detector.score_one(state, calls[-1]) is None


def test_chat_with_a_low_share_of_trace_requests_is_quiet(
    make_call: CallFactory, harvest_call: CallFactory
) -> None:
    detector = ReasoningHarvestDetector()
    state = detector.new_state()
    calls = [
        harvest_call(t) if i % 10 == 0 else make_call(t)
        for i, t in enumerate(spread(T0, 600, 2000))
    ]
    for call in calls:
        assert detector.score_one(state, call) is None
        detector.observe_one(state, call)


def test_coding_agents_are_quiet(coding_call: CallFactory) -> None:
    detector = ReasoningHarvestDetector()
    state = detector.new_state()
    for t in spread(T0, 600, 3000):
        call = coding_call(t)
        assert detector.score_one(state, call) is None
        detector.observe_one(state, call)


def test_trace_requests_that_are_not_harvest_shaped_stay_below_one_half(
    harvest_call: CallFactory,
) -> None:
    detector = ReasoningHarvestDetector()
    state = detector.new_state()
    # An agent that always asks for its reasoning, in long tool-using conversations.
    calls = [harvest_call(t, turn=7, tool_count=3) for t in spread(T0, 600, 5000)]
    observe_all(detector, state, calls[:-1])
    signal = detector.score_one(state, calls[-1])
    assert signal is not None and signal.score < 0.5


def test_no_prompt_group_silences_the_signal(harvest_call: CallFactory) -> None:
    detector = ReasoningHarvestDetector()
    state = detector.new_state()
    calls = [harvest_call(t, has_prompt=False, cot_request=False) for t in spread(T0, 600, 500)]
    for call in calls:
        assert detector.score_one(state, call) is None
        detector.observe_one(state, call)
        detector.learn_one(state, call)
    assert window(state) == (0, 0, 0)
    assert state.baseline_requests == 0.0


def _score(window_requests: int, cot: int, shaped: int) -> float:
    """The score of a window holding exactly these counts."""
    detector = ReasoningHarvestDetector()
    state = detector.new_state()
    state.newest_bucket = int((T0 + 3600) // detector.bucket_s)
    state.window_requests, state.window_cot, state.window_shaped = window_requests, cot, shaped
    signal = detector.score_one(state, build_call(T0))  # too old to count itself
    return 0.0 if signal is None else signal.score


counts = st.tuples(
    st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000), st.integers(1, 500)
).map(lambda t: (max(t[0], t[1], t[2]), max(t[1], t[2]), t[2], t[3]))


@given(counts)
def test_score_is_in_unit_interval_and_monotone_in_the_evidence(
    window_counts: tuple[int, int, int, int],
) -> None:
    requests, cot, shaped, more = window_counts
    score = _score(requests, cot, shaped)
    assert 0.0 <= score <= 1.0
    # more harvest-shaped trace requests
    assert _score(requests + more, cot + more, shaped + more) >= score
    # an unshaped trace request turning out harvest-shaped
    if shaped < cot:
        assert _score(requests, cot, shaped + 1) >= score
    # an ordinary request turning into a trace request
    if cot < requests:
        assert _score(requests, cot + 1, shaped + 1) >= score
    # more ordinary requests dilute the share
    assert _score(requests + more, cot, shaped) <= score


# --- the baseline -------------------------------------------------------------------


def test_baseline_is_the_decayed_share_of_learnt_trace_requests(
    make_call: CallFactory, harvest_call: CallFactory
) -> None:
    detector = ReasoningHarvestDetector(min_cot_requests=50)
    state = detector.new_state()
    calls = [
        harvest_call(t) if i % 10 == 0 else make_call(t)
        for i, t in enumerate(spread(T0, 86_400, 200))
    ]
    for call in calls[:40]:
        detector.learn_one(state, call)
    assert detector.baseline_share(state) is None  # not enough history yet
    for call in calls[40:]:
        detector.learn_one(state, call)
    share = detector.baseline_share(state)
    assert share == pytest.approx(0.1, abs=0.01)
    # a late call weighs what it would have weighed in order
    in_order, late = detector.new_state(), detector.new_state()
    for call in calls:
        detector.learn_one(in_order, call)
    for call in [*calls[:100], *calls[150:], *calls[100:150]]:
        detector.learn_one(late, call)
    assert late.baseline_requests == pytest.approx(in_order.baseline_requests)
    assert late.baseline_cot == pytest.approx(in_order.baseline_cot)


# --- state round trip ---------------------------------------------------------------


@given(
    st.lists(st.tuples(st.floats(0, 2000, allow_nan=False), st.booleans()), max_size=60),
    st.lists(st.tuples(st.floats(0, 2000, allow_nan=False), st.booleans()), max_size=20),
)
def test_state_survives_pickle_and_scores_identically(
    before: list[tuple[float, bool]], after: list[tuple[float, bool]]
) -> None:
    detector = ReasoningHarvestDetector(min_cot_requests=3)
    state = detector.new_state()
    for offset, cot in before:
        call = build_harvest_call(T0 + offset, cot_request=cot)
        detector.observe_one(state, call)
        detector.learn_one(state, call)
    restored = pickle.loads(pickle.dumps(state))
    for offset, cot in after:
        call = build_harvest_call(T0 + offset, cot_request=cot)
        assert detector.score_one(restored, call) == detector.score_one(state, call)
        for s in (state, restored):
            detector.observe_one(s, call)
            detector.learn_one(s, call)
    for slot in ReasoningHarvestState.__slots__:
        assert getattr(restored, slot) == getattr(state, slot)


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bucket_s": 0},
        {"window_s": 30, "bucket_s": 60},
        {"window_s": 600, "bucket_s": 70},
        {"min_cot_requests": 0},
        {"min_cot_share": 0.9, "full_cot_share": 0.8},
        {"shape_weight": 1.5},
        {"baseline_half_life_s": 0},
    ],
)
def test_unworkable_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ReasoningHarvestDetector(**kwargs)  # type: ignore[arg-type]
    assert isinstance(raised.value, DetectionError)


def test_constructor_arguments_are_stored_under_their_names() -> None:
    detector = ReasoningHarvestDetector(window_s=300, bucket_s=30, min_cot_requests=20)
    assert (detector.window_s, detector.bucket_s, detector.min_cot_requests) == (300, 30, 20)
