"""`decode_api_calls` on whole records: batches, sizes, bytes that are not JSON or not events."""

from __future__ import annotations

import json

import pytest

from schemas import decode_api_calls, decode_verdict
from schemas.decode import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    Rejection,
    decode_jsonl_events,
)
from tests.schemas.documents import Factory, drop_path, encode, set_path


def _only_rejection(value: bytes | None) -> Rejection:
    events, rejections = decode_api_calls(value)
    assert events == []
    (rejection,) = rejections
    return rejection


# Batches ------------------------------------------------------------------------------------

def test_a_batch_of_valid_events_decodes_in_order(minimal_event: Factory) -> None:
    docs = [set_path(minimal_event(), "event_id", f"evt-{i}") for i in range(5)]
    events, rejections = decode_api_calls(encode(docs))
    assert rejections == []
    assert [e.event_id for e in events] == [f"evt-{i}" for i in range(5)]


def test_bad_elements_are_rejected_one_by_one_and_the_rest_kept(
    minimal_event: Factory, full_event: Factory
) -> None:
    batch: list[object] = [
        minimal_event(),
        drop_path(minimal_event(), "response.status"),
        full_event(),
        5,
        "an event",
        None,
        [minimal_event()],
        set_path(minimal_event(), "ts", "2026-11-26T18:00:00"),
        set_path(full_event(), "event_id", "last"),
    ]
    events, rejections = decode_api_calls(encode(batch))
    assert [e.event_id for e in events] == ["evt-1", "01JDX3V5M8Q2W7E9R4T6Y1U3I5", "last"]
    assert [r.batch_index for r in rejections] == [1, 3, 4, 5, 6, 7]
    assert [r.kind for r in rejections] == [
        "invalid", "not_an_event", "not_an_event", "not_an_event", "not_an_event", "invalid"]
    for rejection in rejections:
        assert rejection.batch_index is not None
        assert json.loads(rejection.raw) == batch[rejection.batch_index]
    assert rejections[0].reason == "response.status: Field required"
    assert rejections[1].reason == "expected a JSON object, got number"
    assert rejections[4].reason == "expected a JSON object, got array"
    assert rejections[5].reason.startswith("ts: ")


def test_a_rejected_element_is_its_own_compact_json_with_numbers_as_written(
    minimal_event: Factory,
) -> None:
    value = b'[\n  {"schema_version": 1, "event_id": "a", "request": {"temperature": 1e400}},\n' \
            + encode(minimal_event()) + b"\n]"
    events, (rejection,) = decode_api_calls(value)
    assert len(events) == 1
    assert rejection.batch_index == 0
    assert rejection.raw == (
        b'{"schema_version":1,"event_id":"a","request":{"temperature":1e400}}'
    )


def test_a_batch_of_exactly_the_limit_is_accepted(minimal_event: Factory) -> None:
    events, rejections = decode_api_calls(encode([minimal_event()] * MAX_BATCH_EVENTS))
    assert rejections == [] and len(events) == MAX_BATCH_EVENTS


@pytest.mark.parametrize("bad_element", [False, True])
def test_a_batch_over_the_limit_is_rejected_whole(
    minimal_event: Factory, bad_element: bool
) -> None:
    batch: list[object] = [minimal_event()] * (MAX_BATCH_EVENTS + 1)
    if bad_element:
        batch[7] = 5
    value = encode(batch)
    rejection = _only_rejection(value)
    assert rejection.kind == "batch_too_large"
    assert "10,001" in rejection.reason and "10,000" in rejection.reason
    assert rejection.raw == value and rejection.batch_index is None


@pytest.mark.parametrize("value", [b"[]", b" [ ] ", b"\n[\r\n\t]\n"])
def test_an_empty_batch_is_nothing_and_no_error(value: bytes) -> None:
    assert decode_api_calls(value) == ([], [])


def test_whitespace_before_a_batch_is_allowed_however_long(minimal_event: Factory) -> None:
    events, rejections = decode_api_calls(b" " * 1000 + b"\n" + encode([minimal_event()]))
    assert rejections == [] and len(events) == 1


@pytest.mark.parametrize("nested", [b"[[]]", b"[[[]]]", b"[[1, 2], {}]"])
def test_nested_arrays_are_elements_that_are_not_events(nested: bytes) -> None:
    events, rejections = decode_api_calls(nested)
    assert events == [] and rejections
    assert rejections[0].batch_index == 0 and rejections[0].kind == "not_an_event"


def test_a_malformed_batch_is_rejected_whole(minimal_event: Factory) -> None:
    value = encode([minimal_event(), minimal_event()])[:-1] + b",]"
    rejection = _only_rejection(value)
    assert rejection.kind == "not_json" and rejection.raw == value
    assert rejection.batch_index is None


# Bytes that are not one JSON event ----------------------------------------------------------

@pytest.mark.parametrize("value", [None, b""])
def test_an_empty_value_is_rejected(value: bytes | None) -> None:
    rejection = _only_rejection(value)
    assert rejection.kind == "empty" and rejection.raw == b""
    assert rejection.reason.startswith("empty value")


