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

Two bounded memos are shared by the observers of a process, functions of a call's fields
that hold no account state: the Bloom bits of recent identities (at most about 5 MB)
and the band-pair plans of recent prompt templates (at most about 70 MB).
"""

from __future__ import annotations

import sys
import zlib
from array import array

import msgspec

from models.errors import ConfigurationError
from models.linking.keys import (
    BAND_BITS,
    BAND_MASK,
    BAND_PAIRS,
    TEMPLATE_BANDS,
    bucket,
    netua_key,
    onset_key,
    template_bands,
    template_key,
)
from models.records import ApiCall


class LinkObservation(msgspec.Struct, frozen=True, gc=False):
    """Account `account_id` of `tenant_id` showed link key `(kind, key)` at event time `ts`.

    `suspicion` is the account's behavioural suspicion in [0, 1] at that call and
    `first_seen` the event time the observer first saw the account (seconds since the
    epoch, whole seconds). Plain fields only: `msgspec.json.encode` and
    `msgspec.json.decode(..., type=LinkObservation)` round-trip it, and msgpack encodes it
    as a map of its fields. A msgspec struct, built and decoded in C, because a new
    account reports six to eleven keys (bench/PROFILE.md, "Ninth pass"); `gc=False`: it
    holds only strings and floats.
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

# A key id's two Bloom bits, as (word index in the state array, mask) twice.
_BloomBits = tuple[int, int, int, int]


def _bloom_bits(ident: int) -> _BloomBits:
    low = ident % _BLOOM_BITS
    high = (ident >> 11) % _BLOOM_BITS
    return _BLOOM + (low >> 5), 1 << (low & 31), _BLOOM + (high >> 5), 1 << (high & 31)


_EMPTY_BLOOM = array("I", [0]) * _BLOOM_WORDS


def _crc(seed: int, text: str) -> int:
    return zlib.crc32(text.encode(), seed)


def _newly_remembered(state: array[int], ident: int) -> bool:
    """Put `ident` in the account's registry; whether it was (probably) not there yet."""
    low_word, low_bit, high_word, high_bit = _bloom_bits(ident)
    if state[low_word] & low_bit and state[high_word] & high_bit:
        return False
    state[low_word] |= low_bit
    state[high_word] |= high_bit
    return True


# Of recent identities: the Bloom bits of the identity id, the crc32 of
# `f"{payment}|{tls}|{ip}|{asn}|{user_agent}|{created_at}"` (persisted states hold these
# bits). An account shows the same identity call after call, and building that text (a
# float's repr above all) costs more than looking the fields up. Equal keys must give
# equal text, which equal numbers do not (1 == 1.0 == True, 0.0 == -0.0): the key holds
# the classes of the two numeric fields, and an identity with a zero ASN or creation time
# is not memoised. Cleared when full: at most 16,384 entries of about 300 bytes with the
# strings they keep alive (5 MB).
_IdentityKey = tuple[
    str | None, str | None, str | None, int | None, str | None, float | None, type, type
]
_IDENTITIES: dict[_IdentityKey, _BloomBits] = {}
_IDENTITIES_MAX = 16_384


def _identity_bits(key: _IdentityKey) -> _BloomBits:
    payment, tls, ip, asn, user_agent, created_at = key[:6]
    bits = _bloom_bits(_crc(4, f"{payment}|{tls}|{ip}|{asn}|{user_agent}|{created_at}"))
    if created_at != 0 and asn != 0:
        if len(_IDENTITIES) >= _IDENTITIES_MAX:
            _IDENTITIES.clear()
        _IDENTITIES[key] = bits
    return bits


# The ring's two slots (the last two calls) hold band values in band order, and a band
# value carries its band in its high bits (`(band << BAND_BITS | bits) + 1`), so band `b`
# of a call can only equal the ring words `_RING + b` and `_RING + TEMPLATE_BANDS + b`:
# `observe` compares those pairs of words instead of searching the ring, and spells them
# out for four bands and the ring at words 5 to 12.
if TEMPLATE_BANDS != 4 or BAND_BITS != 16 or _RING != 5:  # pragma: no cover
    raise ImportError("LinkObserver.observe expects four 16-bit template bands at word 5")

