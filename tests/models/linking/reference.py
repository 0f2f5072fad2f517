"""The link observer's and the share suspicion's hot paths as they were before they were
tuned (commit 8b7ee00, verbatim), on top of today's classes for everything else.

The differential tests (`test_differential.py`) and the micro-benchmark
(`python -m bench.observe`) run them side by side with `models.linking`: same calls in,
the same observations and the same per-account state arrays must come out. Do not
"improve" `observe`, `update`, `is_extraction_shaped` or `_template_plan` here; they
are the specification the tuned code (now the Rust of `native/`) is checked against.
`is_extraction_shaped` lived in `models/linking/suspicion.py` until `update` moved to
Rust (after c790048).
"""

from __future__ import annotations

import math
import zlib
from array import array

from models.linking.keys import (
    BAND_BITS,
    BAND_MASK,
    BAND_PAIRS,
    TEMPLATE_BANDS,
    bucket,
    netua_key,
    onset_key,
    template_key,
)
from models.linking.observe import (
    _BLOOM,
    _BLOOM_BITS,
    _CALLS,
    _FIRST_SEEN,
    _GOLDEN,
    _ONSET_ID,
    _REFRESHED,
    _RING,
    _RING_NEXT,
    _RING_SLOTS,
    _SIGNUP_SALT,
    _SLOTS,
    _SUSPICION,
    LinkObservation,
    LinkObserver,
)
from models.linking.suspicion import (
    ExtractionShareSuspicion,
    LinkingSuspicion,
)
from models.records import ApiCall


def _crc(seed: int, text: str) -> int:
    return zlib.crc32(text.encode(), seed)


# (bands, ring values, per band pair: first, second, key id, and the key id's two Bloom
# bits as (word, mask)) of recent SimHashes: a template repeats across an account's calls,
# and computing this was most of the observer's time per call.
_TemplatePlan = tuple[list[int], "array[int]", tuple[tuple[int, int, int, int, int, int, int], ...]]
_REFERENCE_PLANS: dict[int, _TemplatePlan] = {}
_REFERENCE_PLANS_MAX = 65_536


def _template_plan(simhash: int) -> _TemplatePlan:
    plan = _REFERENCE_PLANS.get(simhash)
    if plan is not None:
        return plan
    bands = [(simhash >> (BAND_BITS * band)) & BAND_MASK for band in range(TEMPLATE_BANDS)]
    tagged = array("I", [(band << BAND_BITS | bits) + 1 for band, bits in enumerate(bands)])
    pairs = []
    for first, second in BAND_PAIRS:
        ident = ((bands[first] << 16) | bands[second]) * _GOLDEN + first * 4 + second
        ident &= 0xFFFF_FFFF
        low = ident % _BLOOM_BITS
        high = (ident >> 11) % _BLOOM_BITS
        pairs.append((first, second, ident, _BLOOM + (low >> 5), 1 << (low & 31),
                      _BLOOM + (high >> 5), 1 << (high & 31)))
    if len(_REFERENCE_PLANS) >= _REFERENCE_PLANS_MAX:
        _REFERENCE_PLANS.clear()
    plan = _REFERENCE_PLANS[simhash] = (bands, tagged, tuple(pairs))
    return plan


def _seen(state: array[int], ident: int) -> bool:
    low = ident % _BLOOM_BITS
    high = (ident >> 11) % _BLOOM_BITS
    return bool(
        state[_BLOOM + (low >> 5)] & (1 << (low & 31))
        and state[_BLOOM + (high >> 5)] & (1 << (high & 31))
    )


def _remember(state: array[int], ident: int) -> None:
    low = ident % _BLOOM_BITS
    high = (ident >> 11) % _BLOOM_BITS
    state[_BLOOM + (low >> 5)] |= 1 << (low & 31)
    state[_BLOOM + (high >> 5)] |= 1 << (high & 31)


