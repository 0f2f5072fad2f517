"""`BehaviourDetector`'s counting and suspicion as they were in Python before they moved to
Rust (`models/behaviour.py` at c790048, verbatim), on top of today's class for the rest.

`test_behaviour_core.py` runs the same calls through both and compares the states, the
gate and the suspicion bit for bit; `python -m bench.behaviour` times the two. Do not
"improve" `_count`, `_renormalise`, `assess_one`, `suspicion` or `_topic` here: they are
the specification `distillwatch_native.BehaviourCore` is checked against.
"""

from __future__ import annotations

import math
import zlib

from models.base import Finding
from models.behaviour import (
    _K2,
    _NEVER,
    _NO_TEMPLATES,
    _S0,
    _T0,
    _TEMPLATE_SLOTS,
    _TOPIC_BUCKET_S,
    _ZERO_TEMPLATES,
    COT,
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
    _ramp,
    _View,
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

