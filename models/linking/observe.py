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

The per-call step runs in Rust (`native/`, `ObserverCore`), on the same arrays, with the
same arithmetic and Python's own text of each field where text is hashed, because it was
the largest single cost of a worker's call (bench/PROFILE.md, "Eleventh pass"); the code
it was ported from is the frozen reference in `tests/models/linking/reference.py`, and
`tests/models/linking/test_differential.py` holds the two equal, observations and arrays.
It keeps a memo of the Bloom bits of recent identities, cleared at `_IDENTITIES_MAX`
entries. The layout constants below are the persisted format's, which the Rust core
repeats.
"""

from __future__ import annotations

import sys
from array import array
from typing import TYPE_CHECKING

import msgspec
from distillwatch_native import ObservationRecords, ObserverCore

from models.errors import ConfigurationError
from models.linking.keys import (
    TEMPLATE_BANDS,
)
from models.native import RebuiltCore
from models.records import ApiCall

if TYPE_CHECKING:
    from models.linking.suspicion import LinkingSuspicion


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

# Key ids: crc32 with a per-kind seed for string keys (zlib's, seeds 1 payment, 2 tls,
# 3 netua, 4 identity), arithmetic for the others.
_ONSET_ID = 0x5EED_0001
_SIGNUP_SALT = 0x9E37_79B9
_GOLDEN = 0x9E37_79B1

# Entries of the identity memo: the Bloom bits of the crc32 of
# `f"{payment}|{tls}|{ip}|{asn}|{user_agent}|{created_at}"`, which building the text (a
# float's repr above all) costs more than looking up. Cleared when full.
_IDENTITIES_MAX = 16_384


class LinkObserver(RebuiltCore[ObserverCore]):
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
        self._core = self._new_core()

    def _new_core(self) -> ObserverCore:
        return ObserverCore(self.refresh_s, self._step_q, self.template_calls,
                            self.signup_bucket_s, self.onset_bucket_s, self._blank,
                            LinkObservation, _IDENTITIES_MAX)

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
        return self._core.observe(self._accounts, call, suspicion)

    def observe_many(
        self, calls: list[ApiCall], engine_suspicions: list[float], suspicion: LinkingSuspicion
    ) -> tuple[list[LinkObservation], int, Exception | None]:
        """`observe(call, suspicion.update(call, engine_suspicions[i]))` for each of `calls`
        in order, in one pass in Rust: a worker's drain hands over thousands of calls, and
        two Python calls per call cost more than their arithmetic.

        Stops at the first call that raises. Returns the observations of the calls before
        it, how many those are, and the exception (None when every call was done): the
        caller deals with that call and goes on from the one after it.
        """
        made: list[LinkObservation] = []
        done, error = self.observe_many_into(made, calls, engine_suspicions, suspicion)
        return made, done, error

    def observe_many_into(
        self, out: list[LinkObservation] | ObservationRecords, calls: list[ApiCall],
        engine_suspicions: list[float], suspicion: LinkingSuspicion,
    ) -> tuple[int, Exception | None]:
        """`observe_many`, its observations appended to `out`: as `LinkObservation`s to a
        list, or encoded into the link-observation records of their partitions
        (`ObservationRecords`, as `streams.internal.encode_observations` writes them),
        which is how a worker's drain sends them without making an object of each.
        Returns how many calls were done and the exception of the next one, if any."""
        core, accounts = suspicion.share.native()
        return self._core.observe_many(self._accounts, core, accounts, calls, engine_suspicions,
                                       out)
