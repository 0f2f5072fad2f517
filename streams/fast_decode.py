"""`api-calls` records straight to `ApiCall`s with msgspec, keeping pydantic's verdicts.

`decode_calls(value)` returns exactly what `decode_api_calls(value)` returns with each
event flattened by `ApiCall.from_event`, at a fraction of the cost: msgspec Structs that
mirror `schemas.event` read the events msgspec and pydantic provably agree on, and
everything else (every rejection, and anything msgspec reads more loosely than pydantic)
goes through `decode_api_calls`, so the reasons in the dead-letter topic stay pydantic's.

Where msgspec is looser than pydantic, and what this module does about it:

- `$` in a msgspec pattern is Python's, which also matches before a final newline; the
  patterns below end in `\\Z`, as pydantic's Rust `$` does.
- Timestamps are read as strings and parsed by `schemas.fields.parse_rfc3339`, the very
  function pydantic's validator calls; a string it refuses goes to pydantic.
- Values of unknown fields are skipped by msgspec without the checks pydantic's JSON
  parser makes: UTF-8, nesting (at most 200 levels) and integers' length (at most 4,300
  digits). Events are first read with unknown fields refused; one that has them is read
  with them ignored only if `_unknown_fields_are_safe` says none of these can matter.
- Whatever msgspec refuses (a wrong type, `1e400`, `1.0` or `true` for an int, a lone
  surrogate, an integer past msgspec's range) goes to pydantic, right or wrong.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

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
SimHash = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{16}\Z")]
CountryCode = Annotated[str, Meta(pattern=r"^[A-Z]{2}\Z")]

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
    return parse_rfc3339(text).timestamp()


def _to_call(event: _Event) -> ApiCall:
    """Flatten like the pydantic path; ValueError if a timestamp is not RFC 3339."""
    return ApiCall.from_event(event, _seconds)


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

