"""BehaviourDetector: every signal fires on its pattern, stays silent on ordinary traffic
and on traffic that lacks the field it needs; suspicion; state round trips."""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.behaviour import (
    FEATURE_NAMES,
    BehaviourDetector,
    BehaviourState,
    cohort_percentile,
    topic_coverage,
    topic_entropy,
)
from models.errors import ConfigurationError
from models.records import ApiCall
from tests.models.calls import T0, build_call, build_harvest_call, spread

TOPICS = ("coding", "math", "reasoning", "agentic", "chat", "writing", "science", "other",
          "law", "medicine", "finance", "translation", "data_analysis", "history")
TEMPLATE = 0x0123_4567_89AB_CDEF
DAY = 86_400.0


def judge(calls: list[ApiCall], detector: BehaviourDetector | None = None) -> dict[str, float]:
    """Signal name -> score at the last call, {} when nothing is reported."""
    detector = detector or BehaviourDetector()
    state = detector.new_state()
    finding = None
    for call in calls:
        finding = detector.assess_one(state, call)
    if finding is None:
        return {}
    return {signal.name: signal.score for signal in finding.signals} | {"_score": finding.score}


def harvest(count: int = 60, seconds: float = 1800, **fields: object) -> list[ApiCall]:
    """Harvest-shaped trace requests: single-turn, tool-free, output-heavy."""
    return [
        build_harvest_call(t, stop_reason="end_turn", output_tokens=3000, **fields)
        for t in spread(T0, seconds, count)
    ]


def sweep(count: int = 60, **fields: object) -> list[ApiCall]:
    """Single-turn, several samples with log-probs, walking the whole topic taxonomy."""
    values: dict[str, object] = {"turn": 1, "n": 4, "logprobs": True}
    values.update(fields)
    return [
        build_call(t, topic=TOPICS[i % len(TOPICS)], **values)
        for i, t in enumerate(spread(T0, 1800, count))
    ]


def probes(count: int = 40, **fields: object) -> list[ApiCall]:
    values: dict[str, object] = {"jailbreak_score": 0.9, "sysprompt_probe": True,
                                 "stop_reason": "refusal"}
    values.update(fields)
    return [build_call(t, **values) for t in spread(T0, 1800, count)]


def chat(count: int = 300, seconds: float = 3600, **fields: object) -> list[ApiCall]:
    return [build_call(t, **fields) for t in spread(T0, seconds, count)]


# --- the three patterns ---------------------------------------------------------------

PATTERNS: list[tuple[str, Callable[..., list[ApiCall]], dict[str, object]]] = [
    ("cot_request_rate", harvest, {"has_prompt": False, "cot_request": False}),
    ("multi_sample_logprobs", sweep, {"n": 1, "logprobs": False}),
    ("jailbreak_probing", probes, {"jailbreak_score": None, "sysprompt_probe": False}),
]


@pytest.mark.parametrize(("name", "pattern", "missing"), PATTERNS, ids=[p[0] for p in PATTERNS])
def test_a_pattern_fires_on_its_traffic(
    name: str, pattern: Callable[..., list[ApiCall]], missing: dict[str, object]
) -> None:
    scores = judge(pattern())
    assert scores[name] >= 0.5
    assert scores["_score"] >= 0.5


@pytest.mark.parametrize(("name", "pattern", "missing"), PATTERNS, ids=[p[0] for p in PATTERNS])
def test_a_pattern_is_silent_when_the_gateway_does_not_send_its_field(
    name: str, pattern: Callable[..., list[ApiCall]], missing: dict[str, object]
) -> None:
    assert name not in judge(pattern(**missing))


