"""`api-calls` records straight to `ApiCall`s with msgspec, keeping pydantic's verdicts.

`decode_calls(value)` returns exactly what `decode_api_calls(value)` returns with each
event flattened by `ApiCall.from_event`, at a fraction of the cost: msgspec Structs that
mirror `schemas.event` read the events msgspec and pydantic provably agree on, and
everything else (every rejection, and anything msgspec reads more loosely than pydantic)
goes through `decode_api_calls`, so the reasons in the dead-letter topic stay pydantic's.

Where msgspec is looser than pydantic, and what this module does about it:

- The two patterns of `schemas.event` (`simhash`, `country`) are not msgspec patterns
  (msgspec runs `re` on each string: nearly half the cost of reading an event) but exact
  string checks in `_to_call`; a string they refuse goes to pydantic.
- Timestamps are read as strings and parsed by `schemas.fields.parse_rfc3339`, the very
  function pydantic's validator calls; a string it refuses goes to pydantic. The memos
  that spare most of that parsing (`_ts_seconds`, `_created_at_seconds`) give the same
  floats, bit for bit, and hold only what `parse_rfc3339` accepted.
- Values of unknown fields are skipped by msgspec without the checks pydantic's JSON
  parser makes: UTF-8, nesting (at most 200 levels) and integers' length (at most 4,300
  digits). Events are first read with unknown fields refused; one that has them is read
  with them ignored only if `_unknown_fields_are_safe` says none of these can matter.
- Whatever msgspec refuses (a wrong type, `1e400`, `1.0` or `true` for an int, a lone
  surrogate, an integer past msgspec's range) goes to pydantic, right or wrong.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from string import ascii_uppercase
from typing import Annotated, TypeVar

import msgspec
from msgspec import Meta, Struct

from models.records import ApiCall
from schemas.decode import (
    _ARRAY_START,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    Rejection,
    _batch_elements,
    _compact,
    _validate_json,
    decode_api_calls,
)
from schemas.event import ApiCallEvent
from schemas.fields import parse_rfc3339

Id = Annotated[str, Meta(min_length=1, max_length=128)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
SimHash = str  # ^[0-9a-fA-F]{16}$, checked by _to_call
CountryCode = str  # ^[A-Z]{2}$, checked by _to_call

# What the two patterns admit, as `_to_call` checks it: a simhash is 16 characters, each
# in _HEX_DIGITS (strip() leaves nothing); a country code is one of _COUNTRY_CODES.
_HEX_DIGITS = "0123456789abcdefABCDEF"
_COUNTRY_CODES = frozenset(a + b for a in ascii_uppercase for b in ascii_uppercase)

# Bounds under which a skipped value cannot trip pydantic's parser limits (200 levels of
# nesting, 4,300-digit integers), with a wide margin: a document with fewer brackets than
# this is less deep, one with fewer digits has no longer number.
_MAX_SKIPPABLE_BRACKETS = 100
_MAX_SKIPPABLE_DIGITS = 1_000
_DIGITS = b"0123456789"

# What msgspec raises on bytes it will not read: malformed JSON or a failed constraint
# (MsgspecError), invalid UTF-8 in a string (UnicodeDecodeError), deep nesting.
_REFUSED = (msgspec.MsgspecError, ValueError, RecursionError)


# Structs mirroring schemas.event. gc=False: they hold no cycles and live for one record.

class _Request(Struct, frozen=True, gc=False):
    model: str
    endpoint: str | None = None
    temperature: Annotated[float, Meta(ge=0)] | None = None
    max_tokens: NonNegativeInt | None = None
    n: Annotated[int, Meta(ge=1)] = 1
    logprobs: bool = False
    stream: bool = False
    tool_count: NonNegativeInt = 0
    turn: Annotated[int, Meta(ge=1)] = 1


class _Response(Struct, frozen=True, gc=False):
    status: Annotated[int, Meta(ge=100, le=599)]
    input_tokens: NonNegativeInt
    output_tokens: NonNegativeInt
    latency_ms: NonNegativeInt | None = None
    stop_reason: str | None = None


class _Prompt(Struct, frozen=True, gc=False):
    simhash: SimHash | None = None
    chars: NonNegativeInt | None = None
    topic: str | None = None
    cot_request: bool = False
    jailbreak_score: Annotated[float, Meta(ge=0, le=1)] | None = None
    sysprompt_probe: bool = False


class _Client(Struct, frozen=True, gc=False):
    ip: str | None = None
    asn: int | None = None
    country: CountryCode | None = None
    user_agent: str | None = None
    tls_fingerprint: str | None = None


class _Account(Struct, frozen=True, gc=False):
    created_at: str | None = None  # RFC 3339, parsed by parse_rfc3339
    payment_fingerprint: str | None = None


class _Event(Struct, frozen=True, gc=False):
    """The event with unknown fields ignored, as `ApiCallEvent` does."""

    schema_version: Annotated[int, Meta(ge=1, le=1)]
    event_id: Id
    ts: str  # RFC 3339, parsed by parse_rfc3339
    tenant_id: Id
    account_id: Id
    request: _Request
    response: _Response
    prompt: _Prompt | None = None
    client: _Client | None = None
    account: _Account | None = None


# The same Structs refusing unknown fields: msgspec then reads every byte it accepts.

class _ClosedRequest(_Request, frozen=True, gc=False, forbid_unknown_fields=True):
    pass


class _ClosedResponse(_Response, frozen=True, gc=False, forbid_unknown_fields=True):
    pass


class _ClosedPrompt(_Prompt, frozen=True, gc=False, forbid_unknown_fields=True):
    pass


class _ClosedClient(_Client, frozen=True, gc=False, forbid_unknown_fields=True):
    pass


class _ClosedAccount(_Account, frozen=True, gc=False, forbid_unknown_fields=True):
    pass


class _ClosedEvent(_Event, frozen=True, gc=False, forbid_unknown_fields=True):
    """The event with every group closed to unknown fields."""

    request: _ClosedRequest
    response: _ClosedResponse
    prompt: _ClosedPrompt | None = None
    client: _ClosedClient | None = None
    account: _ClosedAccount | None = None


_read_open_event = msgspec.json.Decoder(_Event).decode
_read_closed_event = msgspec.json.Decoder(_ClosedEvent).decode
_read_closed_batch = msgspec.json.Decoder(list[_ClosedEvent]).decode


def _seconds(text: str) -> float:
    """Seconds since the Unix epoch that an RFC 3339 string names; ValueError if it is not one."""
    return parse_rfc3339(text).timestamp()


# Timestamps, memoised. Event times cluster (a record's events lie within seconds), and an
# account's creation time comes with each of its calls. Each memo is cleared when full, so a
# worker's memory stays bounded whatever the traffic: about 8 MiB for creation times, under
# 1 MiB for event times.

_Value = TypeVar("_Value")

_TS_MEMO_ENTRIES = 4_096  # over an hour of event time by the second
_CREATED_AT_MEMO_ENTRIES = 65_536  # accounts

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Date, separator and time to the second: a fixed width in schemas.fields._RFC3339.
_WHOLE_SECOND = len("2026-11-26T18:00:00")
# Microseconds per unit of the last digit of a fraction 1-6 digits long.
_FRACTION_SCALE = (0, 100_000, 10_000, 1_000, 100, 10, 1)

# "2026-11-26T18:00:00" -> microseconds since the epoch of that second in UTC; only the first
# 19 characters of strings parse_rfc3339 accepted with a Z-suffix (see `_fraction_us`).
_whole_second_us_memo: dict[str, int] = {}
_fraction_us_memo: dict[str, int] = {}  # Z-suffix (".123Z") -> microseconds (123000)
_created_at_memo: dict[str, float] = {}  # what parse_rfc3339 accepted -> `_seconds`


def _remember(memo: dict[str, _Value], entries: int, key: str, value: _Value) -> None:
    if len(memo) >= entries:
        memo.clear()
    memo[key] = value


def _fraction_us(suffix: str) -> int | None:
    """The microseconds in a Z-suffix: `Z`, `z`, or `.`, ASCII digits and `Z` or `z` (digits
    past the sixth dropped, as `datetime.fromisoformat` drops them); None for anything else."""
    if suffix == "Z" or suffix == "z":
        return 0
    digits = suffix[1:-1]
    if suffix[:1] == "." and suffix[-1:] in ("Z", "z") and digits.isascii() and digits.isdigit():
        digits = digits[:6]
        return int(digits) * _FRACTION_SCALE[len(digits)]
    return None


def _ts_seconds(text: str) -> float:
    """`_seconds(text)`, bit for bit, ValueError where it raises; a few dict look-ups for a
    UTC time (Z-suffix) whose whole second an earlier string named.

    Such a string parses: its date and time are a memoised string's, which parse_rfc3339
    accepted, and any Z-suffix may follow them. The float is the one `datetime.timestamp()`
    makes, which for an aware datetime is whole microseconds since the epoch divided by
    10**6 as integers (`timedelta.total_seconds`, correctly rounded), as here.
    """
    whole_second_us = _whole_second_us_memo.get(text[:_WHOLE_SECOND])
    if whole_second_us is not None:
        suffix = text[_WHOLE_SECOND:]
        fraction_us = _fraction_us_memo.get(suffix)
        if fraction_us is None:
            fraction_us = _fraction_us(suffix)
            if fraction_us is not None:
                _remember(_fraction_us_memo, _TS_MEMO_ENTRIES, suffix, fraction_us)
        if fraction_us is not None:
            return (whole_second_us + fraction_us) / 1_000_000
    return _ts_seconds_parsed(text)


def _ts_seconds_parsed(text: str) -> float:
    """`_seconds(text)`, memoising the whole second of a UTC time for `_ts_seconds`."""
    when = parse_rfc3339(text)
    if _fraction_us(text[_WHOLE_SECOND:]) is not None:  # then `when` is in UTC
        whole_second_us = (when - _EPOCH) // _MICROSECOND - when.microsecond
        _remember(_whole_second_us_memo, _TS_MEMO_ENTRIES, text[:_WHOLE_SECOND], whole_second_us)
    return when.timestamp()


def _created_at_seconds(text: str) -> float:
    """`_seconds(text)`, memoised by the whole string; a refused string raises every time."""
    seconds = _created_at_memo.get(text)
    if seconds is None:
        # Not _ts_seconds: creation times, one per account, would churn its memo.
        seconds = _seconds(text)
        _remember(_created_at_memo, _CREATED_AT_MEMO_ENTRIES, text, seconds)
    return seconds


def _to_call(event: _Event) -> ApiCall:
    """`ApiCall.from_event(event, _seconds)`, field for field; ValueError if a timestamp is
    not RFC 3339 or `simhash` or `country` does not match its pattern.

    Built with positional arguments, in `ApiCall`'s field order (keywords cost about a
    microsecond more per call), and one branch per optional group.
    """
    request, response = event.request, event.response
    prompt, client, account = event.prompt, event.client, event.account
    if prompt is None:
        has_prompt, simhash, topic, cot_request, jailbreak_score, sysprompt_probe = (
            False, None, None, False, None, False)
    else:
        has_prompt, simhash_hex, simhash = True, prompt.simhash, None
        if simhash_hex is not None:
            # int() alone would also take "0x", "_", a sign and spaces.
            if len(simhash_hex) != 16 or simhash_hex.strip(_HEX_DIGITS):
                raise ValueError(f"simhash is not 16 hex digits: {simhash_hex!r:.24}")
            simhash = int(simhash_hex, 16)
        topic, cot_request = prompt.topic, prompt.cot_request
        jailbreak_score, sysprompt_probe = prompt.jailbreak_score, prompt.sysprompt_probe
    if client is None:
        has_client, ip, asn, user_agent, tls_fingerprint = False, None, None, None, None
    else:
        if client.country is not None and client.country not in _COUNTRY_CODES:
            raise ValueError(f"country is not two letters A-Z: {client.country!r:.16}")
        has_client, ip, asn = True, client.ip, client.asn
        user_agent, tls_fingerprint = client.user_agent, client.tls_fingerprint
    if account is None:
        created_at, payment_fingerprint = None, None
    else:
        # `is not None`, not truthiness: "" is no timestamp, and the schema says so.
        created_at = (
            _created_at_seconds(account.created_at) if account.created_at is not None else None)
        payment_fingerprint = account.payment_fingerprint
    return ApiCall(
        event.event_id, _ts_seconds(event.ts), event.tenant_id, event.account_id,
        request.model, response.status, response.input_tokens, response.output_tokens,
        request.endpoint, request.max_tokens, request.n, request.logprobs, request.tool_count,
        request.turn, response.stop_reason,
        has_prompt, simhash, topic, cot_request, jailbreak_score, sysprompt_probe,
        has_client, ip, asn, user_agent, tls_fingerprint,
        created_at, payment_fingerprint,
    )


def _unknown_fields_are_safe(doc: bytes) -> bool:
    """Whether pydantic's parser accepts whatever msgspec skips in `doc`: it is UTF-8, and
    too few brackets and digits for pydantic's nesting and integer-length limits."""
    if not doc.isascii():
        try:
            doc.decode("utf-8")
        except UnicodeDecodeError:
            return False
    if doc.count(b"[") + doc.count(b"{") > _MAX_SKIPPABLE_BRACKETS:
        return False
    digits = len(doc) - len(doc.translate(None, _DIGITS))
    return digits <= _MAX_SKIPPABLE_DIGITS


