"""What an account's traffic looks like, per account, at three event-time horizons.

One compact state per account counts what matters for distillation and extraction:
requests asking for full reasoning traces, single-turn output-heavy answers, multi-sample
and log-prob requests, answers cut at `max_tokens`, jailbreaks and hidden-instruction
probes, refusals, throttling (429) and errors, near-duplicate prompt templates, output
tokens, topic coverage and the regularity of inter-arrival times. Each counter is an
exponentially decayed count in event time at the 1-hour and 1-day horizons, and the
three patterns' counters also at 10 minutes (time constants 10 min, 1 h and 1 day: a
decayed count is about the number of matching requests in the last 10 min, hour or day).
The account's own baseline is the 1-day horizon minus the calls the engine judged
suspicious (`withhold_one`), so a flagged account never teaches its
baseline that harvesting is normal.

Three *patterns* raise the score, each a shape quality in [0, 1] times a volume term:

- `cot_request_rate`: reasoning-trace harvesting (trace requests that are single-turn,
  tool-free and output-heavy, as a share of all requests and of trace requests);
- `multi_sample_logprobs`: capability sweeps (several samples or log-probs on
  single-turn prompts across many topics or from a few templates);
- `jailbreak_probing`: jailbreaks and hidden-instruction probes.

*Context* signals (templates, `max_tokens` hits, a young account, single-turn share,
output volume, a change from the account's own history, throttling, machine-regular
timing, topic coverage, being an outlier in its cohort) never alert alone: they
multiply the odds of the pattern evidence, by at most `max_amplification` in all. A new
customer at full volume with ordinary traffic therefore scores 0, however young and busy.

Counting a call and the suspicion run in Rust (`native/`, `BehaviourCore`), once per call
on the worker's hot path: the same arithmetic on the same state, so snapshots and scores
do not change (bench/PROFILE.md, "Twelfth pass"). The layout below is the persisted
format's, which the Rust core repeats; `tests/models/behaviour_reference.py` keeps the
Python they were ported from, and `tests/models/test_behaviour_core.py` holds the two
equal. Judging, which runs for the few calls past the gate, stays here.

Calibration: the score is `odds / (1 + odds)`. 0.5 means the evidence is exactly at the
alert bar (one pattern at its minimum volume with a perfect shape, or a weaker pattern
corroborated by context), 0.8 four times the bar's odds, 0.9 nine times.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

import msgspec
from distillwatch_native import BehaviourCore

from models.base import AccountDetector, Finding, Signal
from models.errors import ConfigurationError
from models.native import RebuiltCore
from models.records import ApiCall

# The counters of the 1-hour horizon, then the same at the 1-day horizon: counter f of
# the hour is at f, of the day at N_COUNTERS + f.
REQ, NO_PROMPT, COT, HARVEST, SINGLE, HEAVY, MAX_TOKENS, MULTI = range(8)
PROBE, REFUSAL, THROTTLED, ERROR, TEMPLATE, KILO_TOKENS = range(8, 14)
N_COUNTERS = 14
HORIZONS_S = (600.0, 3600.0, 86_400.0)
_K2 = N_COUNTERS
# Then the 10-minute horizon, only for what judging reads there: the three patterns'
# counters (a burst of harvesting, sweeping or probing): HARVEST at 28, MULTI at 29,
# PROBE at 30.
_S0 = 2 * N_COUNTERS
_SHORT = (HARVEST, MULTI, PROBE)
# Then one counter per topic slot at the 1-day horizon (topic entropy).
TOPIC_SLOTS = 16
_T0 = _S0 + len(_SHORT)
_TEMPLATE_SLOTS = 6
_TOPIC_BUCKET_S = 1800.0  # coverage is the union of this half hour and the previous one
_NEVER = -math.inf  # the landmark and last call time of an account without calls
_ZERO_COUNTS = array("f", bytes(4 * (_T0 + TOPIC_SLOTS)))
_ZERO_TEMPLATES = array("Q", bytes(8 * _TEMPLATE_SLOTS))
_NO_TEMPLATES = array("Q")  # shared by every state until its first templated prompt
_LOG1P_1000 = math.log1p(1000.0)

#: The gateway topic classifier's labels get fixed bits and entropy slots; other labels
#: hash (crc32) into the remaining bits (coverage) and share the two remaining slots
#: (entropy). The Rust core counts with this list; it repeats it.
KNOWN_TOPICS = (
    "coding", "math", "reasoning", "agentic", "chat", "writing", "science", "other",
    "law", "medicine", "finance", "translation", "data_analysis", "history",
)  # fmt: skip
#: Topic entropy (bits, 1-day horizon) from which prompts count as spread over the
#: taxonomy, and where the spread is complete. Single-subject products (tutoring,
#: batch jobs) sit under 1.6 bits, general chat and coding mixes about 2.7, a research
#: lab's handful of subjects under 2.4; a sweep over the 14 labels reaches 3.8.
ENTROPY_BROAD_BITS = (3.0, 3.5)
# Fewer topic-labelled prompts than this in the day (decayed) say nothing about spread.
_ENTROPY_MIN_PROMPTS = 10.0
_BROAD_MIN_TOPICS = 2 ** ENTROPY_BROAD_BITS[0]  # log2(k) topics: fewer cannot be broad
_LN2 = math.log(2.0)

#: Names of `features()`, in order; every feature is in [0, 1].
FEATURE_NAMES = (
    "cot_share", "harvest_share", "harvest_purity", "single_turn_share",
    "output_heavy_share", "max_tokens_share", "multi_sample_share", "probe_share",
    "template_share", "throttled_share", "topic_coverage", "volume", "tokens_per_request",
    "topic_entropy",
)  # fmt: skip


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below `lo`, 1 at or above `hi`, linear between."""
    if x <= lo:
        return 0.0
    if x >= hi:
        return 1.0
    return (x - lo) / (hi - lo)