@pytest.mark.parametrize(
    "traffic",
    [
        pytest.param(lambda: chat(cot_request=False), id="chat"),
        pytest.param(
            lambda: [build_call(t, cot_request=i % 10 == 0, turn=1 + i % 3)
                     for i, t in enumerate(spread(T0, 3600, 400))], id="chat, 10% traces"),
        pytest.param(
            lambda: [build_call(t, turn=14, tool_count=6, input_tokens=12_000, topic="coding",
                                stop_reason="tool_use") for t in spread(T0, 3600, 400)],
            id="coding agent"),
        pytest.param(  # tutoring: most prompts ask for worked solutions, many follow-ups
            lambda: [build_harvest_call(t, turn=1 + i % 2, stop_reason="end_turn",
                                        output_tokens=900, cot_request=i % 4 != 0)
                     for i, t in enumerate(spread(T0, 3600, 400))], id="tutoring"),
        pytest.param(  # research lab: n > 1 and log-probs on a handful of topics
            lambda: [build_call(t, turn=1, n=8, logprobs=True, topic=TOPICS[i % 5],
                                output_tokens=2800) for i, t in enumerate(spread(T0, 3600, 400))],
            id="research lab"),
        pytest.param(  # eval harness: every topic, single-turn, no traces, no sampling
            lambda: [build_call(t, turn=1, topic=TOPICS[i % 14])
                     for i, t in enumerate(spread(T0, 3600, 3000))], id="eval harness"),
        pytest.param(  # batch job: one template, metronome, short answers
            lambda: [build_call(t, turn=1, simhash=TEMPLATE ^ (1 << (i % 64)),
                                output_tokens=200, endpoint="batch")
                     for i, t in enumerate(spread(T0, 3600, 360))], id="batch job"),
        pytest.param(  # a new customer at full volume
            lambda: [build_call(t, created_at=T0 - 0.5 * DAY, turn=1 + i % 2)
                     for i, t in enumerate(spread(T0, 3600, 600))], id="new customer"),
        pytest.param(  # chat users trying a jailbreak now and then
            lambda: [build_call(t, jailbreak_score=0.9 if i % 100 == 0 else 0.01)
                     for i, t in enumerate(spread(T0, 3600, 400))], id="chat app, 1% jailbreaks"),
    ],
)
def test_ordinary_and_look_alike_traffic_scores_below_the_bar(
    traffic: Callable[[], list[ApiCall]],
) -> None:
    assert judge(traffic()).get("_score", 0.0) < 0.5


def test_harvesting_is_caught_at_a_hydra_keys_rate() -> None:
    # ~100 requests an hour: 17 in the first ten minutes.
    scores = judge(harvest(17, 600))
    assert scores["_score"] >= 0.5


# --- context signals: they corroborate, never alert alone ------------------------------

CONTEXT: list[tuple[str, dict[str, object], dict[str, object]]] = [
    ("prompt_templates", {"simhash": TEMPLATE}, {"simhash": None}),
    ("max_tokens_hits", {"stop_reason": "max_tokens"}, {"stop_reason": None}),
    ("account_age", {"created_at": T0 - 0.5 * DAY}, {"created_at": None}),
    ("output_volume", {"output_tokens": 16_000}, {"output_tokens": 1000}),
    ("throttling", {"status": 429, "output_tokens": 0}, {"status": 200}),
    ("topic_coverage", {"topic": "<sweep>"}, {"topic": None}),
]


def _with_context(fields: dict[str, object], base: Callable[..., list[ApiCall]]) -> list[ApiCall]:
    calls = []
    for i, call in enumerate(base()):
        values = dict(fields)
        if values.get("topic") == "<sweep>":
            values["topic"] = TOPICS[i % len(TOPICS)]
        if values.get("status") == 429 and i % 3:
            values = {}  # a third of the requests throttled
        calls.append(_replace(call, **values))
    return calls


def _replace(call: ApiCall, **fields: object) -> ApiCall:
    import msgspec

    return msgspec.structs.replace(call, **fields)


@pytest.mark.parametrize(("name", "present", "missing"), CONTEXT, ids=[c[0] for c in CONTEXT])
def test_a_context_signal_corroborates_a_pattern(
    name: str, present: dict[str, object], missing: dict[str, object]
) -> None:
    with_it = judge(_with_context(present, lambda: harvest(60, 1800)))
    assert with_it.get(name, 0.0) > 0.0
    without = judge(_with_context(missing, lambda: harvest(60, 1800)))
    assert name not in without
    assert with_it["_score"] > without["_score"]


@pytest.mark.parametrize(("name", "present", "missing"), CONTEXT, ids=[c[0] for c in CONTEXT])
def test_a_context_signal_alone_never_alerts(
    name: str, present: dict[str, object], missing: dict[str, object]
) -> None:
    assert judge(_with_context(present, lambda: chat(600, 3600, turn=1))) == {}