class ReferenceLinkObserver(LinkObserver):
    """`LinkObserver` with `observe` as it was before its hot path was tuned."""

    def observe(self, call: ApiCall, suspicion: float) -> list[LinkObservation]:
        """The observations `call` causes, given the account's `suspicion` in [0, 1]."""
        account_id = call.account_id
        ts = call.ts
        whole = int(ts)
        quantised = min(1000, max(0, round(suspicion * 1000)))
        state = self._accounts.get(account_id)
        if state is None:
            state = self._blank[:]
            state[_FIRST_SEEN] = whole
            state[_REFRESHED] = whole
            state[_SUSPICION] = quantised
            self._accounts[account_id] = state
        elif (
            whole - state[_REFRESHED] >= self.refresh_s
            or abs(quantised - state[_SUSPICION]) >= self._step_q
        ):
            state[_BLOOM:_SLOTS] = self._blank[_BLOOM:_SLOTS]
            state[_REFRESHED] = whole
            state[_SUSPICION] = quantised
            state[_CALLS] = 0
        calls = state[_CALLS]
        if calls < 0xFFFF:
            state[_CALLS] = calls + 1
        reported = quantised / 1000.0
        first_seen = float(state[_FIRST_SEEN])
        tenant_id = call.tenant_id
        out: list[LinkObservation] = []

        def report(ident: int, kind: str, key: str) -> None:
            _remember(state, ident)
            out.append(LinkObservation(kind, key, tenant_id, account_id, ts, reported, first_seen))

        # One id for everything but the prompt: when the account shows the same identity
        # as in a call since the last refresh, none of these keys can be new.
        payment, tls = call.payment_fingerprint, call.tls_fingerprint
        ip, asn, user_agent = call.ip, call.asn, call.user_agent
        created_at = call.created_at
        identity = _crc(4, f"{payment}|{tls}|{ip}|{asn}|{user_agent}|{created_at}")
        if not _seen(state, identity):
            _remember(state, identity)
            if not _seen(state, _ONSET_ID):
                kind, key = onset_key(first_seen, self.onset_bucket_s)
                report(_ONSET_ID, kind, key)
            if payment:
                ident = _crc(1, payment)
                if not _seen(state, ident):
                    report(ident, "payment", payment)
            if tls:
                ident = _crc(2, tls)
                if not _seen(state, ident):
                    report(ident, "tls", tls)
            if ip and asn is not None and user_agent:
                key = netua_key(ip, asn, user_agent)
                ident = _crc(3, key)
                if not _seen(state, ident):
                    report(ident, "netua", key)
            if created_at is not None:
                signup = bucket(created_at, self.signup_bucket_s)
                ident = (signup * _GOLDEN + _SIGNUP_SALT) & 0xFFFF_FFFF
                if not _seen(state, ident):
                    report(ident, "signup", str(signup))
        simhash = call.simhash
        if simhash is not None:
            bands, tagged, pairs = _template_plan(simhash)
            if calls < self.template_calls:
                candidates = pairs
            else:  # only pairs of bands the previous two calls also had
                ring = state[_RING:_BLOOM]
                repeated = [value in ring for value in tagged]
                candidates = tuple(p for p in pairs if repeated[p[0]] and repeated[p[1]])
            for first, second, ident, low_word, low_bit, high_word, high_bit in candidates:
                if not (state[low_word] & low_bit and state[high_word] & high_bit):  # _seen
                    report(ident, "template", template_key(first, second, bands))
            slot = state[_RING_NEXT]
            state[_RING + slot : _RING + slot + TEMPLATE_BANDS] = tagged
            state[_RING_NEXT] = (slot + TEMPLATE_BANDS) % _RING_SLOTS
        return out


def is_extraction_shaped(call: ApiCall) -> bool:
    """A request shaped like dataset generation or model probing rather than use."""
    if call.n > 1 or call.logprobs or call.sysprompt_probe:
        return True
    if call.jailbreak_score is not None and call.jailbreak_score >= 0.7:
        return True
    return (
        call.cot_request
        and call.turn == 1
        and call.tool_count == 0
        and (call.stop_reason == "max_tokens" or call.output_tokens > call.input_tokens)
    )


class ReferenceShareSuspicion(ExtractionShareSuspicion):
    """`ExtractionShareSuspicion` with `update` as it was before its hot path was tuned."""

    def update(self, call: ApiCall) -> float:
        """Count `call` into its account and return the account's suspicion after it."""
        state = self._accounts.get(call.account_id)
        if state is None:
            state = array("d", (0.0, 0.0, call.ts))
            self._accounts[call.account_id] = state
        elif call.ts > state[2]:
            keep = math.exp(-self._decay_per_s * (call.ts - state[2]))
            state[0] *= keep
            state[1] *= keep
            state[2] = call.ts
        if is_extraction_shaped(call):
            state[0] += 1.0
        state[1] += 1.0
        weight = self.prior_weight
        return (state[0] + self.prior * weight) / (state[1] + weight)


class ReferenceLinkingSuspicion(LinkingSuspicion):
    """`LinkingSuspicion` counting shares the way `ReferenceShareSuspicion` does."""

    def __init__(self, share: ReferenceShareSuspicion | None = None) -> None:
        super().__init__(ReferenceShareSuspicion() if share is None else share)