class BehaviourState(msgspec.Struct, gc=False, eq=False):
    """One account's decayed counters, template slots, topic bits and timing.

    `counts` holds `N_COUNTERS` float32 counters at the 1-hour horizon, the same at the
    1-day horizon, the three pattern counters at the 10-minute horizon, then `TOPIC_SLOTS`
    counters of prompts per topic at the 1-day horizon, stored scaled by
    `exp((t - landmark) / tau)`
    so that counting a call touches only the counters it matches (the decay of the others
    is implicit); the landmark moves forward, and the counters are rescaled, every 60
    short time constants. `withheld` (allocated the first time the account is flagged)
    counts the suspicious calls at the 1-day horizon, on the same scale: the baseline is
    the 1-day horizon minus them. `templates` keeps the last few distinct prompt
    SimHashes (the shared empty `_NO_TEMPLATES` until the account's first single-turn
    prompt with a SimHash: many accounts never send one, and creating a state is most
    of the cost of an account's first call); `topics` packs the bucket number and the
    topic bits of this and the previous bucket; `cohort` packs the event time (whole
    seconds) from which the cohort percentile may be used and the percentile in
    thousandths (see `models.cohort`).
    """

    # A struct without garbage-collector tracking (`gc=False`): it holds only numbers and
    # arrays, so it can be in no reference cycle, and a million of them are never walked
    # by a collection. Built by msgspec in C, a new account's state costs a third of a
    # Python `__init__`. Compared by identity (`eq=False`), as an account's state is.
    counts: array[float] = msgspec.field(default_factory=_ZERO_COUNTS.__copy__)
    landmark: float = _NEVER
    withheld: array[float] | None = None
    templates: array[int] = _NO_TEMPLATES
    template_next: int = 0
    topics: int = 0
    last_ts: float = _NEVER
    gap_mean: float = 0.0
    gap_dev: float = 0.0
    cohort: int = 0
    sampled_epoch: int = -1

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore_state, msgspec.structs.astuple(self)


def _restore_state(*values: Any) -> BehaviourState:
    """A pickled `BehaviourState`. (A change of the layout of `counts` changes the
    snapshot format version of `streams.statestore`: older snapshots are not loaded.)"""
    state = BehaviourState(*values)
    if not state.templates:  # an empty array loads as its own object: share it again
        state.templates = _NO_TEMPLATES
    return state


