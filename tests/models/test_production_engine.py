"""The default DetectionEngine: behaviour, cohorts, feedback, tenant limits, suspicion."""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.behaviour import FEATURE_NAMES, BehaviourDetector, BehaviourState
from models.cohort import CohortModels, cohort_of
from models.engine import DetectionEngine
from models.errors import ConfigurationError
from models.feedback import FeedbackModel
from models.records import ApiCall
from schemas.alert import Alert
from tests.models.calls import T0, build_call, build_harvest_call, spread

DAY = 86_400.0


def run(engine: DetectionEngine, calls: Iterable[ApiCall]) -> list[Alert]:
    return [alert for call in calls for alert in engine.process(call)]


def harvest(account_id: str, start: float = T0, seconds: float = 1800, count: int = 60,
            tenant_id: str = "org_1", **fields: object) -> list[ApiCall]:
    return [
        build_harvest_call(t, tenant_id=tenant_id, account_id=account_id, **fields)
        for t in spread(start, seconds, count)
    ]


def sweep(account_id: str, start: float = T0, count: int = 60) -> list[ApiCall]:
    topics = ("coding", "math", "reasoning", "agentic", "chat", "writing", "science", "other",
              "law", "medicine", "finance", "translation", "data_analysis", "history")
    return [
        build_call(t, account_id=account_id, turn=1, n=4, logprobs=True, topic=topics[i % 14])
        for i, t in enumerate(spread(start, 1800, count))
    ]


# --- the production engine ------------------------------------------------------------


def test_the_default_engine_is_the_full_production_engine() -> None:
    engine = DetectionEngine()
    assert [type(d) for d in engine.detectors] == [BehaviourDetector]
    assert isinstance(engine.cohorts, CohortModels)
    assert isinstance(engine.feedback, FeedbackModel)
    streaming = DetectionEngine(fire_threshold=0.6, quiet_s=900.0)  # as streams builds it
    assert streaming.cohorts is not None and streaming.fire_threshold == 0.6


def test_a_hydra_key_is_named_within_ten_minutes_and_look_alikes_are_not() -> None:
    engine = DetectionEngine()
    rng = random.Random(3)
    hydra = harvest("key_hydra", count=17, seconds=600, created_at=T0 - 0.5 * DAY,
                    stop_reason="end_turn", output_tokens=3000)
    tutoring = [
        build_harvest_call(t, account_id="key_tutor", turn=rng.choice((1, 1, 2, 3)),
                           stop_reason="end_turn", output_tokens=900,
                           cot_request=rng.random() < 0.75, created_at=T0 - 300 * DAY)
        for t in spread(T0, 3 * 3600, 300)
    ]
    newcomer = [build_call(t, account_id="key_new", created_at=T0 - DAY, turn=rng.randint(1, 3))
                for t in spread(T0, 3 * 3600, 450)]
    lab = [build_call(t, account_id="key_lab", turn=1, n=8, logprobs=True,
                      topic=("math", "science", "reasoning", "coding", "writing")[i % 5])
           for i, t in enumerate(spread(T0, 3 * 3600, 120))]
    calls = sorted([*hydra, *tutoring, *newcomer, *lab], key=lambda c: c.ts)
    alerts = run(engine, calls)
    assert {a.account_id for a in alerts if a.status == "firing"} == {"key_hydra"}
    first = next(a for a in alerts if a.status == "firing")
    assert (first.event_time.timestamp() - T0) < 600
    reasons = {r.signal: r for r in first.reasons}
    assert "cot_request_rate" in reasons and "account_age" in reasons
    assert all(r.detail for r in first.reasons)


def test_reasons_say_observed_value_baseline_and_a_sentence() -> None:
    engine = DetectionEngine()
    alerts = run(engine, harvest("key_1", count=120, seconds=3600, stop_reason="max_tokens"))
    reason = alerts[-1].reasons[0]
    assert reason.signal == "cot_request_rate"
    assert reason.value == pytest.approx(1.0)
    assert "asked for full reasoning traces" in reason.detail


# --- last_suspicion and features -------------------------------------------------------


def test_last_suspicion_orders_harvest_shape_over_tutoring_over_chat() -> None:
    engine = DetectionEngine()

    def suspicion_after(calls: list[ApiCall]) -> float:
        run(engine, calls)
        return engine.last_suspicion

    swarm = suspicion_after(harvest("key_swarm", seconds=6 * 3600, count=20,
                                    stop_reason="end_turn", output_tokens=3000))
    tutoring = suspicion_after([
        build_harvest_call(t, account_id="key_tutor", turn=1 + i % 3, output_tokens=900,
                           stop_reason="end_turn", cot_request=i % 4 != 0)
        for i, t in enumerate(spread(T0, 6 * 3600, 400))
    ])
    chat = suspicion_after([build_call(t, account_id="key_chat")
                            for t in spread(T0, 6 * 3600, 400)])
    assert swarm > tutoring > chat
    assert swarm >= 0.5 and chat < 0.05


