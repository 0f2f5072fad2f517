"""Decoding records from the input topics: valid events out, rejections with reasons beside them.

Bad records are data, not exceptions: every decoder here returns `(events, rejections)`
and never raises on input bytes, so the caller can dead-letter the rejections and carry
on with the rest.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.deadletter import RejectionKind
from schemas.event import ApiCallEvent
from schemas.feedback import AnalystVerdict

MAX_BATCH_EVENTS = 10_000
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_EVENT_BYTES = 64 * 1024

# Splits a batch into each element's own bytes without building Python objects from them.
_batch_elements = msgspec.json.Decoder(list[msgspec.Raw]).decode
_BATCH = TypeAdapter(list[ApiCallEvent])
_ARRAY_START = re.compile(rb"[ \t\r\n]*\[")
_JSON_TYPE = {"NoneType": "null", "bool": "boolean", "int": "number", "float": "number",
              "str": "string", "list": "array", "dict": "object"}

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Rejection:
    """One record (or one element of a batch) that is not a valid event.

    `raw` is what should be dead-lettered: the original bytes for a whole message, or the
    element re-encoded as compact JSON for one element of a batch (its numbers and strings
    exactly as the producer wrote them).
    """

    kind: RejectionKind
    reason: str
    raw: bytes
    batch_index: int | None = None


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """One line naming each failing field with pydantic's message, at most `limit` of them."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(event)"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _size_rejection(value: bytes | None) -> Rejection | None:
    if value is None or len(value) == 0:
        return Rejection("empty", "empty value: expected a JSON event or a batch", b"")
    if len(value) > MAX_MESSAGE_BYTES:
        return Rejection(
            "too_large", f"value is {len(value):,} bytes, over the {MAX_MESSAGE_BYTES:,} limit",
            value,
        )
    return None


def _unreadable(value: bytes, detail: str, index: int | None = None) -> Rejection:
    """Say whether bytes that failed to parse are not UTF-8 or not JSON."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"value is not UTF-8 (byte {exc.start}: {exc.reason})"
        return Rejection("not_utf8", reason, value, index)
    return Rejection("not_json", f"value is not JSON: {detail}", value, index)


def _validate_json(model: type[M], raw: bytes, index: int | None) -> M | Rejection:
    """Validate one JSON document strictly: a string where a number belongs is an error."""
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            return _unreadable(raw, first["msg"], index)
        if first["type"] == "model_type" and not first["loc"]:
            name = type(first["input"]).__name__
            got = _JSON_TYPE.get(name, name)
            return Rejection("not_an_event", f"expected a JSON object, got {got}", raw, index)
        return Rejection("invalid", describe_validation_error(exc), raw, index)


def _compact(element: bytes) -> bytes:
    """The element without insignificant whitespace, every number and string as written."""
    try:
        return msgspec.json.format(element, indent=-1)
    except (msgspec.MsgspecError, RecursionError):
        return element


def decode_api_calls(value: bytes | None) -> tuple[list[ApiCallEvent], list[Rejection]]:
    """Decode one `api-calls` record: a JSON event, or a JSON array of up to 10,000 events.

    In a batch each element is validated on its own: the valid ones are returned, each
    invalid one becomes a rejection carrying its index in the batch and its own JSON.
    """
    rejection = _size_rejection(value)
    if rejection is not None:
        return [], [rejection]
    assert value is not None
    if _ARRAY_START.match(value) is None:
        if len(value) > MAX_EVENT_BYTES:
            reason = f"single event is {len(value):,} bytes, over the {MAX_EVENT_BYTES:,} limit"
            return [], [Rejection("too_large", reason, value)]
        result = _validate_json(ApiCallEvent, value, None)
        if isinstance(result, Rejection):
            return [], [result]
        return [result], []
    try:
        batch = _BATCH.validate_json(value, strict=True)
        if len(batch) <= MAX_BATCH_EVENTS:
            return batch, []
    except ValidationError:
        pass  # Some element is bad (or the whole value is): sort the good from the bad.
    try:
        elements = _batch_elements(value)
    except msgspec.MsgspecError as exc:
        return [], [_unreadable(value, str(exc))]
    except RecursionError:
        return [], [Rejection("not_json", "value is not JSON: nested too deeply to read", value)]
    if len(elements) > MAX_BATCH_EVENTS:
        reason = f"batch of {len(elements):,} events, over the {MAX_BATCH_EVENTS:,} limit"
        return [], [Rejection("batch_too_large", reason, value)]
    events: list[ApiCallEvent] = []
    rejections: list[Rejection] = []
    for i, element in enumerate(elements):
        result = _validate_json(ApiCallEvent, bytes(element), i)
        if isinstance(result, Rejection):
            rejections.append(dataclasses.replace(result, raw=_compact(result.raw)))
        else:
            events.append(result)
    return events, rejections


def decode_verdict(value: bytes | None) -> AnalystVerdict | Rejection:
    """Decode one `alert-feedback` record."""
    rejection = _size_rejection(value)
    if rejection is not None:
        return rejection
    assert value is not None
    return _validate_json(AnalystVerdict, value, None)


def decode_jsonl_events(lines: Iterable[bytes]) -> Iterable[tuple[int, ApiCallEvent | Rejection]]:
    """Decode a JSON-lines file of events, yielding (line number from 1, event or rejection).

    Blank lines are skipped; a line holding a batch yields each of its elements.
    """
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        events, rejections = decode_api_calls(line)
        for event in events:
            yield lineno, event
        for rej in rejections:
            yield lineno, rej