class _View:
    """Decayed counts of one state at one event time, read once for scoring."""

    __slots__ = ("c", "w0", "w1", "w2")

    def __init__(self, state: BehaviourState, ts: float) -> None:
        d = ts - state.landmark if state.landmark > _NEVER else 0.0
        self.c = state.counts
        self.w0 = math.exp(d / HORIZONS_S[0])
        self.w1 = math.exp(d / HORIZONS_S[1])
        self.w2 = math.exp(d / HORIZONS_S[2])

    def hour(self, f: int) -> float:
        return self.c[f] / self.w1

    def day(self, f: int) -> float:
        return self.c[_K2 + f] / self.w2


def topic_coverage(state: BehaviourState, ts: float) -> int:
    """Distinct topics in the account's prompts over the last 30 to 60 minutes."""
    bucket = int(ts // _TOPIC_BUCKET_S)
    packed = state.topics
    stored = packed >> 64
    if stored == bucket:
        return ((packed & 0xFFFFFFFF) | ((packed >> 32) & 0xFFFFFFFF)).bit_count()
    if stored == bucket - 1:
        return (packed & 0xFFFFFFFF).bit_count()
    return 0


def topic_entropy(state: BehaviourState, ts: float) -> float | None:
    """Shannon entropy, in bits, of the topics of the account's prompts over the last
    day (decayed): 0 for a single subject, log2(k) for k topics used evenly.

    None when fewer than 10 topic-labelled prompts were seen in the day, which includes
    a gateway that sends no `prompt.topic`. Labels outside `KNOWN_TOPICS` share two
    slots, so a spread over unknown labels counts as at most one bit.
    """
    slots = state.counts[_T0:]
    total = sum(slots)  # scaled counts: the scale cancels out of the entropy
    if total <= 0.0:
        return None
    d = ts - state.landmark if state.landmark > _NEVER else 0.0
    if total * math.exp(-d / HORIZONS_S[2]) < _ENTROPY_MIN_PROMPTS:
        return None
    log = math.log
    weighted = 0.0
    for count in slots:
        if count > 0.0:
            weighted += count * log(count)
    return max(0.0, (log(total) - weighted / total) / _LN2)


def _breadth(entropy: float | None) -> float:
    """How completely the topic entropy says "spread over the taxonomy", in [0, 1]."""
    return 0.0 if entropy is None else _ramp(entropy, *ENTROPY_BROAD_BITS)


class BehaviourDetector(RebuiltCore[BehaviourCore], AccountDetector[BehaviourState]):
    """Scores an account's traffic shape and volume against the harvesting patterns.

    Pattern scores are `quality * x / (x + m)` where `x` is the decayed count of
    matching requests at a horizon and `m` the horizon's minimum (`min_harvest`,
    `min_multi`, `min_probe`: one per horizon, 10 min / 1 h / 1 day), taking the
    horizon with the most evidence; quality is a product of ramps over shares, so a
    shape that is not harvesting-like scores 0 at any volume. The defaults: 8
    harvest-shaped trace requests in 10 min (a hydra key at ~100 requests an hour),
    30 in an hour or 60 in a day; trace requests count only when at least 65% (in
    full from 90%) of the account's trace requests are single-turn, tool-free and
    output-heavy, which a tutoring product (multi-turn follow-ups) does not reach,
    and when they are at least 10% (in full from 35%) of its requests.

    >>> detector = BehaviourDetector()
    >>> state = detector.new_state()
    >>> def harvest(i):
    ...     return ApiCall(event_id=str(i), ts=1_800_000_000.0 + 30 * i, tenant_id="org_1",
    ...                    account_id="key_1", model="frontier-large", status=200,
    ...                    input_tokens=300, output_tokens=4096, stop_reason="max_tokens",
    ...                    has_prompt=True, cot_request=True, topic="math")
    >>> scores = [detector.assess_one(state, harvest(i)) for i in range(20)]
    >>> scores[0] is None, round(scores[-1].score, 2)
    (True, 0.76)
    >>> [s.name for s in scores[-1].signals][:2]
    ['cot_request_rate', 'max_tokens_hits']
    >>> round(detector.suspicion(state, harvest(19).ts), 2)
    0.91
    """

    name = "behaviour"

    def __init__(
        self,
        min_harvest: tuple[float, float, float] = (8.0, 30.0, 60.0),
        min_multi: tuple[float, float, float] = (6.0, 25.0, 100.0),
        min_probe: tuple[float, float, float] = (4.0, 10.0, 30.0),
        max_amplification: float = 4.0,
        young_account_days: float = 7.0,
    ) -> None:
        for name, mins in (
            ("min_harvest", min_harvest), ("min_multi", min_multi), ("min_probe", min_probe)
        ):
            if len(mins) != 3 or min(mins) <= 0:
                raise ConfigurationError(
                    f"{name} needs three positive minimum counts (10 min, 1 h, 1 day), "
                    f"got {mins}"
                )
        if not max_amplification >= 1.0:
            raise ConfigurationError(
                f"max_amplification must be at least 1, got {max_amplification}"
            )
        if not young_account_days > 0:
            raise ConfigurationError(
                f"young_account_days must be positive, got {young_account_days}"
            )
        self.min_harvest = tuple(min_harvest)
        self.min_multi = tuple(min_multi)
        self.min_probe = tuple(min_probe)
        self.max_amplification = max_amplification
        self.young_account_days = young_account_days
        self._renormalise_after = 60.0 * HORIZONS_S[0]
        self._core = self._new_core()

    def _new_core(self) -> BehaviourCore:
        judging = (self.min_harvest, self.min_multi, self.min_probe, self.max_amplification,
                   self.young_account_days, Finding, _explain)
        return BehaviourCore(self._renormalise_after, _NO_TEMPLATES, _ZERO_TEMPLATES, judging)

    def new_state(self) -> BehaviourState:
        return BehaviourState()

    # -- counting ---------------------------------------------------------------------

    def observe_one(self, state: BehaviourState, call: ApiCall) -> None:
        self._core.count(state, call)

    def learn_one(self, state: BehaviourState, call: ApiCall) -> None:
        """Nothing to do: the baseline is the 1-day horizon minus withheld calls."""

    def withhold_one(self, state: BehaviourState, call: ApiCall) -> None:
        withheld = state.withheld
        if withheld is None:
            withheld = state.withheld = array("f", bytes(4 * N_COUNTERS))
        w = math.exp((call.ts - state.landmark) / HORIZONS_S[2])
        withheld[REQ] += w
        if not call.has_prompt:
            withheld[NO_PROMPT] += w
            return
        if call.cot_request:
            withheld[COT] += w
            if call.turn == 1 and call.tool_count == 0 and (
                call.status != 200
                or call.output_tokens > call.input_tokens
                or call.stop_reason == "max_tokens"
            ):
                withheld[HARVEST] += w
        if call.n > 1 or call.logprobs:
            withheld[MULTI] += w
        jailbreak = call.jailbreak_score
        if call.sysprompt_probe or (jailbreak is not None and jailbreak >= 0.5):
            withheld[PROBE] += w

    # -- judging ----------------------------------------------------------------------

    def score_one(self, state: BehaviourState, call: ApiCall) -> Signal | None:
        """The strongest signal, as it would be with `call` counted (state unchanged)."""
        probe = msgspec.structs.replace(state, counts=array("f", state.counts))
        if state.templates is not _NO_TEMPLATES:
            probe.templates = array("Q", state.templates)
        if state.withheld is not None:
            probe.withheld = array("f", state.withheld)
        finding = self.assess_one(probe, call)
        if finding is None:
            return None
        strongest = finding.signals[0]
        return Signal(
            strongest.name, finding.score, strongest.value, strongest.baseline, strongest.detail
        )

    def assess_one(self, state: BehaviourState, call: ApiCall) -> Finding | None:
        # Count the call, then the cheap gate: no pattern can score without two matching
        # requests in the hour. Both in Rust (`BehaviourCore.count`), once per call.
        if not self._core.count(state, call):
            return None
        return self.judge_counted(state, call)

    def judge_counted(self, state: BehaviourState, call: ApiCall) -> Finding | None:
        """The second half of `assess_one`: the finding of a call already counted into
        `state` whose count let it through the gate."""
        # A late call is judged with the account as it stands now: decayed counts cannot
        # be rewound to before later calls were counted.
        ts = call.ts
        return self._judge(state, ts if ts >= state.last_ts else state.last_ts, call.created_at)

    def _judge(self, state: BehaviourState, ts: float, created_at: float | None) -> Finding | None:
        # In Rust (`BehaviourCore.judge`): the Python it replaced is
        # `tests/models/behaviour_reference.py`, held equal finding for finding. It ran on
        # every call past the gate, most of them a harvester's: 11.5 µs a call, 28 % of the
        # engine on traffic where one call in ten is a harvester's (bench/PROFILE.md,
        # "Twenty-sixth pass").
        finding: Finding | None = self._core.judge(state, ts, created_at)
        return finding

    # -- for the engine, the cohort models and the campaign linker --------------------

    def judge(self, state: BehaviourState, ts: float, created_at: float | None) -> Finding | None:
        """The account's finding at event time `ts` without counting anything."""
        return self._judge(state, ts, created_at)

    def suspicion(self, state: BehaviourState, ts: float) -> float:
        """How much the account's traffic looks like harvesting or extraction, in [0, 1].

        Volume-independent: shares over the 1-day horizon, shrunk towards ordinary
        traffic by a couple of pseudo-requests, so twenty harvest-shaped requests
        score as high as twenty thousand, while one or two say little. Components:
        the harvest shape (trace requests that are single-turn, tool-free,
        output-heavy), the sweep shape (several samples or log-probs over many
        topics, an even topic spread, or templates), the probe shape (jailbreaks,
        hidden-instruction probes), corroborated by templates, `max_tokens` hits and
        single-turn share; a reasoning-heavy but conversational account (a tutoring
        product) gets at most 0.25; ordinary chat, coding and agent traffic about 0.
        """
        return self._core.suspicion(state, ts)

    def features(self, state: BehaviourState, ts: float) -> tuple[float, ...]:
        """The account's behaviour at event time `ts` as `FEATURE_NAMES`, each in [0, 1].

        Shares over the last hour (decayed), topic coverage out of 16, request volume
        as `log1p(requests in the hour) / log1p(1000)`, output tokens per request over
        8,000, topic entropy over the last day out of 4 bits (0 without enough
        topic-labelled prompts). All zeros for an account without requests in the hour.
        """
        v = _View(state, ts)
        requests = v.hour(REQ)
        if requests <= 1e-6:
            return (0.0,) * len(FEATURE_NAMES)
        prompted = max(requests - v.hour(NO_PROMPT), 1e-9)
        cot, harvest = v.hour(COT), v.hour(HARVEST)
        completed = max(requests - v.hour(THROTTLED) - v.hour(ERROR), 1e-9)
        return (
            min(1.0, cot / prompted),
            min(1.0, harvest / prompted),
            (harvest + 1.0) / (cot + 2.0),
            min(1.0, v.hour(SINGLE) / requests),
            min(1.0, v.hour(HEAVY) / requests),
            min(1.0, v.hour(MAX_TOKENS) / completed),
            min(1.0, v.hour(MULTI) / requests),
            min(1.0, v.hour(PROBE) / prompted),
            min(1.0, v.hour(TEMPLATE) / prompted),
            min(1.0, v.hour(THROTTLED) / requests),
            min(1.0, topic_coverage(state, ts) / 16.0),
            min(1.0, math.log1p(requests) / _LOG1P_1000),
            min(1.0, v.hour(KILO_TOKENS) / requests / 8.0),
            min(1.0, (topic_entropy(state, ts) or 0.0) / 4.0),
        )

    def volume(self, state: BehaviourState, ts: float) -> float:
        """The `volume` feature alone (the same value `features` gives), for a cheap look."""
        d = ts - state.landmark if state.landmark > _NEVER else 0.0
        requests = state.counts[REQ] / math.exp(d / HORIZONS_S[1])
        if requests <= 1e-6:
            return 0.0
        return min(1.0, math.log1p(requests) / _LOG1P_1000)


def cohort_percentile(state: BehaviourState, ts: float) -> float | None:
    """The account's cohort percentile if it may be used at event time `ts`, else None.

    Usable from the moment its epoch was final (so a replay and a live run agree) and
    for an hour after that.
    """
    packed = state.cohort
    if not packed:
        return None
    usable_from = packed >> 10
    if not usable_from <= ts < usable_from + 3600:
        return None
    return (packed & 0x3FF) / 1000.0


# -- explanations: the sentences of alert reasons ---------------------------------------

_PATTERN_WORDS = {
    "cot_request_rate": "asked for full reasoning traces",
    "multi_sample_logprobs": "asked for several samples or log-probabilities",
    "jailbreak_probing": "were jailbreak attempts or probes for hidden instructions",
}


def _explain(evidence: object) -> tuple[Signal, ...]:
    patterns: tuple[tuple[Any, ...], ...]
    amplifiers: list[tuple[str, float, float, float | None]]
    requests: float
    patterns, amplifiers, requests = evidence  # type: ignore[misc]
    signals: list[Signal] = []
    for name, score, share, baseline, extra, _hour, short, day in patterns:
        if score <= 0.0:
            continue
        words = _PATTERN_WORDS[name]
        if name == "cot_request_rate":
            more = f"{extra:.0%} of them single-turn, tool-free and output-heavy"
        elif name == "multi_sample_logprobs":
            coverage, entropy = extra
            more = f"across {coverage:.0f} topics" + (
                "" if entropy is None else f", {entropy:.1f} bits of topic entropy over the day"
            )
        else:
            more = f"{extra:.0%} of answers were refusals"
        history = (
            "no clean history for this account yet" if baseline is None
            else f"its own history is {baseline:.0%}"
        )
        signals.append(Signal(
            name, score, share, baseline,
            f"{share:.0%} of ~{requests:,.0f} requests in the last hour {words}, {more} "
            f"(~{short:.0f} such in the last 10 min, ~{day:.0f} in the last day); {history}",
        ))
    # Context signals rank after the pattern they corroborate: score = a * that pattern's.
    strongest = max(p[1] for p in patterns)
    for name, a, value, baseline in amplifiers:
        signals.append(Signal(name, min(1.0, a) * strongest, value, baseline, _amplifier_words(
            name, value, baseline
        )))
    signals.sort(key=lambda s: -s.score)
    return tuple(signals)


def _amplifier_words(name: str, value: float, baseline: float | None) -> str:
    if name == "prompt_templates":
        return f"{value:.0%} of prompts in the last hour were near-duplicates of a few templates"
    if name == "max_tokens_hits":
        return f"{value:.0%} of answers in the last hour ran into the max_tokens ceiling"
    if name == "account_age":
        return f"the account was {value:.1f} days old, under the {baseline:g}-day cold start"
    if name == "single_turn_share":
        return f"{value:.0%} of requests in the last hour were single-turn and tool-free"
    if name == "output_volume":
        return f"~{value:,.0f} output tokens in the last hour"
    if name == "behaviour_shift":
        return f"the share rose to {value:.0%} from {baseline:.0%} in the account's own history"
    if name == "throttling":
        return f"{value:.0%} of requests in the last hour were throttled (429) and it kept on"
    if name == "arrival_regularity":
        return (
            f"requests arrive at machine-regular intervals (every ~{baseline:.1f} s, "
            f"spread {value:.0%})"
        )
    if name == "topic_coverage":
        return f"prompts covered {value:.0f} topics within the last hour"
    if name == "topic_entropy":
        return (
            f"prompts spread evenly over about {2.0 ** value:.0f} topics in the last day "
            f"(topic entropy {value:.1f} bits, broad from {baseline:g}; a single-subject "
            "product is under 1.6)"
        )
    if name == "cohort_outlier":
        return f"more unusual than {value:.0%} of accounts in its cohort of peers"
    return f"{name} = {value:g}"