def test_account_features_are_the_behaviour_vector() -> None:
    engine = DetectionEngine()
    assert engine.account_features("org_1", "nobody") is None
    run(engine, harvest("key_1", count=30))
    features = engine.account_features("org_1", "key_1")
    assert features is not None
    assert list(features) == [*FEATURE_NAMES, "suspicion"]
    assert features["cot_share"] == pytest.approx(1.0) and features["suspicion"] > 0.5


# --- cohorts: a new account compared with its peers -------------------------------------


def _peer(rng: random.Random) -> tuple[float, ...]:
    return tuple(min(1.0, max(0.0, rng.gauss(0.1, 0.03))) for _ in FEATURE_NAMES)


def test_a_new_account_is_compared_with_its_peers() -> None:
    cohorts = CohortModels(epoch_s=600, lateness_s=0, window_size=50, min_learnt=60,
                           learn_every=1, seed=1)
    rng = random.Random(5)
    states = {}
    for epoch in range(4):  # a cohort of ordinary peers
        for i in range(80):
            state = states.setdefault(i, BehaviourState())
            cohorts.offer("new/single_turn", ("org", f"peer_{i}"), state, _peer(rng), epoch,
                          score=False, learn=True)
        cohorts.advance((epoch + 1) * 600.0)
    odd, usual = BehaviourState(), BehaviourState()
    cohorts.offer("new/single_turn", ("org", "odd"), odd, (0.95,) * len(FEATURE_NAMES), 4,
                  score=True, learn=False)
    cohorts.offer("new/single_turn", ("org", "usual"), usual, _peer(rng), 4,
                  score=True, learn=False)
    cohorts.advance(5 * 600.0)
    odd_pct = (odd.cohort & 0x3FF) / 1000
    usual_pct = (usual.cohort & 0x3FF) / 1000
    assert odd_pct >= 0.95 > usual_pct
    assert odd.cohort >> 10 == 5 * 600  # usable from the moment the epoch was final


def test_only_a_sample_to_be_scored_holds_its_account() -> None:
    """A scored sample writes its percentile into the account's state object, so that
    account must stay in memory until its epoch is final; a sample only learnt from
    writes nothing and holds nothing of the account, which may be packed meanwhile."""
    cohorts = CohortModels(epoch_s=600, lateness_s=0, learn_every=1)
    rng = random.Random(3)
    scored, learnt = BehaviourState(), BehaviourState()
    cohorts.offer("new/single_turn", ("org", "scored"), scored, _peer(rng), 0,
                  score=True, learn=True)
    cohorts.offer("new/single_turn", ("org", "learnt"), learnt, _peer(rng), 0,
                  score=False, learn=True)
    assert cohorts.is_sampled(("org", "scored")) and not cohorts.is_sampled(("org", "learnt"))
    assert [sample[2] for sample in cohorts._pending[0]] == [scored, None]
    cohorts.advance(600.0)
    assert not cohorts.is_sampled(("org", "scored")) and cohorts._pending == {}
    assert cohorts.cohorts["new/single_turn"].learnt == 2  # both learnt from


def test_cohort_results_do_not_depend_on_arrival_order() -> None:
    def percentiles(order: list[int]) -> list[int]:
        cohorts = CohortModels(window_size=20, min_learnt=25, learn_every=1, lateness_s=0)
        rng = random.Random(9)
        vectors = [_peer(rng) for _ in range(60)]
        states = [BehaviourState() for _ in vectors]
        for epoch in range(3):
            for i in order:
                cohorts.offer("young/conversational", ("org", f"k{i:02d}"), states[i],
                              vectors[i], epoch, score=True, learn=True)
            cohorts.advance((epoch + 1) * 600.0)
        return [state.cohort for state in states]

    order = list(range(60))
    shuffled = order[:]
    random.Random(1).shuffle(shuffled)
    assert percentiles(order) == percentiles(shuffled)


def test_cohort_names() -> None:
    assert cohort_of(None, 0.9) == "unknown/single_turn"
    assert cohort_of(2.0, 0.1) == "new/conversational"
    assert cohort_of(30.0, 0.7) == "young/single_turn"
    assert cohort_of(400.0, 0.2) == "established/conversational"


# --- analyst feedback -------------------------------------------------------------------


def test_a_benign_verdict_closes_the_episode_and_stops_re_alerting() -> None:
    engine = DetectionEngine()
    first = harvest("key_1", count=60, seconds=1800)
    assert run(engine, first)
    verdict_at = first[-1].ts + 1
    (resolved,) = engine.apply_verdict("org_1", "key_1", "benign", verdict_at)
    assert resolved.status == "resolved" and resolved.reasons[-1].signal == "analyst_verdict"
    assert engine.open_episodes == 0
    # the same behaviour again: nothing
    assert run(engine, harvest("key_1", start=verdict_at + 10, count=60, seconds=1800)) == []
    # something else entirely: alerts again
    assert run(engine, [c for c in sweep("key_1", start=verdict_at + 2000, count=120)])


