"""Reasoning-trace harvesting: an account that mostly asks for full step-by-step traces.

Distilling a reasoning model needs many (prompt, full reasoning trace) pairs. The
harvesting pattern is a high share of requests that ask for the complete trace
(`prompt.cot_request`), at volume, shaped like dataset generation rather than use:
first turn of a conversation, no tools, and a long answer (longer than the prompt, or
cut at `max_tokens`). Ordinary chat, coding and agent traffic asks for traces rarely,
and when it does the requests are multi-turn, tool-bearing or short.
"""

from __future__ import annotations

import math
from array import array

from models.base import AccountDetector, Signal
from models.errors import ConfigurationError
from models.records import ApiCall

# Three counters per bucket, side by side in one flat array: requests at offset 0,
# then trace requests, then harvest-shaped trace requests.
_COT, _SHAPED = 1, 2
_COUNTERS = 3
_NO_BUCKET = -(1 << 62)  # newest bucket of an account that has sent nothing yet


class ReasoningHarvestState:
    """One account's evidence and baseline for `ReasoningHarvestDetector`.

    `counts` is a ring of event-time buckets (`ts // bucket_s`), three uint32 counters
    each: requests, requests asking for reasoning traces, and those of them shaped like
    harvesting. The ring holds exactly the buckets `newest_bucket - n + 1 .. newest_bucket`
    (stale slots are zeroed as the window slides), so no bucket ids are stored. The
    `window_*` fields are the sums over the ring, kept up to date as it slides.
    The baseline is an exponentially decayed count in event time, learned only from
    calls the engine did not judge suspicious.
    """

    __slots__ = (
        "counts",
        "newest_bucket",
        "window_requests",
        "window_cot",
        "window_shaped",
        "baseline_requests",
        "baseline_cot",
        "baseline_ts",
    )

    def __init__(self, n_buckets: int) -> None:
        self.counts = array("I", [0]) * (_COUNTERS * n_buckets)
        self.newest_bucket = _NO_BUCKET
        self.window_requests = 0
        self.window_cot = 0
        self.window_shaped = 0
        self.baseline_requests = 0.0
        self.baseline_cot = 0.0
        self.baseline_ts = -math.inf


def _is_harvest_shaped(call: ApiCall) -> bool:
    """A trace request that looks like dataset generation: single-turn, tool-free, long."""
    return (
        call.cot_request
        and call.turn == 1
        and call.tool_count == 0
        and (call.stop_reason == "max_tokens" or call.output_tokens > call.input_tokens)
    )


def _duration_words(seconds: float) -> str:
    """`600.0` -> "10 min": how a responder reads a window length."""
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