# Per bit mask of the bands the previous two calls also had: the indexes (into
# `BAND_PAIRS`, in key order) of the pairs whose two bands both repeated.
_REPEATED_PAIRS: tuple[tuple[int, ...], ...] = tuple(
    tuple(
        index
        for index, (first, second) in enumerate(BAND_PAIRS)
        if mask >> first & 1 and mask >> second & 1
    )
    for mask in range(1 << TEMPLATE_BANDS)
)
_ALL_PAIRS = _REPEATED_PAIRS[-1]

# Of recent SimHashes whose band pairs were needed: the four ring values, and per band
# pair its bands and the Bloom bits of its key id (first, second, then as `_BloomBits`).
# A template repeats across an account's calls, and computing this was most of the
# observer's time per call. A prompt whose pairs are not candidates (a one-off prompt,
# most calls) gets no plan: its ring values are cheaper to compute than to look up, and
# it would evict templates.
_Pair = tuple[int, int, int, int, int, int]
_TemplatePlan = tuple[int, int, int, int, tuple[_Pair, ...]]
_PLANS: dict[int, _TemplatePlan] = {}
_PLANS_MAX = 65_536


def _template_plan(simhash: int) -> _TemplatePlan:
    bands = [(simhash >> (BAND_BITS * band)) & BAND_MASK for band in range(TEMPLATE_BANDS)]
    pairs = []
    for first, second in BAND_PAIRS:
        ident = ((bands[first] << 16) | bands[second]) * _GOLDEN + first * 4 + second
        pairs.append((first, second, *_bloom_bits(ident & 0xFFFF_FFFF)))
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    plan = _PLANS[simhash] = (
        bands[0] + 1,
        (1 << BAND_BITS | bands[1]) + 1,
        (2 << BAND_BITS | bands[2]) + 1,
        (3 << BAND_BITS | bands[3]) + 1,
        tuple(pairs),
    )
    return plan


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

    def shrink(self) -> None:
        """Rebuild the per-account table after many accounts left it: a dict keeps the
        table of its largest size (tens of MB at 10^6 accounts) however many remain."""
        self._accounts = dict(self._accounts)

    def observe(self, call: ApiCall, suspicion: float) -> list[LinkObservation]:
        """The observations `call` causes, given the account's `suspicion` in [0, 1]."""
        # Most calls report nothing: for an identity and a template seen since the last
        # refresh this path builds no text, no observation and no Python frame. What is
        # new is collected as (kind, key) and turned into observations at the end.
        whole = int(call.ts)
        quantised = round(suspicion * 1000)
        if quantised < 0:
            quantised = 0
        elif quantised > 1000:
            quantised = 1000
        accounts = self._accounts
        account_id = call.account_id
        state = accounts.get(account_id)
        if state is None:
            state = self._blank[:]
            state[_FIRST_SEEN] = whole
            state[_REFRESHED] = whole
            state[_SUSPICION] = quantised
            accounts[account_id] = state
        elif (
            whole - state[_REFRESHED] >= self.refresh_s
            or abs(quantised - state[_SUSPICION]) >= self._step_q
        ):
            state[_BLOOM:_SLOTS] = _EMPTY_BLOOM
            state[_REFRESHED] = whole
            state[_SUSPICION] = quantised
            state[_CALLS] = 0
        calls = state[_CALLS]
        if calls < 0xFFFF:
            state[_CALLS] = calls + 1
        found: list[tuple[str, str]] | None = None

        # One id for everything but the prompt: when the account shows the same identity
        # as in a call since the last refresh, none of these keys can be new.
        asn, created_at = call.asn, call.created_at
        identity_key = (
            call.payment_fingerprint, call.tls_fingerprint, call.ip, asn, call.user_agent,
            created_at, asn.__class__, created_at.__class__,
        )
        identity = _IDENTITIES.get(identity_key)
        if identity is None:
            identity = _identity_bits(identity_key)
        low_word, low_bit, high_word, high_bit = identity
        if not (state[low_word] & low_bit and state[high_word] & high_bit):  # seen
            state[low_word] |= low_bit  # remember
            state[high_word] |= high_bit
            found = self._new_identity_keys(state, call)

        simhash = call.simhash
        if simhash is not None:
            plan = _PLANS.get(simhash)
            if plan is None:
                value0 = (simhash & BAND_MASK) + 1
                value1 = (1 << BAND_BITS | simhash >> BAND_BITS & BAND_MASK) + 1
                value2 = (2 << BAND_BITS | simhash >> 2 * BAND_BITS & BAND_MASK) + 1
                value3 = (3 << BAND_BITS | simhash >> 3 * BAND_BITS & BAND_MASK) + 1
            else:
                value0, value1, value2, value3, pairs = plan
            if calls < self.template_calls:
                candidates = _ALL_PAIRS
            else:  # only pairs of bands the previous two calls also had (ring words 5..12)
                candidates = _REPEATED_PAIRS[
                    (value0 == state[5] or value0 == state[9])
                    | (value1 == state[6] or value1 == state[10]) << 1
                    | (value2 == state[7] or value2 == state[11]) << 2
                    | (value3 == state[8] or value3 == state[12]) << 3
                ]
            if candidates:
                if plan is None:
                    pairs = _template_plan(simhash)[4]
                bands: list[int] | None = None
                for index in candidates:
                    first, second, low_word, low_bit, high_word, high_bit = pairs[index]
                    if not (state[low_word] & low_bit and state[high_word] & high_bit):  # seen
                        state[low_word] |= low_bit  # remember
                        state[high_word] |= high_bit
                        if bands is None:
                            bands = template_bands(simhash)
                        if found is None:
                            found = []
                        found.append(("template", template_key(first, second, bands)))
            ring = _RING + state[_RING_NEXT]
            state[ring] = value0
            state[ring + 1] = value1
            state[ring + 2] = value2
            state[ring + 3] = value3
            state[_RING_NEXT] = (ring - _RING + TEMPLATE_BANDS) % _RING_SLOTS

        if not found:
            return []
        tenant_id, ts = call.tenant_id, call.ts
        reported = quantised / 1000.0
        first_seen = float(state[_FIRST_SEEN])
        return [
            LinkObservation(kind, key, tenant_id, account_id, ts, reported, first_seen)
            for kind, key in found
        ]

    def _new_identity_keys(self, state: array[int], call: ApiCall) -> list[tuple[str, str]]:
        """The onset key and the keys of `call`'s identity that are not in the account's
        registry, in report order, each remembered as it is found."""
        found: list[tuple[str, str]] = []
        if _newly_remembered(state, _ONSET_ID):
            found.append(onset_key(float(state[_FIRST_SEEN]), self.onset_bucket_s))
        payment, tls = call.payment_fingerprint, call.tls_fingerprint
        ip, asn, user_agent = call.ip, call.asn, call.user_agent
        created_at = call.created_at
        if payment and _newly_remembered(state, _crc(1, payment)):
            found.append(("payment", payment))
        if tls and _newly_remembered(state, _crc(2, tls)):
            found.append(("tls", tls))
        if ip and asn is not None and user_agent:
            key = netua_key(ip, asn, user_agent)
            if _newly_remembered(state, _crc(3, key)):
                found.append(("netua", key))
        if created_at is not None:
            signup = bucket(created_at, self.signup_bucket_s)
            if _newly_remembered(state, (signup * _GOLDEN + _SIGNUP_SALT) & 0xFFFF_FFFF):
                found.append(("signup", str(signup)))
        return found