def test_a_benign_verdict_expires() -> None:
    engine = DetectionEngine(suppress_s=3600.0)
    first = harvest("key_1")
    run(engine, first)
    engine.apply_verdict("org_1", "key_1", "benign", first[-1].ts)
    later = harvest("key_1", start=first[-1].ts + 2 * 3600)
    assert any(a.status == "firing" for a in run(engine, later))


def test_confirmed_verdicts_shift_scores_of_similar_accounts() -> None:
    def trained(harvest_verdict: str, sweep_verdict: str) -> DetectionEngine:
        engine = DetectionEngine(feedback=FeedbackModel(min_verdicts=10, weight=0.5))
        for i in range(5):
            run(engine, harvest(f"key_h{i}", count=40))
            engine.apply_verdict("org_1", f"key_h{i}", harvest_verdict, T0 + 1800)  # type: ignore[arg-type]
            run(engine, sweep(f"key_s{i}", count=60))
            engine.apply_verdict("org_1", f"key_s{i}", sweep_verdict, T0 + 1800)  # type: ignore[arg-type]
        assert engine.feedback is not None and engine.feedback.ready
        return engine

    confirming = trained("confirmed", "benign")
    dismissing = trained("benign", "confirmed")
    untrained = DetectionEngine(feedback=None)
    probe = harvest("key_new", start=T0 + 4000, count=12, seconds=600)
    scores = []
    for engine in (confirming, untrained, dismissing):
        run(engine, probe)
        scores.append(engine.last_score)
    assert scores[0] > scores[1] > scores[2]
    reasons = [r.signal for a in run(confirming, harvest("key_other", start=T0 + 5000))
               for r in a.reasons]
    assert "analyst_feedback" in reasons


def test_an_unknown_verdict_is_refused_and_unknown_accounts_ignored() -> None:
    engine = DetectionEngine()
    assert engine.apply_verdict("org_1", "nobody", "benign", T0) == []
    with pytest.raises(ConfigurationError):
        engine.apply_verdict("org_1", "nobody", "maybe", T0)  # type: ignore[arg-type]


# --- tenant rate limit ------------------------------------------------------------------


def test_a_tenant_opens_at_most_its_limit_of_episodes_per_hour() -> None:
    engine = DetectionEngine(tenant_episode_limit=3)
    calls = sorted(
        (c for i in range(8) for c in harvest(f"key_{i}", tenant_id="org_big", count=60)),
        key=lambda c: (c.ts, c.account_id),
    )
    firing = [a for a in run(engine, calls) if a.status == "firing"]
    assert len({a.account_id for a in firing}) == 3
    # an hour later the folded accounts open their own episodes, and the note says so
    later = sorted(
        (c for i in range(8) for c in harvest(f"key_{i}", tenant_id="org_big",
                                                start=T0 + 3700, count=60)),
        key=lambda c: (c.ts, c.account_id),
    )
    more = [a for a in run(engine, later) if a.status == "firing"]
    assert any(r.signal == "tenant_rate_limit" and r.value == 5.0
               for a in more for r in a.reasons)
    # another tenant is not held back
    other = run(engine, harvest("key_x", tenant_id="org_small", start=T0 + 3700))
    assert any(a.status == "firing" for a in other)


# --- state round trip -------------------------------------------------------------------

kinds = st.sampled_from(["harvest", "sweep", "chat", "probe"])
stream = st.lists(
    st.tuples(st.floats(0, 4 * 3600, allow_nan=False), st.sampled_from(["k1", "k2", "k3"]),
              kinds),
    max_size=150,
)


def _call(offset: float, account_id: str, kind: str) -> ApiCall:
    ts = T0 + offset
    if kind == "harvest":
        return build_harvest_call(ts, account_id=account_id, created_at=T0 - DAY)
    if kind == "sweep":
        return build_call(ts, account_id=account_id, turn=1, n=4, logprobs=True,
                          topic=("math", "law", "chat", "coding")[int(offset) % 4])
    if kind == "probe":
        return build_call(ts, account_id=account_id, jailbreak_score=0.9, sysprompt_probe=True)
    return build_call(ts, account_id=account_id)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=60)
@given(stream, stream)
def test_the_production_engine_survives_pickle_and_scores_identically(
    before: list[tuple[float, str, str]], after: list[tuple[float, str, str]]
) -> None:
    engine = DetectionEngine(quiet_s=600, tenant_episode_limit=2,
                             cohorts=CohortModels(window_size=5, min_learnt=5, learn_every=1))
    run(engine, [_call(*e) for e in sorted(before)])
    if before:
        engine.apply_verdict("org_1", before[0][1], "benign", T0 + 1)
    restored = pickle.loads(pickle.dumps(engine))
    calls = [_call(*e) for e in sorted(after)]
    assert run(restored, calls) == run(engine, calls)
    assert restored.last_suspicion == engine.last_suspicion
    assert restored.advance(T0 + 10 * 3600) == engine.advance(T0 + 10 * 3600)