def _fast_call(doc: bytes) -> ApiCall | None:
    """The call in one event's JSON if msgspec reads it as pydantic would, else None."""
    try:
        event: _Event = _read_closed_event(doc)
    except _REFUSED:
        if not _unknown_fields_are_safe(doc):
            return None
        try:
            event = _read_open_event(doc)
        except _REFUSED:
            return None
    try:
        return _to_call(event)
    except ValueError:
        return None


def _by_pydantic(value: bytes | None) -> tuple[list[ApiCall], list[Rejection]]:
    events, rejections = decode_api_calls(value)
    return [ApiCall.from_event(e) for e in events], rejections


def _by_element(value: bytes) -> tuple[list[ApiCall], list[Rejection]]:
    """A batch read element by element, as `decode_api_calls` does once the whole fails."""
    try:
        elements = _batch_elements(value)
    except (msgspec.MsgspecError, RecursionError):
        return _by_pydantic(value)  # not a batch: pydantic names the fault
    if len(elements) > MAX_BATCH_EVENTS:
        return _by_pydantic(value)
    calls: list[ApiCall] = []
    rejections: list[Rejection] = []
    for i, element in enumerate(elements):
        doc = bytes(element)
        call = _fast_call(doc)
        if call is not None:
            calls.append(call)
            continue
        result = _validate_json(ApiCallEvent, doc, i)
        if isinstance(result, Rejection):
            rejections.append(dataclasses.replace(result, raw=_compact(result.raw)))
        else:
            calls.append(ApiCall.from_event(result))
    return calls, rejections


