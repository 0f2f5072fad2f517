"""`BehaviourDetector`'s counting and suspicion as they were in Python before they moved to
Rust (`models/behaviour.py` at c790048, verbatim), and its judging (`_judge`, at 06c99d1,
verbatim), on top of today's class for the rest.

`test_behaviour_core.py` runs the same calls through both and compares the states, the
gate, the suspicion and the findings bit for bit; `python -m bench.behaviour` times the
two. Do not "improve" `_count`, `_renormalise`, `assess_one`, `suspicion`, `_judge` or
`_topic` here: they are the specification `distillwatch_native.BehaviourCore` is checked
against.
"""

from __future__ import annotations

import math
import zlib

from models.base import Finding
from models.behaviour import (
    _BROAD_MIN_TOPICS,
    _K2,
    _NEVER,
    _NO_TEMPLATES,
    _S0,
    _T0,
    _TEMPLATE_SLOTS,
    _TOPIC_BUCKET_S,
    _ZERO_TEMPLATES,
    COT,
    ENTROPY_BROAD_BITS,
    ERROR,
    HARVEST,
    HORIZONS_S,
    KNOWN_TOPICS,
    MAX_TOKENS,
    MULTI,
    N_COUNTERS,
    NO_PROMPT,
    PROBE,
    REQ,
    SINGLE,
    TEMPLATE,
    THROTTLED,
    TOPIC_SLOTS,
    BehaviourDetector,
    BehaviourState,
    _breadth,
    _explain,
    _ramp,
    _View,
    cohort_percentile,
    topic_coverage,
    topic_entropy,
)
from models.records import ApiCall

_exp = math.exp
_GAP_ALPHA = 0.1  # weight of the newest inter-arrival gap in its running mean and spread
# topic -> (coverage bit, index of its entropy counter in `BehaviourState.counts`)
_TOPICS: dict[str, tuple[int, int]] = {
    topic: (1 << i, _T0 + i) for i, topic in enumerate(KNOWN_TOPICS)
}

def _topic(topic: str) -> tuple[int, int]:
    entry = _TOPICS.get(topic)
    if entry is None:
        crc = zlib.crc32(topic.encode())
        bit = 1 << (len(KNOWN_TOPICS) + crc % (32 - len(KNOWN_TOPICS)))
        entry = (bit, _T0 + len(KNOWN_TOPICS) + crc % (TOPIC_SLOTS - len(KNOWN_TOPICS)))
        if len(_TOPICS) < 4096:  # a bounded cache: labels come from a classifier
            _TOPICS[topic] = entry
    return entry