@pytest.mark.parametrize("value", [
    b"not json", b"{", b"}", b'{"schema_version": 1,}', b"{} {}", b'{"a": 1} trailing',
    b"   ", b"\xef\xbb\xbf{}", b"'single quotes'", b"[1 2]", b"[{}, ",
])
def test_bytes_that_are_not_json_are_rejected_whole(value: bytes) -> None:
    rejection = _only_rejection(value)
    assert rejection.kind == "not_json", rejection
    assert rejection.reason.startswith("value is not JSON")
    assert rejection.raw == value and rejection.batch_index is None


@pytest.mark.parametrize("value", [
    b"\xff", b'{"event_id": "\xe9"}', b"\xc3\x28", b'[{"a": "\xed\xa0\x80"}]', b"\x80[]",
])
def test_bytes_that_are_not_utf8_are_rejected(value: bytes) -> None:
    events, rejections = decode_api_calls(value)
    assert events == []
    assert [r.kind for r in rejections] == ["not_utf8"]
    assert rejections[0].reason.startswith("value is not UTF-8 (byte ")


def test_a_latin1_event_is_not_utf8(full_event: Factory) -> None:
    doc = set_path(full_event(), "client.user_agent", "navigateur-é")
    value = json.dumps(doc, ensure_ascii=False).encode("latin-1")
    assert _only_rejection(value).kind == "not_utf8"


@pytest.mark.parametrize(("value", "got"), [
    (b"5", "number"), (b"-1.5", "number"), (b'"an event"', "string"), (b"null", "null"),
    (b"true", "boolean"), (b"false", "boolean"),
])
def test_json_that_is_not_an_object_is_not_an_event(value: bytes, got: str) -> None:
    rejection = _only_rejection(value)
    assert rejection.kind == "not_an_event"
    assert rejection.reason == f"expected a JSON object, got {got}"
    assert rejection.raw == value and rejection.batch_index is None


@pytest.mark.parametrize("depth", [300, 5_000, 200_000])
def test_deep_nesting_is_rejected_not_raised(depth: int) -> None:
    for value in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        events, rejections = decode_api_calls(value)
        assert events == [] and len(rejections) == 1


def test_a_lone_surrogate_escape_is_rejected(minimal_event: Factory) -> None:
    value = encode(set_path(minimal_event(), "event_id", "X")).replace(b'"X"', b'"\\ud800"')
    assert _only_rejection(value).kind == "not_json"


# Sizes --------------------------------------------------------------------------------------

def _padded(doc: dict[str, object], size: int) -> bytes:
    """The event with `client.user_agent` padded so that it encodes to exactly `size` bytes."""
    set_path(doc, "client.user_agent", "")
    pad = size - len(encode(doc))
    return encode(set_path(doc, "client.user_agent", "u" * pad))


def test_a_single_event_of_exactly_the_limit_is_accepted(minimal_event: Factory) -> None:
    value = _padded(minimal_event(), MAX_EVENT_BYTES)
    assert len(value) == MAX_EVENT_BYTES
    events, rejections = decode_api_calls(value)
    assert rejections == [] and len(events) == 1


def test_a_single_event_over_64_kib_is_rejected(minimal_event: Factory) -> None:
    value = _padded(minimal_event(), MAX_EVENT_BYTES + 1)
    rejection = _only_rejection(value)
    assert rejection.kind == "too_large"
    assert rejection.reason == "single event is 65,537 bytes, over the 65,536 limit"
    assert rejection.raw == value


def test_a_message_over_the_limit_is_rejected_before_parsing() -> None:
    value = b"[" + b" " * MAX_MESSAGE_BYTES + b"]"
    rejection = _only_rejection(value)
    assert rejection.kind == "too_large"
    assert f"{MAX_MESSAGE_BYTES:,} limit" in rejection.reason
    assert rejection.raw is value


def test_a_large_batch_of_small_events_is_not_a_large_event(minimal_event: Factory) -> None:
    value = encode([minimal_event()] * 2_000)
    assert MAX_EVENT_BYTES < len(value) < MAX_MESSAGE_BYTES
    events, rejections = decode_api_calls(value)
    assert rejections == [] and len(events) == 2_000


# The other decoders -------------------------------------------------------------------------

def test_decode_verdict_returns_the_verdict_or_a_rejection(verdict_doc: Factory) -> None:
    verdict = decode_verdict(encode(verdict_doc()))
    assert not isinstance(verdict, Rejection) and verdict.verdict == "confirmed"
    rejection = decode_verdict(encode(set_path(verdict_doc(), "verdict", "maybe")))
    assert isinstance(rejection, Rejection) and rejection.reason.startswith("verdict: ")
    assert isinstance(decode_verdict(None), Rejection)
    assert isinstance(decode_verdict(b"\xff"), Rejection)


def test_decode_jsonl_events_numbers_lines_and_skips_blanks(minimal_event: Factory) -> None:
    lines = [encode(minimal_event()), b"  \n", encode([minimal_event(), 5]), b"{"]
    out = list(decode_jsonl_events(lines))
    assert [(lineno, isinstance(item, Rejection)) for lineno, item in out] == [
        (1, False), (3, False), (3, True), (4, True)]
