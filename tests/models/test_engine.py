"""DetectionEngine: scoring order, episodes, alerts per the contract, replay, round trips."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.base import AccountDetector, Signal
from models.engine import DetectionEngine
from models.errors import ConfigurationError, DetectionError
from models.reasoning import ReasoningHarvestDetector, ReasoningHarvestState
from models.records import ApiCall
from schemas.alert import Alert
from tests.models.calls import (
    T0,
    CallFactory,
    build_call,
    build_coding_call,
    build_harvest_call,
    spread,
)


def reasoning_engine(**kwargs: object) -> DetectionEngine:
    """The engine with only the reasoning-trace detector: the engine's mechanics on a
    detector whose thresholds these tests know by heart."""
    return DetectionEngine([ReasoningHarvestDetector()], **kwargs)  # type: ignore[arg-type]


def run(engine: DetectionEngine, calls: Iterable[ApiCall]) -> list[Alert]:
    return [alert for call in calls for alert in engine.process(call)]


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def harvest(start: float, seconds: float, count: int, **fields: object) -> list[ApiCall]:
    return [build_harvest_call(t, **fields) for t in spread(start, seconds, count)]


def reasoning_state(engine: DetectionEngine, account_id: str = "key_1") -> ReasoningHarvestState:
    account = engine.account_state("org_1", account_id)
    assert account is not None
    state = account.detector_states[0]
    assert isinstance(state, ReasoningHarvestState)
    return state


# --- firing -------------------------------------------------------------------------


def test_a_harvesting_account_fires_an_alert_per_the_contract() -> None:
    engine = reasoning_engine()
    calls = harvest(T0, 600, 60)
    alerts = run(engine, calls)
    first = alerts[0]
    # The 50th trace request in the window is the first to reach 0.5.
    assert first.event_time == utc(calls[49].ts)
    assert first.first_event_time == first.event_time
    assert first.detected_at == first.event_time
    assert first.status == "firing" and first.severity == "low"
    assert first.kind == "account"
    assert first.dedup_key == "account:org_1:key_1"
    assert (first.tenant_id, first.account_id, first.campaign_id) == ("org_1", "key_1", None)
    assert [(a.tenant_id, a.account_id) for a in first.accounts] == [("org_1", "key_1")]
    assert 0.5 <= first.score <= 1.0
    (reason,) = first.reasons
    assert reason.signal == "cot_request_rate"
    assert reason.value == 1.0 and reason.baseline is None
    assert reason.detail.startswith("100% of 50 requests in 10 min asked for full reasoning")
    assert engine.open_episodes == 1 and engine.accounts_tracked == 1


def test_the_alert_round_trips_through_the_wire_schema() -> None:
    engine = reasoning_engine()
    (alert, *_) = run(engine, harvest(T0, 600, 60))
    assert Alert.model_validate_json(alert.model_dump_json()) == alert


@pytest.mark.parametrize(
    "traffic",
    [
        pytest.param(
            lambda t, i: build_call(t, cot_request=i % 10 == 0), id="chat, 10% trace requests"
        ),
        pytest.param(lambda t, i: build_coding_call(t), id="coding agents"),
        pytest.param(
            lambda t, i: build_harvest_call(t, turn=5, tool_count=4), id="agent asking for traces"
        ),
        pytest.param(
            lambda t, i: build_call(t, cot_request=i % 3 == 0, turn=1, output_tokens=3000),
            id="math tutoring, a third trace requests",
        ),
    ],
)
def test_ordinary_traffic_at_volume_stays_quiet(traffic) -> None:  # type: ignore[no-untyped-def]
    engine = reasoning_engine()
    calls = [
        traffic(t, i)
        for i, t in enumerate(spread(T0, 6 * 3600, 20_000))
    ]
    assert run(engine, calls) == []


def test_many_small_accounts_stay_quiet() -> None:
    engine = reasoning_engine()
    calls = [
        build_harvest_call(t, account_id=f"key_{i % 500}")
        for i, t in enumerate(spread(T0, 600, 500 * 40))
    ]
    assert run(engine, calls) == []
    assert engine.accounts_tracked == 500


def test_a_gateway_without_prompt_group_never_fires() -> None:
    engine = reasoning_engine()
    assert run(engine, harvest(T0, 600, 5000, has_prompt=False, cot_request=False)) == []


# --- episodes -----------------------------------------------------------------------


def test_one_alert_per_episode_and_another_only_when_severity_rises() -> None:
    engine = reasoning_engine()
    # Steady harvesting, 1 request/s for two hours: the window fills, then plateaus.
    alerts = run(engine, harvest(T0, 7200, 7200))
    assert [a.severity for a in alerts] == ["low", "medium", "high", "critical"]
    assert {a.dedup_key for a in alerts} == {"account:org_1:key_1"}
    assert {a.first_event_time for a in alerts} == {alerts[0].event_time}
    assert len({a.alert_id for a in alerts}) == 4
    # Slowing down lowers the score; speeding back up to critical says nothing new.
    assert run(engine, harvest(T0 + 7200, 1200, 200)) == []
    assert run(engine, harvest(T0 + 8400, 1200, 1200)) == []
    assert engine.open_episodes == 1


def test_episode_resolves_through_advance_after_quiet_event_time() -> None:
    engine = reasoning_engine(quiet_s=1800)
    calls = harvest(T0, 600, 300)
    firing = run(engine, calls)
    last = calls[-1].ts
    assert engine.advance(last + 1800) == []  # exactly quiet_s is not yet quiet
    (resolved,) = engine.advance(last + 1800.5)
    assert resolved.status == "resolved"
    assert resolved.event_time == utc(last) == resolved.detected_at
    assert resolved.first_event_time == firing[0].first_event_time
    assert resolved.severity == firing[-1].severity  # the peak of the episode
    assert resolved.dedup_key == firing[0].dedup_key
    assert resolved.reasons and resolved.reasons[0].signal == "cot_request_rate"
    assert engine.open_episodes == 0
    assert engine.advance(last + 99_999) == []


def test_episode_resolves_through_process_and_a_new_one_opens() -> None:
    engine = reasoning_engine(quiet_s=1800)
    first = harvest(T0, 600, 300)
    run(engine, first)
    later = harvest(first[-1].ts + 3600, 600, 300)
    alerts = engine.process(later[0])
    assert [a.status for a in alerts] == ["resolved"]
    assert alerts[0].event_time == utc(first[-1].ts)
    second = run(engine, later[1:])
    assert second[0].status == "firing"
    assert second[0].first_event_time == second[0].event_time > alerts[0].event_time
    assert second[0].dedup_key == alerts[0].dedup_key
    assert second[0].alert_id != run(reasoning_engine(), first)[0].alert_id


def test_alerts_do_not_depend_on_how_often_advance_is_called() -> None:
    calls = sorted(
        [
            *harvest(T0, 600, 300),
            *harvest(T0 + 5000, 900, 400),
            *[build_harvest_call(t, account_id="key_2") for t in spread(T0, 14_400, 4000)],
            *[build_call(t, account_id="key_3") for t in spread(T0, 14_400, 3000)],
        ],
        key=lambda c: c.ts,
    )
    end = calls[-1].ts + 10_000

    rarely = reasoning_engine()
    rarely_alerts = [*run(rarely, calls), *rarely.advance(end)]

    often = reasoning_engine()
    often_alerts: list[Alert] = []
    for call in calls:
        often_alerts += often.process(call)
        often_alerts += often.advance(often.watermark)
    often_alerts += often.advance(end)

    def per_account(alerts: list[Alert]) -> dict[str | None, list[Alert]]:
        grouped: dict[str | None, list[Alert]] = {}
        for alert in alerts:
            grouped.setdefault(alert.account_id, []).append(alert)
        return grouped

    assert per_account(often_alerts) == per_account(rarely_alerts)
    assert [a.status for a in per_account(rarely_alerts)["key_1"]].count("resolved") == 2


# --- replay -------------------------------------------------------------------------


def test_same_input_gives_identical_alerts() -> None:
    calls = [
        *harvest(T0, 1200, 900),
        *[build_harvest_call(t, account_id="key_2") for t in spread(T0, 1200, 2000)],
        *[build_call(t, account_id="key_3") for t in spread(T0, 1200, 500)],
    ]
    calls.sort(key=lambda c: (c.ts, c.account_id))
    first, second = reasoning_engine(), reasoning_engine()
    a = [*run(first, calls), *first.advance(T0 + 10_000)]
    b = [*run(second, calls), *second.advance(T0 + 10_000)]
    assert a and [x.model_dump() for x in a] == [y.model_dump() for y in b]
    assert len({x.alert_id for x in a}) == len(a)


# --- learning -----------------------------------------------------------------------


def test_flagged_traffic_does_not_move_the_baseline() -> None:
    engine = reasoning_engine()
    history = [
        build_call(t, cot_request=i % 20 == 0) for i, t in enumerate(spread(T0, 86_400, 2000))
    ]
    run(engine, history)
    detector = engine.detectors[0]
    assert isinstance(detector, ReasoningHarvestDetector)
    state = reasoning_state(engine)
    assert detector.baseline_share(state) == pytest.approx(0.05, abs=0.01)

    def baseline() -> tuple[float, float, float]:
        return state.baseline_requests, state.baseline_cot, state.baseline_ts

    burst = harvest(T0 + 90_000, 1800, 2000)
    alerts: list[Alert] = []
    at_first_alert = None
    for i, call in enumerate(burst):
        alerts += engine.process(call)
        if alerts and at_first_alert is None:
            at_first_alert = baseline()
            # The calls before the first alert were learnt; the alerting one was not.
            assert state.baseline_ts == burst[i - 1].ts
    assert len(alerts) >= 3
    assert baseline() == at_first_alert
    assert {a.reasons[0].baseline for a in alerts} == {alerts[0].reasons[0].baseline}
    assert alerts[0].reasons[0].baseline == pytest.approx(0.07, abs=0.01)

    # Once the episode is over and the account is back to normal, it learns again.
    run(engine, [build_call(t) for t in spread(T0 + 200_000, 600, 10)])
    assert state.baseline_ts > T0 + 200_000


def test_the_window_keeps_counting_while_the_account_is_flagged() -> None:
    engine = reasoning_engine()
    run(engine, harvest(T0, 600, 600))
    assert reasoning_state(engine).window_cot >= 540


# --- combining detectors ------------------------------------------------------------


class FixedScore(AccountDetector[list[float]]):
    """A stub detector that reports the same score for every call, and counts calls."""

    def __init__(self, name: str, score: float) -> None:
        self.name = name
        self.score = score

    def new_state(self) -> list[float]:
        return [0.0, 0.0]  # observed, learnt

    def score_one(self, state: list[float], call: ApiCall) -> Signal:
        return Signal(self.name, self.score, state[0], None, f"always {self.score}")

    def observe_one(self, state: list[float], call: ApiCall) -> None:
        state[0] += 1

    def learn_one(self, state: list[float], call: ApiCall) -> None:
        state[1] += 1


def test_signals_combine_by_noisy_or_and_score_before_learning() -> None:
    engine = DetectionEngine([FixedScore("a", 0.3), FixedScore("b", 0.4)], fire_threshold=0.5)
    (alert,) = engine.process(build_call(T0))
    assert alert.score == pytest.approx(1 - 0.7 * 0.6)
    assert [r.signal for r in alert.reasons] == ["b", "a"]  # strongest first
    assert [r.value for r in alert.reasons] == [0.0, 0.0]  # scored before observing
    account = engine.account_state("org_1", "key_1")
    assert account is not None
    assert account.detector_states == ([1.0, 0.0], [1.0, 0.0])  # observed, not learnt


def test_calls_below_the_threshold_are_learnt() -> None:
    engine = DetectionEngine([FixedScore("a", 0.3)], fire_threshold=0.5)
    assert run(engine, [build_call(T0 + i) for i in range(3)]) == []
    account = engine.account_state("org_1", "key_1")
    assert account is not None and account.detector_states == ([3.0, 3.0],)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fire_threshold": 0.0},
        {"fire_threshold": 0.7, "severity_thresholds": (0.65, 0.8, 0.9)},
        {"severity_thresholds": (0.9, 0.8, 0.95)},
        {"severity_thresholds": (0.6, 0.8)},
        {"quiet_s": 0},
        {"detectors": [FixedScore("a", 0.1), FixedScore("a", 0.2)]},
    ],
)
def test_unworkable_engine_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError) as raised:
        DetectionEngine(**kwargs)  # type: ignore[arg-type]
    assert isinstance(raised.value, DetectionError)


# --- state round trip ---------------------------------------------------------------

stream = st.lists(
    st.tuples(
        st.floats(0, 7200, allow_nan=False),
        st.sampled_from(["key_1", "key_2"]),
        st.sampled_from(["harvest", "chat", "coding", "no_prompt"]),
    ),
    max_size=120,
)


def _call(offset: float, account_id: str, kind: str) -> ApiCall:
    if kind == "harvest":
        return build_harvest_call(T0 + offset, account_id=account_id)
    if kind == "coding":
        return build_coding_call(T0 + offset, account_id=account_id)
    if kind == "no_prompt":
        return build_harvest_call(T0 + offset, account_id=account_id, has_prompt=False)
    return build_call(T0 + offset, account_id=account_id)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(stream, stream)
def test_engine_survives_pickle_and_scores_identically(
    before: list[tuple[float, str, str]], after: list[tuple[float, str, str]]
) -> None:
    detector = ReasoningHarvestDetector(min_cot_requests=5, window_s=300, bucket_s=30)
    engine = DetectionEngine([detector], quiet_s=600)
    run(engine, [_call(*event) for event in before])
    restored = pickle.loads(pickle.dumps(engine))
    calls = [_call(*event) for event in after]
    assert run(restored, calls) == run(engine, calls)
    assert restored.advance(10_000 + T0) == engine.advance(10_000 + T0)
    assert (restored.accounts_tracked, restored.open_episodes) == (
        engine.accounts_tracked,
        engine.open_episodes,
    )


def test_factory_fixtures_build_what_their_names_say(
    make_call: CallFactory, harvest_call: CallFactory, coding_call: CallFactory
) -> None:
    assert not make_call().cot_request
    assert harvest_call().cot_request and harvest_call().stop_reason == "max_tokens"
    assert coding_call().tool_count > 0
