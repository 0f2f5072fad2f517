"""One account's state as compact bytes: the snapshot a worker stores, and the form an idle
account takes in a worker's memory.

What a worker keeps of an account is three parts: the engine's `AccountState` (with its
`BehaviourState`), the link observer's array of 30 words and the share suspicion's array
of three floats. Held as Python objects they take about 1.2 KB and 14 objects; packed
here they are one `bytes` of 250-700 (the counters stored sparse), read back in a few
microseconds. So an account without a call for a few minutes (most of a fleet: a few
dozen calls a day) is kept packed, and unpacked at its next call.

Layout, little-endian: a header (`_HEADER`: layout, time of the account's last call),
then either the compact body (`_BODY`, then the arrays it counts) or, for any state the
compact body does not describe (an open episode, an analyst's verdict in force, detectors
other than the production one, a number out of range), the pickled
`(account, link, share)`. Both give back objects equal field for field, floats bit for
bit: packing changes no score.
"""

from __future__ import annotations

import math
import pickle
import struct
from array import array
from itertools import compress
from typing import Any

from models.behaviour import _NO_TEMPLATES, BehaviourState
from models.engine import AccountState

COMPACT, PICKLED = 0, 1
# layout, last call (event time, seconds)
_HEADER = struct.Struct("<Bd")
# episodes opened, landmark, gap mean, gap spread, cohort, sampled epoch, template next,
# then the lengths of counts and how many are not zero, the same for withheld, the lengths
# of templates, topics (bytes), link, share: 0xFFFF for an absent array. The counters are
# stored sparse (the positions of those not zero as bytes, then their values): an account
# uses about 21 of its 47 counters, one seen once about 5.
_BODY = struct.Struct("<qdddqqqHHHHHHHH")
_ABSENT = 0xFFFF
_LINK_CODE, _SHARE_CODE = "I", "d"

State = tuple[AccountState, "array[int] | None", "array[float] | None"]


def pack(account: AccountState, link: array[int] | None, share: array[float] | None) -> bytes:
    """The bytes of one account's state (see the module's layout)."""
    states = account.detector_states
    behaviour = states[0] if len(states) == 1 else None
    if (
        type(behaviour) is BehaviourState
        and account.episode is None
        and account.suppression is None
        and (link is None or link.typecode == _LINK_CODE)
        and (share is None or share.typecode == _SHARE_CODE)
    ):
        try:
            return _pack_compact(account, behaviour, link, share)
        except (struct.error, OverflowError):
            pass  # a number the compact body cannot hold: pickled below
    last_ts = next((s.last_ts for s in states if isinstance(s, BehaviourState)), -math.inf)
    return _HEADER.pack(PICKLED, last_ts) + pickle.dumps(
        (account, link, share), protocol=pickle.HIGHEST_PROTOCOL
    )


def _pack_compact(
    account: AccountState,
    state: BehaviourState,
    link: array[int] | None,
    share: array[float] | None,
) -> bytes:
    topics = state.topics
    topic_bytes = topics.to_bytes((topics.bit_length() + 8) // 8, "little", signed=True)
    withheld, templates = state.withheld, state.templates
    used, counts = _sparse(state.counts)
    used_withheld, withheld_bytes = (0, b"") if withheld is None else _sparse(withheld)
    return b"".join((
        _HEADER.pack(COMPACT, state.last_ts),
        _BODY.pack(
            account.episodes_opened, state.landmark, state.gap_mean, state.gap_dev,
            state.cohort, state.sampled_epoch, state.template_next,
            len(state.counts), used, _ABSENT if withheld is None else len(withheld),
            used_withheld, len(templates), len(topic_bytes),
            _ABSENT if link is None else len(link), _ABSENT if share is None else len(share),
        ),
        counts,
        withheld_bytes,
        templates.tobytes(),
        topic_bytes,
        b"" if link is None else link.tobytes(),
        b"" if share is None else share.tobytes(),
    ))


def last_call_ts(value: bytes | memoryview, offset: int = 0) -> float:
    """Event time of the last call of the account packed at `offset` of `value` (-inf if
    it has none on record)."""
    return _HEADER.unpack_from(value, offset)[1]  # type: ignore[no-any-return]


def unpack(value: bytes | memoryview) -> State:
    """The state `pack` was given. Raises ValueError on bytes it did not make."""
    if len(value) < _HEADER.size:
        raise ValueError(f"packed account state of {len(value)} bytes is truncated")
    layout, last_ts = _HEADER.unpack_from(value)
    if layout == PICKLED:
        state: State = pickle.loads(value[_HEADER.size:])
        return state
    if layout != COMPACT:
        raise ValueError(f"unknown packed account layout {layout}")
    (episodes_opened, landmark, gap_mean, gap_dev, cohort, sampled_epoch, template_next,
     n_counts, used, n_withheld, used_withheld, n_templates, n_topics, n_link,
     n_share) = _BODY.unpack_from(value, _HEADER.size)
    view = memoryview(value)
    at = _HEADER.size + _BODY.size
    counts, at = _dense(view, at, n_counts, used)
    withheld, at = _dense(view, at, n_withheld, used_withheld)
    templates, at = _array("Q", view, at, n_templates)
    topics = int.from_bytes(view[at:at + n_topics], "little", signed=True)
    at += n_topics
    link, at = _array(_LINK_CODE, view, at, n_link)
    share, at = _array(_SHARE_CODE, view, at, n_share)
    if at != len(value) or counts is None:
        raise ValueError(f"packed account state of {len(value)} bytes, layout says {at}")
    behaviour = BehaviourState(
        counts, landmark, withheld, templates if n_templates else _NO_TEMPLATES,
        template_next, topics, last_ts, gap_mean, gap_dev, cohort, sampled_epoch,
    )
    return AccountState((behaviour,), None, episodes_opened, None), link, share


def _sparse(values: array[float]) -> tuple[int, bytes]:
    """How many of `values` (float32) are not +0.0, and their positions then their bits."""
    if len(values) > 255:
        raise OverflowError("too many counters for one-byte positions")
    words = array("I", values.tobytes())
    used = bytes(compress(range(len(words)), words))
    return len(used), used + array("I", compress(words, words)).tobytes()


def _dense(view: memoryview, at: int, count: int, used: int) -> tuple[Any, int]:
    """The float32 array `_sparse` stored at `at`, and where what follows it starts."""
    if count == _ABSENT:
        return None, at
    words = array("I", bytes(4 * count))
    bits = array("I")
    end = at + used * 5
    bits.frombytes(view[at + used:end])
    try:
        for i, word in zip(view[at:at + used], bits):  # noqa: B905 - the end is checked last
            words[i] = word
    except IndexError:
        raise ValueError(f"a counter position past the {count} counters") from None
    return array("f", words.tobytes()), end


def _array(code: str, view: memoryview, at: int, count: int) -> tuple[Any, int]:
    if count == _ABSENT:
        return None, at
    items = array(code)
    end = at + count * items.itemsize
    items.frombytes(view[at:end])
    return items, end
