"""Stage 1 of campaign linking, partitioned by account: which link keys an account shows.

`LinkObserver` runs where the account's state lives (the stream keyed by account). For
every call it decides whether anything is *new* about the account's links and emits a
`LinkObservation` per new item, so the stream towards the evidence stage (repartitioned
by link key) carries a small fraction of the call volume:

- a link key the account has not reported since its last refresh;
- every key again after its suspicion moved by `suspicion_step` or more since it was
  last reported, or after `refresh_s` seconds of event time (a refresh keeps decaying
  state downstream alive and tells it the account's current suspicion). The refresh is
  lazy: the registry of reported keys is cleared and each key is reported again the next
  time a call shows it, so keys the account stopped using decay downstream;
- prompt templates: the band-pair keys of the account's first `template_calls` calls
  and of its first `template_calls` calls after each refresh (so a swarm key sending
  one request an hour is linked by its prompts), and otherwise only pairs whose two
  bands both occurred in the account's previous two calls (a template, not a one-off
  prompt: every one-off prompt would flood the evidence stage).

Per-account state is one `array("I")` of 30 unsigned 32-bit words, 200 bytes: a header,
the template bands of the last two calls, and the registry of reported keys as a
544-bit Bloom filter (two bits per key). A false positive (about 1% with 30 keys) only
delays a key's report to the next refresh.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from dataclasses import dataclass

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
from models.records import ApiCall


@dataclass(frozen=True, slots=True)
class LinkObservation:
    """Account `account_id` of `tenant_id` showed link key `(kind, key)` at event time `ts`.

    `suspicion` is the account's behavioural suspicion in [0, 1] at that call and
    `first_seen` the event time the observer first saw the account (seconds since the
    epoch, whole seconds). Plain fields only: `msgspec.json.encode` and
    `msgspec.json.decode(..., type=LinkObservation)` round-trip it.
    """

    kind: str
    key: str
    tenant_id: str
    account_id: str
    ts: float
    suspicion: float
    first_seen: float

    @property
    def hub(self) -> str:
        """`f"{kind}:{key}"`: the partition key of the evidence stage."""
        return f"{self.kind}:{self.key}"


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


class LinkObserver:
    """Turns an account's calls into the few `LinkObservation`s the evidence stage needs.

    Calls of one account must come in event-time order (the account's partition order);
    accounts are independent, so any split of accounts across workers gives the same
    observations per account. Configuration:

    - `refresh_s`: seconds of event time after which every key is reported again;
    - `suspicion_step`: a change of suspicion that re-reports every key (0.1: about ten
      levels from calm to certain);
    - `template_calls`: calls after the first and after each refresh whose template keys
      are reported even if not repeated;
    - `signup_bucket_s`, `onset_bucket_s`: bucket lengths of the `signup` and `onset` keys.

    >>> observer = LinkObserver()
    >>> call = ApiCall(event_id="e1", ts=1_800_000_000.0, tenant_id="org_1",
    ...                account_id="key_1", model="frontier-large", status=200,
    ...                input_tokens=300, output_tokens=4096, payment_fingerprint="pf_1")
    >>> [(o.kind, o.key) for o in observer.observe(call, 0.5)]
    [('onset', '3000000'), ('payment', 'pf_1')]
    >>> observer.observe(call, 0.52)  # nothing new
    []
    """

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