def test_a_change_from_the_accounts_own_history_stands_out() -> None:
    detector = BehaviourDetector()
    history = [build_call(t, turn=1, cot_request=i % 20 == 0)
               for i, t in enumerate(spread(T0 - 6 * 3600, 6 * 3600, 600))]
    scores = judge([*history, *harvest(60, 1800)], detector)
    assert scores.get("behaviour_shift", 0.0) > 0.0


def test_machine_regular_timing_is_noted() -> None:
    regular = [build_harvest_call(T0 + 10.0 * i, stop_reason="end_turn", output_tokens=3000)
               for i in range(200)]
    assert judge(regular).get("arrival_regularity", 0.0) > 0.0
    rng = random.Random(7)
    poisson = sorted(T0 + rng.uniform(0, 2000) for _ in range(200))
    irregular = [build_harvest_call(t, stop_reason="end_turn", output_tokens=3000) for t in poisson]
    assert "arrival_regularity" not in judge(irregular)


# --- topic entropy: how evenly prompts spread over the taxonomy -------------------------


def counted(calls: list[ApiCall]) -> tuple[BehaviourDetector, BehaviourState]:
    """A detector and the state of one account that sent `calls`."""
    detector = BehaviourDetector()
    state = detector.new_state()
    for call in calls:
        detector.assess_one(state, call)
    return detector, state


def entropy_of(calls: list[ApiCall]) -> float | None:
    return topic_entropy(counted(calls)[1], calls[-1].ts)


def test_a_sweep_has_more_topic_entropy_than_a_mix_and_a_one_topic_product() -> None:
    sweep_calls = sweep(140)
    one_topic = [build_harvest_call(t, turn=1 + i % 2, stop_reason="end_turn", output_tokens=900)
                 for i, t in enumerate(spread(T0, 3600, 400))]  # a tutoring app: math only
    mixed = [build_call(t, topic=("coding", "chat", "writing", "math")[i % 4])
             for i, t in enumerate(spread(T0, 3600, 400))]
    swept, mix, tutoring = entropy_of(sweep_calls), entropy_of(mixed), entropy_of(one_topic)
    assert swept is not None and mix is not None and tutoring is not None
    assert swept > 3.7  # log2(14) = 3.81
    assert mix == pytest.approx(2.0, abs=0.01)
    assert tutoring == 0.0
    features = dict(zip(FEATURE_NAMES, _features_at_end(sweep_calls), strict=True))
    assert features["topic_entropy"] == pytest.approx(swept / 4.0)


def _features_at_end(calls: list[ApiCall]) -> tuple[float, ...]:
    detector, state = counted(calls)
    return detector.features(state, calls[-1].ts)


def test_without_topics_or_with_too_few_there_is_no_entropy() -> None:
    untopical = [_replace(call, topic=None) for call in sweep(140)]
    assert entropy_of(untopical) is None
    assert entropy_of(sweep(6)) is None  # six prompts say nothing about a spread
    features = dict(zip(FEATURE_NAMES, _features_at_end(untopical), strict=True))
    assert features["topic_entropy"] == 0.0 and features["topic_coverage"] == 0.0
    assert features["multi_sample_share"] > 0.9  # the other features are untouched


def slow_sweep(**fields: object) -> list[ApiCall]:
    """A capability sweep at ~6 requests an hour for a day: a handful of topics in any
    half hour (coverage stays low), all fourteen evenly over the day."""
    values: dict[str, object] = {"turn": 1, "n": 4, "logprobs": True}
    values.update(fields)
    return [
        build_call(t, **{"topic": TOPICS[i % len(TOPICS)], **values})
        for i, t in enumerate(spread(T0, DAY, 150))
    ]


def test_a_slow_sweep_is_caught_by_its_topic_spread_and_only_with_topics() -> None:
    detector = BehaviourDetector()
    state = detector.new_state()
    calls = slow_sweep()
    for call in calls:
        detector.assess_one(state, call)
    assert topic_coverage(state, calls[-1].ts) <= 6  # the hour alone: no sweep (from 6 up)
    scores = judge(calls)
    assert scores["_score"] >= 0.5 and "multi_sample_logprobs" in scores
    assert judge(slow_sweep(topic=None)) == {}  # no topics: this evidence is silent
    assert judge(slow_sweep(topic="math")) == {}  # one topic: a research workload
    assert suspicion_of(calls) > suspicion_of(slow_sweep(topic=None)) == 0.0