class ReferenceBehaviourDetector(BehaviourDetector):
    """`BehaviourDetector` counting and judging suspicion the way it did in Python."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # The topic bucket of the latest call's time and its bounds: consecutive calls
        # (of any account) mostly share one, and `int(ts // size)` costs more than a look.
        self._bucket = -1
        self._bucket_from = self._bucket_until = 0.0

    def observe_one(self, state: BehaviourState, call: ApiCall) -> None:
        self._count(state, call)

    def _renormalise(self, state: BehaviourState, ts: float) -> None:
        c = state.counts
        if state.landmark == _NEVER:
            state.landmark = ts
            return
        d = ts - state.landmark
        factor = math.exp(-d / HORIZONS_S[1])
        for f in range(N_COUNTERS):
            c[f] *= factor
        factor = math.exp(-d / HORIZONS_S[2])
        for f in range(_K2, _S0):
            c[f] *= factor
        for f in range(_T0, _T0 + TOPIC_SLOTS):
            c[f] *= factor
        short = math.exp(-d / HORIZONS_S[0])
        for f in range(_S0, _T0):
            c[f] *= short
        withheld = state.withheld
        if withheld is not None:
            for f in range(N_COUNTERS):
                withheld[f] *= factor
        state.landmark = ts

    def _count(self, state: BehaviourState, call: ApiCall) -> float:
        """Count `call`; returns the 1-hour weight of its time, 0.0 if it was not counted."""
        ts = call.ts
        d = ts - state.landmark
        if d > self._renormalise_after:  # also an account's first call: landmark -inf
            self._renormalise(state, ts)
            w0 = w1 = w2 = 1.0
        elif d < -self._renormalise_after:
            return 0.0  # hours late: too old to change what the horizons show
        else:
            w0 = _exp(d / 600.0)
            w1 = _exp(d / 3600.0)
            w2 = _exp(d / 86400.0)
        c = state.counts
        c[0] += w1
        c[14] += w2
        status = call.status
        out = call.output_tokens
        if out:
            kilo = out * 0.001
            c[13] += kilo * w1
            c[27] += kilo * w2
        single = call.turn == 1 and call.tool_count == 0
        stop = call.stop_reason
        heavy = single and status == 200 and (out > call.input_tokens or stop == "max_tokens")
        if call.has_prompt:
            if call.cot_request:
                c[2] += w1
                c[16] += w2
                if heavy or (single and status != 200):  # throttled: the shape, no answer
                    c[28] += w0
                    c[3] += w1
                    c[17] += w2
            jailbreak = call.jailbreak_score
            if call.sysprompt_probe or (jailbreak is not None and jailbreak >= 0.5):
                c[30] += w0
                c[8] += w1
                c[22] += w2
            simhash = call.simhash
            if simhash is not None and single:  # templates matter where harvesting lives
                templates = state.templates
                if templates is _NO_TEMPLATES:
                    templates = state.templates = _ZERO_TEMPLATES[:]
                for known in templates:
                    if (simhash ^ known).bit_count() <= 8:
                        c[12] += w1
                        c[26] += w2
                        break
                else:
                    slot = state.template_next
                    templates[slot] = simhash
                    state.template_next = (slot + 1) % _TEMPLATE_SLOTS
            topic = call.topic
            if topic is not None:
                if self._bucket_from <= ts < self._bucket_until:
                    bucket = self._bucket
                else:
                    bucket = self._bucket = int(ts // _TOPIC_BUCKET_S)
                    self._bucket_from = bucket * _TOPIC_BUCKET_S
                    self._bucket_until = self._bucket_from + _TOPIC_BUCKET_S
                packed = state.topics
                stored = packed >> 64
                bit, slot = _TOPICS.get(topic) or _topic(topic)
                c[slot] += w2
                if stored == bucket:
                    if not packed & bit:  # most calls repeat a topic: no new int then
                        state.topics = packed | bit
                elif stored < bucket:
                    previous = packed & 0xFFFFFFFF if stored == bucket - 1 else 0
                    state.topics = (bucket << 64) | (previous << 32) | bit
                elif stored == bucket + 1:  # late, from the previous bucket
                    state.topics = packed | (bit << 32)
        else:
            c[1] += w1
            c[15] += w2
        if single:
            c[4] += w1
            c[18] += w2
            if heavy:
                c[5] += w1
                c[19] += w2
        if stop is not None:
            if stop == "max_tokens":
                c[6] += w1
                c[20] += w2
            elif stop == "refusal":
                c[9] += w1
                c[23] += w2
        if call.n > 1 or call.logprobs:
            c[29] += w0
            c[7] += w1
            c[21] += w2
        if status >= 400:
            if status == 429:
                c[10] += w1
                c[24] += w2
            else:
                c[11] += w1
                c[25] += w2
        last = state.last_ts
        if ts >= last:
            if last > _NEVER:
                gap = ts - last
                mean = state.gap_mean + _GAP_ALPHA * (gap - state.gap_mean)
                state.gap_dev += _GAP_ALPHA * (abs(gap - mean) - state.gap_dev)
                state.gap_mean = mean
            state.last_ts = ts
        return w1

    def assess_one(self, state: BehaviourState, call: ApiCall) -> Finding | None:
        w1 = self._count(state, call)
        # Cheap gate: no pattern can score without two matching requests in the hour.
        gate = 2.0 * w1
        c = state.counts
        if c[3] < gate and c[7] < gate and c[8] < gate:
            return None
        # A late call is judged with the account as it stands now: decayed counts cannot
        # be rewound to before later calls were counted.
        ts = call.ts
        return self._judge(state, ts if ts >= state.last_ts else state.last_ts, call.created_at)

    def _judge(self, state: BehaviourState, ts: float, created_at: float | None) -> Finding | None:
        c = state.counts
        d = ts - state.landmark if state.landmark > _NEVER else 0.0
        i0 = math.exp(-d / 600.0)
        i1 = math.exp(-d / 3600.0)
        i2 = math.exp(-d / 86400.0)
        requests = c[0] * i1
        if requests <= 0.0:
            return None
        prompted = requests - c[1] * i1
        cot = c[2] * i1
        harvest = c[3] * i1
        multi = c[7] * i1
        probes = c[8] * i1
        single_share = c[4] * i1 / requests
        coverage = topic_coverage(state, ts)
        template_share = c[12] * i1 / (prompted + 1.0)

        mh, mm, mp = self.min_harvest, self.min_multi, self.min_probe
        purity = (harvest + 1.0) / (cot + 2.0)
        harvest_quality = _ramp(purity, 0.65, 0.9) * _ramp(harvest / (prompted + 1.0), 0.1, 0.35)
        harvest_odds = max(c[28] * i0 / mh[0], harvest / mh[1], c[17] * i2 / mh[2])
        harvest_score = harvest_quality * harvest_odds / (1.0 + harvest_odds)

        multi_share = multi / (requests + 1.0)
        multi_quality = _ramp(multi_share, 0.3, 0.7)
        entropy: float | None = None
        if multi_quality > 0.0:
            # Breadth: many topics this hour, an even spread over the day, or templates.
            entropy = topic_entropy(state, ts)
            multi_quality *= max(
                _ramp(coverage, 6, 10), _ramp(template_share, 0.3, 0.6), _breadth(entropy)
            ) * _ramp(single_share, 0.6, 0.9)
        multi_odds = max(c[29] * i0 / mm[0], multi / mm[1], c[21] * i2 / mm[2])
        multi_score = multi_quality * multi_odds / (1.0 + multi_odds)

        probe_share = probes / (prompted + 1.0)
        probe_odds = max(c[30] * i0 / mp[0], probes / mp[1], c[22] * i2 / mp[2])
        probe_score = _ramp(probe_share, 0.08, 0.3) * probe_odds / (1.0 + probe_odds)

        base = 1.0 - (1.0 - harvest_score) * (1.0 - multi_score) * (1.0 - probe_score)
        if base <= 0.0:
            return None
        base = min(base, 0.999_999)

        # The account's own history: the day horizon without the withheld calls.
        own_requests = (c[14] - c[15]) * i2
        own_cot, own_harvest, own_multi, own_probe = c[16] * i2, c[17] * i2, c[21] * i2, c[22] * i2
        withheld = state.withheld
        if withheld is not None:
            own_requests -= (withheld[REQ] - withheld[NO_PROMPT]) * i2
            own_cot -= withheld[COT] * i2
            own_harvest -= withheld[HARVEST] * i2
            own_multi -= withheld[MULTI] * i2
            own_probe -= withheld[PROBE] * i2
        if own_requests >= 30.0:
            own: tuple[float | None, ...] = (
                max(0.0, own_cot) / own_requests, max(0.0, own_harvest) / own_requests,
                max(0.0, own_multi) / own_requests, max(0.0, own_probe) / own_requests,
            )
        else:
            own = (None, None, None, None)

        patterns = (
            ("cot_request_rate", harvest_score, cot / max(prompted, 1e-9), own[0],
             purity, harvest, c[28] * i0, c[17] * i2),
            ("multi_sample_logprobs", multi_score, multi_share, own[2],
             (coverage, entropy), multi, c[29] * i0, c[21] * i2),
            ("jailbreak_probing", probe_score, probe_share, own[3],
             c[9] * i1 / requests, probes, c[30] * i0, c[22] * i2),
        )
        if harvest_score >= multi_score and harvest_score >= probe_score:
            top, now, was = 0, harvest / max(prompted, 1e-9), own[1]
        elif multi_score >= probe_score:
            top, now, was = 1, multi_share, own[2]
        else:
            top, now, was = 2, probe_share, own[3]

        amplifiers: list[tuple[str, float, float, float | None]] = []  # name, a, value, base
        throttled = c[10] * i1
        completed = requests - throttled - c[11] * i1
        a = 0.5 * _ramp(template_share, 0.3, 0.7)
        if a > 0.0:
            amplifiers.append(("prompt_templates", a, template_share, None))
        max_tokens_share = c[6] * i1 / (completed + 1.0) if completed > 0 else 0.0
        a = 0.5 * _ramp(max_tokens_share, 0.1, 0.3)
        if a > 0.0:
            amplifiers.append(("max_tokens_hits", a, max_tokens_share, None))
        if created_at is not None:
            age_days = max(0.0, (ts - created_at) / 86_400.0)
            young = self.young_account_days
            a = _ramp(young - age_days, 0.0, young - 1.0 if young > 1 else young)
            if a > 0.0:
                amplifiers.append(("account_age", a, age_days, young))
        a = 0.3 * _ramp(single_share, 0.7, 0.95)
        if a > 0.0:
            amplifiers.append(("single_turn_share", a, single_share, None))
        kilo_tokens = c[13] * i1
        a = 0.4 * _ramp(kilo_tokens, 100.0, 400.0)
        if a > 0.0:
            amplifiers.append(("output_volume", a, kilo_tokens * 1000.0, None))
        if was is not None:
            a = 0.6 * _ramp(now - was, 0.3, 0.6)
            if a > 0.0:
                amplifiers.append(("behaviour_shift", a, now, was))
        throttled_share = throttled / requests
        a = 0.5 * _ramp(throttled_share, 0.1, 0.4)
        if a > 0.0:
            amplifiers.append(("throttling", a, throttled_share, None))
        if c[14] * i2 >= 20.0 and state.gap_mean > 0.0:
            cv = state.gap_dev / state.gap_mean
            a = 0.2 * _ramp(0.3 - cv, 0.0, 0.2)
            if a > 0.0:
                amplifiers.append(("arrival_regularity", a, cv, state.gap_mean))
        if top != 1:  # breadth is part of the sweep pattern's quality, else context
            # One breadth signal: the hour's coverage, or the day's even spread where that
            # says more. Fewer topics used than 2**3 cannot be broad: no entropy for them.
            breadth: tuple[str, float, float, float | None] = (
                "topic_coverage", 0.3 * _ramp(coverage, 6, 10), float(coverage), None
            )
            if breadth[1] < 0.3 and (
                TOPIC_SLOTS - state.counts[_T0:].count(0.0) >= _BROAD_MIN_TOPICS
            ):
                entropy = topic_entropy(state, ts)
                if entropy is not None and 0.3 * _breadth(entropy) > breadth[1]:
                    breadth = (
                        "topic_entropy", 0.3 * _breadth(entropy), entropy, ENTROPY_BROAD_BITS[0]
                    )
            if breadth[1] > 0.0:
                amplifiers.append(breadth)
        percentile = cohort_percentile(state, ts)
        if percentile is not None:
            a = 0.5 * _ramp(percentile, 0.9, 0.99)
            if a > 0.0:
                amplifiers.append(("cohort_outlier", a, percentile, 0.5))

        amplification = 1.0
        for amplifier in amplifiers:
            amplification *= 1.0 + amplifier[1]
        if amplification > self.max_amplification:
            amplification = self.max_amplification
        odds = base / (1.0 - base) * amplification
        # `amplifiers` is this call's own list and nothing changes it later: it is the
        # snapshot. Patterns that scored 0 are dropped when explaining, not here.
        evidence = (patterns, amplifiers, requests)
        return Finding(odds / (1.0 + odds), evidence, _explain)

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
        v = _View(state, ts)
        requests = v.day(REQ)
        prompted = requests - v.day(NO_PROMPT)
        if requests < 1.0:
            return 0.0
        cot, harvest = v.day(COT), v.day(HARVEST)
        template_share = v.day(TEMPLATE) / (prompted + 2.0)
        single_share = v.day(SINGLE) / (requests + 2.0)
        harvest_shape = _ramp((harvest + 1.0) / (cot + 2.0), 0.6, 0.9) * _ramp(
            harvest / (prompted + 2.0), 0.15, 0.5
        )
        sweep_shape = _ramp(v.day(MULTI) / (requests + 2.0), 0.3, 0.7)
        if sweep_shape > 0.0:
            sweep_shape *= max(
                _ramp(topic_coverage(state, ts), 6, 10), _ramp(template_share, 0.3, 0.6),
                _breadth(topic_entropy(state, ts)),
            )
        probe_shape = _ramp(v.day(PROBE) / (prompted + 2.0), 0.08, 0.3)
        shape = max(harvest_shape, sweep_shape, probe_shape)
        completed = requests - v.day(THROTTLED) - v.day(ERROR)
        max_tokens_share = v.day(MAX_TOKENS) / (completed + 2.0) if completed > 0 else 0.0
        context = (
            _ramp(template_share, 0.3, 0.7)
            + _ramp(max_tokens_share, 0.1, 0.3)
            + _ramp(single_share, 0.7, 0.95)
        ) / 3.0
        reasoning_heavy = 0.25 * _ramp(cot / (prompted + 2.0), 0.3, 0.9)
        return 1.0 - (1.0 - shape * (0.7 + 0.3 * context)) * (1.0 - reasoning_heavy)