def decode_calls(value: bytes | None) -> tuple[list[ApiCall], list[Rejection]]:
    """Decode one `api-calls` record (a JSON event or a JSON array of up to 10,000) to calls.

    Returns what `decode_api_calls(value)` returns, each event flattened to an `ApiCall`
    (event times in seconds since the Unix epoch): the valid calls in record order, and a
    rejection, with pydantic's reason, for the record or for each invalid batch element.

    >>> calls, rejections = decode_calls(b'{"schema_version": 1, "event_id": "e1", '
    ...     b'"ts": "2026-11-26T18:00:00Z", "tenant_id": "org_1", "account_id": "key_1", '
    ...     b'"request": {"model": "m"}, '
    ...     b'"response": {"status": 200, "input_tokens": 10, "output_tokens": 20}}')
    >>> calls[0].ts, calls[0].output_tokens, rejections
    (1795716000.0, 20, [])
    >>> decode_calls(b'[5]')[1][0].reason
    'expected a JSON object, got number'
    """
    if not value or len(value) > MAX_MESSAGE_BYTES:
        return _by_pydantic(value)
    if _ARRAY_START.match(value) is None:
        call = _fast_call(value) if len(value) <= MAX_EVENT_BYTES else None
        return ([call], []) if call is not None else _by_pydantic(value)
    try:
        events = _read_closed_batch(value)
        if len(events) <= MAX_BATCH_EVENTS:
            return [_to_call(e) for e in events], []
    except _REFUSED:
        pass  # Some element is bad, has unknown fields, or the whole value is not a batch.
    return _by_element(value)