def test_topic_entropy_corroborates_a_pattern_and_explains_itself() -> None:
    # Harvesting at ~6 requests an hour for a day, prompts rotating through the taxonomy.
    calls = [build_harvest_call(t, stop_reason="end_turn", output_tokens=3000,
                                topic=TOPICS[i % len(TOPICS)])
             for i, t in enumerate(spread(T0, DAY, 150))]
    spread_out = judge(calls)
    one_topic = judge([_replace(call, topic="math") for call in calls])
    no_topic = judge([_replace(call, topic=None) for call in calls])
    assert spread_out["topic_entropy"] > 0.0
    assert "topic_entropy" not in one_topic and "topic_entropy" not in no_topic
    assert spread_out["_score"] > one_topic["_score"] == no_topic["_score"]
    assert spread_out["cot_request_rate"] == no_topic["cot_request_rate"]  # only that signal

    detector = BehaviourDetector()
    state = detector.new_state()
    finding = None
    for call in calls:
        finding = detector.assess_one(state, call)
    assert finding is not None
    reason = next(s for s in finding.signals if s.name == "topic_entropy")
    assert reason.value > 3.5 and reason.baseline == 3.0
    assert "14 topics in the last day" in reason.detail and "bits" in reason.detail


def test_a_research_lab_sampling_a_few_topics_all_day_stays_below_the_bar() -> None:
    lab = [build_call(t, turn=1, n=8, logprobs=True, topic=TOPICS[i % 5], output_tokens=2800)
           for i, t in enumerate(spread(T0, DAY, 960))]
    entropy = entropy_of(lab)
    assert entropy is not None and entropy < 2.4
    assert judge(lab).get("_score", 0.0) < 0.5


def test_single_turn_share_is_a_context_signal() -> None:
    assert judge(harvest()).get("single_turn_share", 0.0) > 0.0


def test_the_cohort_percentile_corroborates_only_while_it_is_valid() -> None:
    detector = BehaviourDetector()
    state = detector.new_state()
    calls = harvest(12, 600)
    for call in calls:
        detector.assess_one(state, call)
    state.cohort = (int(T0) << 10) | 995
    at = calls[-1].ts
    assert cohort_percentile(state, at) == 0.995
    finding = detector.judge(state, at, None)
    assert finding is not None and "cohort_outlier" in {s.name for s in finding.signals}
    assert cohort_percentile(state, T0 + 7200) is None
    assert cohort_percentile(state, T0 - 1) is None


# --- suspicion: volume-independent shape, for the campaign linker ----------------------


def suspicion_of(calls: list[ApiCall]) -> float:
    detector, state = counted(calls)
    return detector.suspicion(state, calls[-1].ts)


def test_suspicion_orders_harvest_shape_over_tutoring_over_chat() -> None:
    # a swarm key: twenty harvest-shaped requests over six hours, templated
    swarm = [build_harvest_call(t, stop_reason="end_turn", output_tokens=3000,
                                simhash=TEMPLATE ^ (1 << (i % 3)))
             for i, t in enumerate(spread(T0, 6 * 3600, 20))]
    tutoring = [build_harvest_call(t, turn=1 + i % 3, stop_reason="end_turn", output_tokens=900,
                                   cot_request=i % 4 != 0, created_at=T0 - 400 * DAY)
                for i, t in enumerate(spread(T0, 6 * 3600, 500))]
    ordinary = chat(500, 6 * 3600, cot_request=False)
    coding = [build_call(t, turn=12, tool_count=5, topic="coding", stop_reason="tool_use")
              for t in spread(T0, 6 * 3600, 500)]
    s_swarm, s_tutor = suspicion_of(swarm), suspicion_of(tutoring)
    s_chat, s_coding = suspicion_of(ordinary), suspicion_of(coding)
    assert s_swarm >= 0.5
    assert s_swarm > s_tutor > s_chat
    assert s_tutor <= 0.25
    assert s_chat < 0.05 and s_coding < 0.05


def test_suspicion_does_not_grow_with_volume_alone() -> None:
    few = suspicion_of(harvest(20, 6 * 3600))
    many = suspicion_of(harvest(2000, 6 * 3600))
    assert abs(few - many) < 0.15