class ReasoningHarvestDetector(AccountDetector[ReasoningHarvestState]):
    """Flags an account whose recent requests mostly ask for full reasoning traces.

    Over a sliding event-time window of `window_s` seconds, counted in tumbling buckets
    of `bucket_s` seconds (so the window spans between `window_s - bucket_s` and
    `window_s` seconds of traffic), with `n` requests of which `c` (a share `s = c / n`)
    asked for the trace and a share `h` of those were harvest-shaped (turn 1, no tools,
    output longer than the prompt or cut at `max_tokens`), the score is

        ramp(s; min_cot_share .. full_cot_share) * (1 - shape_weight + shape_weight * h)
            * c / (c + min_cot_requests)

    and nothing is reported while `c < min_cot_requests` or `s <= min_cot_share`. The
    score is in [0, 1]; more trace requests, more of them harvest-shaped, raise it,
    more ordinary requests lower it. With the defaults, pure harvesting scores 0.5 at
    `min_cot_requests` requests per window, 0.8 at four times that and 0.9 at nine
    times that; trace requests that are not harvest-shaped score below 0.5 at any
    volume, so alone they never reach the engine's default threshold.

    Why the defaults: a 10 min window in 1 min buckets sees a batch job's rate and alerts
    within minutes, in 120 bytes per account. 50 trace requests per window (5 a minute,
    about 7,000 a day) is where one account starts to matter for a distillation set;
    slower harvesting matters only across many accounts, which is campaign linking's
    job, and a share over fewer requests is noise. Ordinary accounts, maths-heavy ones
    included, ask for full traces in a minority of requests, hence a share above 0.5,
    counted in full from 0.8. `shape_weight=0.5` keeps unshaped trace requests below
    the default threshold. A 7-day half-life spans weekly cycles.

    Only calls that carry the gateway's `prompt` group count: a gateway that sends none
    silences this signal. The account's baseline (the decayed share of its past
    requests that asked for traces, half-life `baseline_half_life_s`) is reported for
    the responder; the score does not depend on it, so an account that harvests from
    its first day, or ramps up slowly, cannot teach the rule that harvesting is normal.

    >>> detector = ReasoningHarvestDetector()
    >>> state = detector.new_state()
    >>> def harvest(i):
    ...     return ApiCall(event_id=str(i), ts=1_800_000_000.0 + 3 * i, tenant_id="org_1",
    ...                    account_id="key_1", model="frontier-large", status=200,
    ...                    input_tokens=300, output_tokens=4096, stop_reason="max_tokens",
    ...                    has_prompt=True, cot_request=True)
    >>> for i in range(199):
    ...     detector.observe_one(state, harvest(i))
    >>> signal = detector.score_one(state, harvest(199))
    >>> round(signal.score, 2), signal.value
    (0.8, 1.0)
    >>> for clause in signal.detail.split("; "):
    ...     print(clause)
    100% of 200 requests in 10 min asked for full reasoning traces
    100% of those were single-turn, tool-free and output-heavy
    no history for this account yet
    """

    name = "cot_request_rate"

    def __init__(
        self,
        window_s: float = 600.0,
        bucket_s: float = 60.0,
        min_cot_requests: int = 50,
        min_cot_share: float = 0.5,
        full_cot_share: float = 0.8,
        shape_weight: float = 0.5,
        baseline_half_life_s: float = 7 * 86_400.0,
    ) -> None:
        if not (bucket_s > 0 and window_s >= bucket_s):
            raise ConfigurationError(
                f"need 0 < bucket_s <= window_s, got bucket_s={bucket_s}, window_s={window_s}"
            )
        n_buckets = round(window_s / bucket_s)
        if not math.isclose(n_buckets * bucket_s, window_s):
            raise ConfigurationError(
                f"window_s={window_s} is not a whole number of bucket_s={bucket_s} buckets"
            )
        if min_cot_requests < 1:
            raise ConfigurationError(
                f"min_cot_requests must be at least 1, got {min_cot_requests}"
            )
        if not 0.0 <= min_cot_share < full_cot_share <= 1.0:
            raise ConfigurationError(
                "need 0 <= min_cot_share < full_cot_share <= 1, got "
                f"min_cot_share={min_cot_share}, full_cot_share={full_cot_share}"
            )
        if not 0.0 <= shape_weight <= 1.0:
            raise ConfigurationError(f"shape_weight must be in [0, 1], got {shape_weight}")
        if not baseline_half_life_s > 0:
            raise ConfigurationError(
                f"baseline_half_life_s must be positive, got {baseline_half_life_s}"
            )
        self.window_s = window_s
        self.bucket_s = bucket_s
        self.min_cot_requests = min_cot_requests
        self.min_cot_share = min_cot_share
        self.full_cot_share = full_cot_share
        self.shape_weight = shape_weight
        self.baseline_half_life_s = baseline_half_life_s
        self._n_buckets = n_buckets
        self._zeros = array("I", [0]) * (_COUNTERS * n_buckets)
        self._window_words = _duration_words(window_s)

    def new_state(self) -> ReasoningHarvestState:
        return ReasoningHarvestState(self._n_buckets)

    def _slid_totals(self, state: ReasoningHarvestState, bucket: int) -> tuple[int, int, int]:
        """Window sums once the window's newest bucket moves forward to `bucket`."""
        n = self._n_buckets
        newest = state.newest_bucket
        if bucket - newest >= n:
            return 0, 0, 0
        counts = state.counts
        requests, cot, shaped = state.window_requests, state.window_cot, state.window_shaped
        for leaving in range(newest + 1, bucket + 1):  # these slots get reused
            i = (leaving % n) * _COUNTERS
            if counts[i]:
                requests -= counts[i]
                cot -= counts[i + _COT]
                shaped -= counts[i + _SHAPED]
        return requests, cot, shaped

    def score_one(self, state: ReasoningHarvestState, call: ApiCall) -> Signal | None:
        if not call.has_prompt:
            return None
        if state.window_cot + call.cot_request < self.min_cot_requests:
            return None  # sliding the window only removes requests: cheap early exit
        bucket = int(call.ts // self.bucket_s)
        newest = state.newest_bucket
        if bucket > newest:
            requests, cot, shaped = self._slid_totals(state, bucket)
        else:
            requests, cot, shaped = state.window_requests, state.window_cot, state.window_shaped
        if bucket > newest - self._n_buckets:  # the call falls inside the window
            requests += 1
            if call.cot_request:
                cot += 1
                if _is_harvest_shaped(call):
                    shaped += 1
        min_cot_requests = self.min_cot_requests
        if cot < min_cot_requests:
            return None
        share = cot / requests
        min_share = self.min_cot_share
        if share <= min_share:
            return None

        share_term = min(1.0, (share - min_share) / (self.full_cot_share - min_share))
        shaped_share = shaped / cot
        shape_weight = self.shape_weight
        shape_term = 1.0 - shape_weight + shape_weight * shaped_share
        volume_term = cot / (cot + min_cot_requests)
        baseline = self.baseline_share(state)
        history = (
            "no history for this account yet"
            if baseline is None
            else f"this account's usual share is {baseline:.0%}"
        )
        return Signal(
            name=self.name,
            score=share_term * shape_term * volume_term,
            value=share,
            baseline=baseline,
            detail=(
                f"{share:.0%} of {requests:,} requests in {self._window_words} asked for full "
                f"reasoning traces; {shaped_share:.0%} of those were single-turn, tool-free "
                f"and output-heavy; {history}"
            ),
        )

    def observe_one(self, state: ReasoningHarvestState, call: ApiCall) -> None:
        if not call.has_prompt:
            return
        n = self._n_buckets
        bucket = int(call.ts // self.bucket_s)
        newest = state.newest_bucket
        counts = state.counts
        if bucket > newest:
            if not state.window_requests:
                pass  # the ring sums to zero, so every slot already is zero
            elif bucket - newest >= n:
                counts[:] = self._zeros
                state.window_requests = state.window_cot = state.window_shaped = 0
            else:
                for leaving in range(newest + 1, bucket + 1):  # these slots get reused
                    i = (leaving % n) * _COUNTERS
                    if counts[i]:
                        state.window_requests -= counts[i]
                        state.window_cot -= counts[i + _COT]
                        state.window_shaped -= counts[i + _SHAPED]
                        counts[i] = counts[i + _COT] = counts[i + _SHAPED] = 0
            state.newest_bucket = bucket
        elif bucket <= newest - n:
            return  # older than the window: it no longer changes what the window shows

        i = (bucket % n) * _COUNTERS
        counts[i] += 1
        state.window_requests += 1
        if call.cot_request:
            counts[i + _COT] += 1
            state.window_cot += 1
            if _is_harvest_shaped(call):
                counts[i + _SHAPED] += 1
                state.window_shaped += 1

    def learn_one(self, state: ReasoningHarvestState, call: ApiCall) -> None:
        if not call.has_prompt:
            return
        ts = call.ts
        cot = 1.0 if call.cot_request else 0.0
        last = state.baseline_ts
        if ts >= last:
            decay = 0.5 ** ((ts - last) / self.baseline_half_life_s)
            state.baseline_requests = state.baseline_requests * decay + 1.0
            state.baseline_cot = state.baseline_cot * decay + cot
            state.baseline_ts = ts
        else:  # a late call weighs what it would have weighed had it come in order
            weight = 0.5 ** ((last - ts) / self.baseline_half_life_s)
            state.baseline_requests += weight
            state.baseline_cot += cot * weight

    def baseline_share(self, state: ReasoningHarvestState) -> float | None:
        """The account's usual share of trace requests, from the calls learnt so far.

        None until `min_cot_requests` requests (decayed) have been learnt. Decay scales
        both counts alike, so the share does not drift while nothing is learnt.
        """
        if state.baseline_requests < self.min_cot_requests:
            return None
        return state.baseline_cot / state.baseline_requests
