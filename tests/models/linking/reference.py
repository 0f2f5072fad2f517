"""Frozen copies of the link observer and the share suspicion as they were before their
hot paths were tuned (the code of commit 8b7ee00, verbatim but for the class names).

The differential tests (`test_differential.py`) and the micro-benchmark
(`python -m bench.observe`) run them side by side with `models.linking`: same calls in,
the same observations and the same per-account state arrays must come out. Do not
"improve" this module; it is the specification the tuned code is checked against.
"""

from __future__ import annotations

import math
import sys
import zlib
from array import array

from models.errors import ConfigurationError
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
from models.linking.observe import LinkObservation
from models.records import ApiCall

# Layout of an account's state array.
_FIRST_SEEN = 0  # whole seconds since the epoch
_REFRESHED = 1  # whole seconds since the epoch of the last refresh (or the first call)
_SUSPICION = 2  # suspicion last reported, in thousandths
_CALLS = 3  # calls since the first call or the last refresh, saturating at 0xFFFF
_RING_NEXT = 4  # next slot of the ring
_RING = 5  # band values + 1 of the last two calls (0: empty)
_RING_SLOTS = 2 * TEMPLATE_BANDS
_BLOOM = _RING + _RING_SLOTS
_BLOOM_WORDS = 17
_BLOOM_BITS = 32 * _BLOOM_WORDS
_SLOTS = _BLOOM + _BLOOM_WORDS  # 30 words

# Key ids: crc32 with a per-kind seed for string keys, arithmetic for the others.
_ONSET_ID = 0x5EED_0001
_SIGNUP_SALT = 0x9E37_79B9
_GOLDEN = 0x9E37_79B1


def _crc(seed: int, text: str) -> int:
    return zlib.crc32(text.encode(), seed)


def _seen(state: array[int], ident: int) -> bool:
    """Whether `ident` is (probably) in the account's registry."""
    low = ident % _BLOOM_BITS
    high = (ident >> 11) % _BLOOM_BITS
    return bool(
        state[_BLOOM + (low >> 5)] & (1 << (low & 31))
        and state[_BLOOM + (high >> 5)] & (1 << (high & 31))
    )


# (bands, ring values, per band pair: first, second, key id, and the key id's two Bloom
# bits as (word, mask)) of recent SimHashes: a template repeats across an account's calls,
# and computing this was most of the observer's time per call.
_TemplatePlan = tuple[list[int], "array[int]", tuple[tuple[int, int, int, int, int, int, int], ...]]
_PLANS: dict[int, _TemplatePlan] = {}
_PLANS_MAX = 65_536


def _template_plan(simhash: int) -> _TemplatePlan:
    plan = _PLANS.get(simhash)
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
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    plan = _PLANS[simhash] = (bands, tagged, tuple(pairs))
    return plan


def _remember(state: array[int], ident: int) -> None:
    low = ident % _BLOOM_BITS
    high = (ident >> 11) % _BLOOM_BITS
    state[_BLOOM + (low >> 5)] |= 1 << (low & 31)
    state[_BLOOM + (high >> 5)] |= 1 << (high & 31)


class ReferenceLinkObserver:
    """`LinkObserver` as it was before its hot path was tuned."""

    def __init__(
        self,
        refresh_s: float = 1800.0,
        suspicion_step: float = 0.1,
        template_calls: int = 2,
        signup_bucket_s: float = 600.0,
        onset_bucket_s: float = 600.0,
    ) -> None:
        if not refresh_s > 0 or not signup_bucket_s > 0 or not onset_bucket_s > 0:
            raise ConfigurationError(
                "refresh_s, signup_bucket_s and onset_bucket_s must be positive, got "
                f"{refresh_s}, {signup_bucket_s}, {onset_bucket_s}"
            )
        if not 0.0 < suspicion_step <= 1.0:
            raise ConfigurationError(f"suspicion_step must be in (0, 1], got {suspicion_step}")
        if template_calls < 0:
            raise ConfigurationError(f"template_calls must be >= 0, got {template_calls}")
        self.refresh_s = refresh_s
        self.suspicion_step = suspicion_step
        self.template_calls = template_calls
        self.signup_bucket_s = signup_bucket_s
        self.onset_bucket_s = onset_bucket_s
        self._step_q = max(1, round(suspicion_step * 1000))
        self._blank = array("I", [0]) * _SLOTS
        self._accounts: dict[str, array[int]] = {}

    def __len__(self) -> int:
        """Accounts with state."""
        return len(self._accounts)

    def expire(self, watermark: float, idle_s: float = 7 * 86400.0) -> int:
        """Forget accounts without a call for at least `idle_s` seconds of event time before
        `watermark`; returns how many. Not output-neutral: an account that comes back is
        new again (a fresh onset, every key reported), which is what a dormant account
        waking up should look like to the evidence stage."""
        cutoff = watermark - idle_s - self.refresh_s  # a call after that would have refreshed
        stale = [key for key, state in self._accounts.items() if state[_REFRESHED] < cutoff]
        for key in stale:
            del self._accounts[key]
        return len(stale)

    def state_bytes(self) -> int:
        """Bytes of one account's state array (the dict entry and its key not included)."""
        return sys.getsizeof(self._blank)

    def export_account(self, account_id: str) -> array[int] | None:
        """The account's state, for a snapshot; None if it has none."""
        return self._accounts.get(account_id)

    def import_account(self, account_id: str, state: array[int]) -> None:
        """Take over an account's state from a snapshot."""
        self._accounts[account_id] = state

    def forget_account(self, account_id: str) -> None:
        """Drop an account's state from memory (its snapshot holds it)."""
        self._accounts.pop(account_id, None)

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


class ReferenceShareSuspicion:
    """`ExtractionShareSuspicion` as it was before its hot path was tuned."""

    def __init__(
        self, half_life_s: float = 6 * 3600.0, prior: float = 0.2, prior_weight: float = 1.0
    ) -> None:
        if not half_life_s > 0:
            raise ConfigurationError(f"half_life_s must be positive, got {half_life_s}")
        if not 0.0 <= prior <= 1.0 or not prior_weight > 0:
            raise ConfigurationError(
                f"need 0 <= prior <= 1 and prior_weight > 0, got {prior}, {prior_weight}"
            )
        self.half_life_s = half_life_s
        self.prior = prior
        self.prior_weight = prior_weight
        self._decay_per_s = math.log(2.0) / half_life_s
        # account_id -> [shaped, calls, last ts]: three doubles, 88 bytes
        self._accounts: dict[str, array[float]] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    def export_account(self, account_id: str) -> array[float] | None:
        """The account's state, for a snapshot; None if it has none."""
        return self._accounts.get(account_id)

    def import_account(self, account_id: str, state: array[float]) -> None:
        """Take over an account's state from a snapshot."""
        self._accounts[account_id] = state

    def forget_account(self, account_id: str) -> None:
        """Drop an account's state from memory (its snapshot holds it)."""
        self._accounts.pop(account_id, None)

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


class ReferenceLinkingSuspicion:
    """`LinkingSuspicion` as it was before its hot path was tuned."""

    def __init__(self, share: ReferenceShareSuspicion | None = None) -> None:
        self.share = ReferenceShareSuspicion() if share is None else share

    def update(self, call: ApiCall, engine_suspicion: float) -> float:
        """Count `call` and return the account's suspicion in [0, 1] for linking."""
        share = self.share.update(call)
        return share if share > engine_suspicion else engine_suspicion