# --- state ---------------------------------------------------------------------------


def test_features_are_named_and_in_the_unit_interval() -> None:
    detector = BehaviourDetector()
    state = detector.new_state()
    assert detector.features(state, T0) == (0.0,) * len(FEATURE_NAMES)
    for call in [*harvest(), *sweep(), *probes()]:
        detector.assess_one(state, call)
    features = detector.features(state, T0 + 1800)
    assert len(features) == len(FEATURE_NAMES)
    assert all(0.0 <= f <= 1.0 for f in features)
    assert topic_coverage(state, T0 + 1799) == len(TOPICS)


def test_the_landmark_moves_without_changing_what_counts_say() -> None:
    detector = BehaviourDetector()
    moved, stayed = detector.new_state(), detector.new_state()
    calls = harvest(40, 20 * 3600)  # long enough to move the landmark several times
    for call in calls:
        detector.assess_one(moved, call)
    assert moved.landmark > T0
    at = calls[-1].ts
    fresh = detector.features(moved, at)
    for call in calls:
        detector.observe_one(stayed, call)
    assert detector.features(stayed, at) == pytest.approx(fresh, rel=1e-4)


def test_score_one_reads_without_changing_state() -> None:
    detector = BehaviourDetector()
    state = detector.new_state()
    calls = harvest(30, 600)
    for call in calls[:-1]:
        detector.assess_one(state, call)
    before = pickle.dumps(state)
    signal = detector.score_one(state, calls[-1])
    assert signal is not None and signal.name == "cot_request_rate"
    assert pickle.dumps(state) == before


@pytest.mark.parametrize("kwargs", [
    {"min_harvest": (8.0, 30.0)}, {"min_multi": (0.0, 1.0, 1.0)},
    {"max_amplification": 0.5}, {"young_account_days": 0},
])
def test_unworkable_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        BehaviourDetector(**kwargs)  # type: ignore[arg-type]


kinds = st.sampled_from(["harvest", "chat", "sweep", "probe", "throttled", "no_prompt"])


def _call(offset: float, kind: str) -> ApiCall:
    ts = T0 + offset
    if kind == "harvest":
        return build_harvest_call(ts, simhash=TEMPLATE, created_at=T0 - DAY)
    if kind == "sweep":
        return build_call(ts, turn=1, n=4, logprobs=True, topic=TOPICS[int(offset) % 14])
    if kind == "probe":
        return build_call(ts, jailbreak_score=0.95, sysprompt_probe=True)
    if kind == "throttled":
        return build_call(ts, status=429, output_tokens=0, stop_reason=None)
    if kind == "no_prompt":
        return build_harvest_call(ts, has_prompt=False, cot_request=False)
    return build_call(ts)


stream = st.lists(st.tuples(st.floats(0, 30 * 3600, allow_nan=False), kinds), max_size=80)


@settings(deadline=None)
@given(stream, stream)
def test_state_survives_pickle_and_judges_identically(
    before: list[tuple[float, str]], after: list[tuple[float, str]]
) -> None:
    detector = BehaviourDetector()
    state = detector.new_state()
    for offset, kind in sorted(before):
        detector.assess_one(state, _call(offset, kind))
        detector.withhold_one(state, _call(offset, kind)) if kind == "harvest" else None
    restored: BehaviourState = pickle.loads(pickle.dumps(state))
    for offset, kind in after:
        call = _call(offset, kind)
        a, b = detector.assess_one(state, call), detector.assess_one(restored, call)
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.score == b.score and a.signals == b.signals
        assert detector.suspicion(state, call.ts) == detector.suspicion(restored, call.ts)


def test_template_slots_exist_only_once_a_templated_prompt_came_and_survive_pickling() -> None:
    detector = BehaviourDetector()
    state = detector.new_state()
    detector.assess_one(state, build_call(T0, turn=1))
    untouched = pickle.loads(pickle.dumps(state))
    assert len(state.templates) == 0 and untouched.templates is state.templates  # shared
    detector.assess_one(state, build_call(T0 + 1, turn=1, simhash=0xABCD))
    assert list(state.templates).count(0xABCD) == 1
    restored = pickle.loads(pickle.dumps(state))
    assert list(restored.templates) == list(state.templates)
    assert restored.templates is not state.templates
