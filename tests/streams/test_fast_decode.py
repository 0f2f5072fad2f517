"""`decode_calls` (msgspec) against `decode_api_calls` + `ApiCall.from_event` (pydantic).

The two must agree on every input: the same calls, field for field and type for type, and
the same rejections (kind, reason, raw bytes, batch index).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.fast_decode
from models.records import ApiCall
from schemas.decode import MAX_BATCH_EVENTS, MAX_EVENT_BYTES, Rejection, decode_api_calls
from schemas.fields import parse_rfc3339
from streams.fast_decode import (
    _created_at_seconds,
    _read_closed_event,
    _read_open_event,
    _seconds,
    _to_call,
    _ts_seconds,
    decode_calls,
)
from tests.schemas.documents import CONTRACT_EVENT, MINIMAL_EVENT, Doc, encode, set_path
from tests.schemas.strategies import invalid_elements, rfc3339_instants, valid_events


def by_pydantic(value: bytes | None) -> tuple[list[ApiCall], list[Rejection]]:
    events, rejections = decode_api_calls(value)
    return [ApiCall.from_event(e) for e in events], rejections


def assert_same(value: bytes | None) -> tuple[list[ApiCall], list[Rejection]]:
    """Both paths agree on `value`; return what they agree on."""
    expected = by_pydantic(value)
    got = decode_calls(value)
    # repr tells 1 from 1.0 and True, and 0.0 from -0.0, where == does not.
    assert [repr(c) for c in got[0]] == [repr(c) for c in expected[0]]
    assert got[1] == expected[1]
    return got


# Inputs ------------------------------------------------------------------------------------

FRAGMENT = "@@fragment@@"  # stands for raw JSON that json.dumps cannot write, replaced after

LEAF_PATHS = [
    "schema_version", "event_id", "ts", "tenant_id", "account_id",
    "request.model", "request.endpoint", "request.temperature", "request.max_tokens",
    "request.n", "request.logprobs", "request.stream", "request.tool_count", "request.turn",
    "response.status", "response.input_tokens", "response.output_tokens",
    "response.latency_ms", "response.stop_reason",
    "prompt.simhash", "prompt.chars", "prompt.topic", "prompt.cot_request",
    "prompt.jailbreak_score", "prompt.sysprompt_probe",
    "client.ip", "client.asn", "client.country", "client.user_agent", "client.tls_fingerprint",
    "account.created_at", "account.payment_fingerprint",
]
GROUP_PATHS = ["request", "response", "prompt", "client", "account"]
UNKNOWN_PATHS = ["x_new", "request.x_new", "response.x_new", "prompt.x_new", "client.x_new",
                 "account.x_new"]

# Raw JSON where msgspec and pydantic might differ: numbers at and past the edges of each
# parser, ints written as floats, bools for ints, strings that almost match a pattern.
TRICKY_FRAGMENTS = [
    b"0", b"1", b"-1", b"-0", b"1.0", b"1.5", b"-0.0", b"1e2", b"1E0", b"0.5", b"2", b"600",
    b"true", b"false", b"null", b'""', b'"1"', b"[]", b"{}", b"[1]", b'{"a":1}',
    b"1e400", b"-1e400", b"1e-400", b"NaN", b"Infinity", b"-Infinity",
    b"9223372036854775807", b"9223372036854775808", b"18446744073709551615",
    b"18446744073709551616", b"-9223372036854775809", b"1" + b"0" * 400,
    b"1" * 4300, b"1" * 4301, b"0." + b"0" * 1200 + b"1",
    b"0.30000000000000001665", b"2.4703282292062328e-324", b"9007199254740993",
    b'"a3f09c1d22e4b7f0"', b'"A3F09C1D22E4B7F0"', b'"a3f09c1d22e4b7f0\\n"', b'"a3f09c1d22e4b7f"',
    # Strings int(_, 16) reads but the simhash pattern refuses.
    b'"0x3f09c1d22e4b7f"', b'"a3f0_9c1d22e4b7f"', b'" a3f09c1d22e4b7f"', b'"+a3f09c1d22e4b7f"',
    b'"a3f09c1d22e4b7f\\n"', b'"' + b"\\u0661" * 16 + b'"', b'"a3f09c1d22e4b7fg"',
    b'"SG"', b'"SG\\n"', b'"sg"', b'"Sg"', b'"S1"', b'"SGP"', b'"\\uff33G"',
    b'"\\ud83d\\ude00"', b'"\\ud800"', b'"\\udc00x"', b'"\\u0000"', b'"\xf0\x9f\x98\x80"',
    b'"\xff"', b'"\xed\xa0\x80"', b'"\xc3\xa9"', b'"a\\tb"', b'"a\tb"',
    b"[" * 150 + b"]" * 150, b"[" * 198 + b"]" * 198, b"[" * 199 + b"]" * 199,
    b"[" * 200 + b"]" * 200, b'{"a":' * 120 + b"1" + b"}" * 120,
    b'"' + "\U0001F600".encode() * 128 + b'"', b'"' + "\U0001F600".encode() * 129 + b'"',
    b'"' + b"x" * 128 + b'"', b'"' + b"x" * 129 + b'"',
]

# Strings shaped like timestamps, RFC 3339 or nearly (\d also draws non-ASCII digits).
timestamp_texts = st.from_regex(
    r"\A\d{4}-[01]\d-[0-3]\d[Tt _][0-2]\d:[0-6]\d(:[0-6]\d(\.\d{0,12})?)?"
    r"([Zz]|[+-][0-2]\d(:?[0-5]\d)?)?\Z"
)
timestamps = timestamp_texts.map(lambda text: json.dumps(text).encode())
fragments = (
    st.sampled_from(TRICKY_FRAGMENTS)
    | timestamps
    | st.sampled_from(["2026-11-26T18:00:60Z", "2026-11-26 18:00:00Z", "2026-02-29T00:00:00Z",
                       "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999999-23:59",
                       "2026-11-26T18:00:00.1234567891Z", "2026-11-26T18:00:00,5Z",
                       "2026-11-26T18:00Z", "2026-11-26T18:00:00+0530", "1795716000"])
    .map(lambda text: json.dumps(text).encode())
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode())
    | st.integers().map(lambda i: str(i).encode())
    | st.text(max_size=20).map(lambda s: json.dumps(s, ensure_ascii=False).encode())
)


def _with_fragment(doc: Doc, path: str, fragment: bytes) -> bytes:
    group = path.split(".")[0]
    if "." in path and doc.get(group) is None:
        doc[group] = {}
    value = encode(set_path(doc, path, FRAGMENT))
    return value.replace(json.dumps(FRAGMENT).encode(), fragment, 1)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid event with one field, group or unknown field set to tricky raw JSON."""
    doc = draw(valid_events())
    path = draw(st.sampled_from(LEAF_PATHS + GROUP_PATHS + UNKNOWN_PATHS))
    return _with_fragment(doc, path, draw(fragments))


@st.composite
def byte_edits(draw: st.DrawFn) -> bytes:
    """A valid event's JSON with a few bytes deleted, replaced or inserted."""
    value = bytearray(encode(draw(valid_events())))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(value) - 1))
        how = draw(st.sampled_from(["delete", "replace", "insert"]))
        byte = draw(st.binary(min_size=1, max_size=1) | st.sampled_from(
            [b'"', b",", b"}", b"]", b"{", b"[", b"\\", b"0", b".", b"e", b" ", b"\x80"]))
        if how == "delete":
            del value[at]
        elif how == "replace":
            value[at:at + 1] = byte
        else:
            value[at:at] = byte
    return bytes(value)


events_as_bytes = (
    valid_events().map(encode)
    | mutated_events()
    | byte_edits()
    | invalid_elements().map(encode)
)
whitespace = st.sampled_from([b"", b" ", b"\n", b"\r\n\t ", b"\x0c"])


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    """A JSON array (mostly) of valid, mutated, broken and non-object elements."""
    elements = draw(st.lists(events_as_bytes | fragments, max_size=8))
    ws = draw(whitespace)
    return ws + b"[" + (b"," + ws).join(elements) + b"]" + draw(whitespace)


# Properties ------------------------------------------------------------------------------------

@given(valid_events())
@settings(max_examples=300)
def test_a_valid_event_gives_the_same_call(doc: dict[str, Any]) -> None:
    (call,), rejections = assert_same(encode(doc))
    assert rejections == [] and call.event_id == doc["event_id"]


@given(st.lists(valid_events(), max_size=12))
def test_a_valid_batch_gives_the_same_calls(docs: list[dict[str, Any]]) -> None:
    calls, rejections = assert_same(encode(docs))
    assert rejections == [] and len(calls) == len(docs)


@given(mutated_events())
@settings(max_examples=1500)
def test_an_event_with_a_tricky_value_gets_the_same_verdict(value: bytes) -> None:
    assert_same(value)


@given(byte_edits())
@settings(max_examples=500)
def test_an_event_with_edited_bytes_gets_the_same_verdict(value: bytes) -> None:
    assert_same(value)


@given(st.lists(st.tuples(st.booleans(), valid_events(), invalid_elements()), max_size=12))
def test_a_batch_mixing_valid_and_invalid_events_is_split_the_same(
    picks: list[tuple[bool, dict[str, Any], object]],
) -> None:
    assert_same(encode([good if keep else bad for keep, good, bad in picks]))


@given(batches())
@settings(max_examples=700)
def test_a_batch_of_anything_gets_the_same_verdicts(value: bytes) -> None:
    assert_same(value)


arbitrary_bytes = st.tuples(
    st.sampled_from([b"", b"[", b"{", b" [{", b'[{"schema_version":1,', b"\xef\xbb\xbf"]),
    st.binary(max_size=512),
).map(b"".join)


@given(arbitrary_bytes)
@settings(max_examples=700)
def test_garbage_bytes_get_the_same_verdict(value: bytes) -> None:
    assert_same(value)


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["request", "response", "ts", "model", "x"])
                      | st.text(max_size=5), children, max_size=3),
    max_leaves=12,
))
def test_arbitrary_json_gets_the_same_verdict(doc: object) -> None:
    assert_same(encode(doc))


# The fast path is taken ----------------------------------------------------------------------

@pytest.fixture
def pydantic_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if decode_calls hands anything to pydantic."""
    def refuse(*args: object) -> object:
        raise AssertionError(f"fell back to pydantic for {args!r:.200}")
    monkeypatch.setattr(streams.fast_decode, "decode_api_calls", refuse)
    monkeypatch.setattr(streams.fast_decode, "_validate_json", refuse)


@pytest.mark.usefixtures("pydantic_forbidden")
@given(st.lists(valid_events(), min_size=1, max_size=5), st.booleans())
def test_valid_events_never_reach_pydantic(docs: list[dict[str, Any]], batched: bool) -> None:
    if batched:
        calls, _ = decode_calls(encode(docs))
    else:
        calls = [call for doc in docs for call in decode_calls(encode(doc))[0]]
    assert [c.event_id for c in calls] == [d["event_id"] for d in docs]


@pytest.mark.usefixtures("pydantic_forbidden")
def test_a_full_batch_of_the_contract_event_never_reaches_pydantic() -> None:
    calls, rejections = decode_calls(encode([CONTRACT_EVENT] * MAX_BATCH_EVENTS))
    assert len(calls) == MAX_BATCH_EVENTS and rejections == []


# Explicit edges --------------------------------------------------------------------------------

def _event(path: str, fragment: bytes, template: Doc = MINIMAL_EVENT) -> bytes:
    return _with_fragment(json.loads(json.dumps(template)), path, fragment)


@pytest.mark.parametrize(("ts", "valid"), [
    (b'"2026-11-26T18:00:00Z"', True),
    (b'"2026-11-26 18:00:00Z"', True),  # the space RFC 3339's note allows
    (b'"2026-11-26t18:00:00z"', True),
    (b'"2026-11-26T18:00:00.123456789+05:30"', True),  # nanoseconds, truncated
    (b'"2026-11-26T18:00:00.9999999Z"', True),  # truncated, not rounded up a second
    (b'"0001-01-01T00:00:00+23:59"', True),
    (b'"9999-12-31T23:59:59-23:59"', True),
    (b'"2026-11-26T18:00:60Z"', False),  # leap second
    (b'"2026-02-29T00:00:00Z"', False),
    (b'"2026-11-26T18:00:00"', False),  # no offset
    (b'"2026-11-26T18:00Z"', False),
    (b'"2026-11-26T18:00:00+0530"', False),
    (b'"2026-11-26T18:00:00,5Z"', False),
    (b'"2026-11-26T18:00:00Z\\n"', False),
    (b'"\\uff12026-11-26T18:00:00Z"', False),
    (b'"1795716000"', False),
    (b'""', False),
    (b"1795716000", False),
])
@pytest.mark.parametrize("path", ["ts", "account.created_at"])
def test_timestamps(ts: bytes, valid: bool, path: str) -> None:
    calls, rejections = assert_same(_event(path, ts))
    assert len(calls) == valid and len(rejections) == (not valid)


def test_nanoseconds_are_truncated_to_the_microsecond() -> None:
    (call,), _ = assert_same(_event("ts", b'"2026-11-26T18:00:00.9999999Z"'))
    assert call.ts == 1795716000.999999


@pytest.mark.parametrize(("path", "fragment"), [
    ("schema_version", b"1.0"), ("schema_version", b"true"), ("schema_version", b'"1"'),
    ("response.status", b"200.0"), ("response.status", b"2e2"), ("response.input_tokens", b"1.5"),
    ("request.n", b"true"), ("request.logprobs", b"1"), ("request.logprobs", b"0"),
    ("request.temperature", b"1e400"), ("request.temperature", b"-1e400"),
    ("prompt.jailbreak_score", b"1e400"), ("request.temperature", b"NaN"),
    ("request.temperature", b"-0.1"), ("prompt.jailbreak_score", b"1.0000000000000002"),
    ("prompt.simhash", b'"a3f09c1d22e4b7f0\\n"'), ("client.country", b'"SG\\n"'),
    ("prompt.simhash", b'"0x3f09c1d22e4b7f"'), ("prompt.simhash", b'"a3f0_9c1d22e4b7f"'),
    ("prompt.simhash", b'" a3f09c1d22e4b7f"'), ("prompt.simhash", b'"' + b"\\u0661" * 16 + b'"'),
    ("prompt.simhash", b'""'), ("client.country", b'"Sg"'), ("client.country", b'""'),
    ("client.country", b'"\\uff33G"'), ("event_id", b'"' + b"x" * 129 + b'"'),
    ("event_id", b'"' + "\U0001F600".encode() * 129 + b'"'), ("event_id", b'"\\ud800"'),
    ("response.output_tokens", b"1" * 4301),
])
def test_values_pydantic_refuses_are_refused_with_its_reason(path: str, fragment: bytes) -> None:
    calls, (rejection,) = assert_same(_event(path, fragment))
    assert calls == [] and rejection.kind in ("invalid", "not_json")


@pytest.mark.parametrize(("path", "fragment"), [
    ("prompt.simhash", b'"0x3f09c1d22e4b7f"'), ("prompt.simhash", b'"a3f09c1d22e4b7f\\n"'),
    ("client.country", b'"Sg"'), ("ts", b'"2026-11-26T18:00:60Z"'),
    ("account.created_at", b'"2026-02-29T00:00:00Z"'),
])
def test_a_batch_with_one_event_refused_after_reading_keeps_the_others(
    path: str, fragment: bytes,
) -> None:
    # msgspec reads the whole batch; _to_call refuses the middle event.
    good = encode(CONTRACT_EVENT)
    calls, (rejection,) = assert_same(
        b"[" + good + b"," + _event(path, fragment, CONTRACT_EVENT) + b"," + good + b"]")
    assert len(calls) == 2 and rejection.batch_index == 1


@pytest.mark.parametrize(("path", "fragment", "field", "expected"), [
    ("request.temperature", b"1e-400", None, None),
    ("prompt.jailbreak_score", b"1", "jailbreak_score", 1.0),
    ("prompt.jailbreak_score", b"0", "jailbreak_score", 0.0),
    ("prompt.jailbreak_score", b"-0.0", "jailbreak_score", -0.0),
    ("prompt.jailbreak_score", b"0.30000000000000001665", "jailbreak_score", 0.3),
    ("prompt.jailbreak_score", b"2.4703282292062328e-324", "jailbreak_score", 5e-324),
    ("response.output_tokens", b"18446744073709551616", "output_tokens", 2**64),
    ("response.output_tokens", b"1" + b"0" * 400, "output_tokens", 10**400),
    ("client.asn", b"-9223372036854775809", "asn", -(2**63) - 1),
    ("prompt.simhash", b'"FFFFFFFFFFFFFFFF"', "simhash", 2**64 - 1),
    ("event_id", b'"' + "\U0001F600".encode() * 128 + b'"', "event_id", "\U0001F600" * 128),
    ("event_id", b'"\\ud83d\\ude00\\u0000"', "event_id", "\U0001F600\x00"),
])
def test_values_both_accept_are_read_the_same(
    path: str, fragment: bytes, field: str | None, expected: object,
) -> None:
    (call,), _ = assert_same(_event(path, fragment, CONTRACT_EVENT))
    if field is not None:
        assert repr(getattr(call, field)) == repr(expected)


@pytest.mark.parametrize("fragment", [
    b"NaN", b"Infinity", b"1e400", b"1" * 4300, b"1" * 4301, b"[" * 198 + b"]" * 198,
    b"[" * 200 + b"]" * 200, b'"\xff"', b'"\xed\xa0\x80"', b'"\\ud800"', b'"\xc3\xa9"',
])
@pytest.mark.parametrize("path", ["x_new", "request.x_new", "account.x_new"])
@pytest.mark.parametrize("batched", [False, True])
def test_unknown_fields_are_judged_as_pydantic_judges_them(
    fragment: bytes, path: str, batched: bool,
) -> None:
    value = _event(path, fragment, CONTRACT_EVENT)
    assert_same(b"[" + value + b"," + encode(MINIMAL_EVENT) + b"]" if batched else value)


def test_a_repeated_key_keeps_the_last_value() -> None:
    value = encode(MINIMAL_EVENT).replace(b'"event_id":', b'"event_id":"first","event_id":')
    (call,), _ = assert_same(value)
    assert call.event_id == "evt-1"


@pytest.mark.parametrize("value", [
    None, b"", b"   ", b"[]", b" [ ] ", b"\x0c[]", b"[5]", b"[[]]", b"null", b"\xef\xbb\xbf{}",
    b"[{}, ", b'[{"a": NaN}]', encode([MINIMAL_EVENT])[:-1] + b",]",
    encode(MINIMAL_EVENT) + b" trailing", b" " * 1000 + encode([MINIMAL_EVENT]),
])
def test_records_that_are_not_plain_events(value: bytes | None) -> None:
    assert_same(value)


def test_a_batch_over_the_limit_is_rejected_whole() -> None:
    calls, (rejection,) = assert_same(encode([MINIMAL_EVENT] * (MAX_BATCH_EVENTS + 1)))
    assert calls == [] and rejection.kind == "batch_too_large"


@pytest.mark.parametrize("extra", [0, 1])
def test_a_single_event_at_and_over_64_kib(extra: int) -> None:
    doc = set_path(json.loads(json.dumps(MINIMAL_EVENT)), "client.user_agent", "")
    pad = MAX_EVENT_BYTES + extra - len(encode(doc))
    calls, rejections = assert_same(encode(set_path(doc, "client.user_agent", "u" * pad)))
    assert len(calls) == 1 - extra


def test_rejected_elements_keep_their_index_and_compact_json() -> None:
    value = b'[\n  {"schema_version": 1, "event_id": "a"},\n' + encode(MINIMAL_EVENT) + b"\n, 7]"
    calls, rejections = assert_same(value)
    assert len(calls) == 1
    assert [(r.batch_index, r.raw) for r in rejections] == [
        (0, b'{"schema_version":1,"event_id":"a"}'), (2, b"7")]


# The parts of the fast path, against the functions they stand in for --------------------------

MEMOS = ("_whole_second_us_memo", "_fraction_us_memo", "_created_at_memo")


def clear_memos() -> None:
    """Empty the timestamp memos (in place: they are only caches), so misses come first."""
    for name in MEMOS:
        getattr(streams.fast_decode, name).clear()


def outcome(seconds: Callable[[str], float], text: str) -> str:
    """What `seconds(text)` gives: the float's exact bits, or the ValueError's message."""
    try:
        return seconds(text).hex()
    except ValueError as exc:
        return f"ValueError: {exc}"


def assert_memos_hold_only_what_parse_rfc3339_accepted() -> None:
    for second, whole_second_us in streams.fast_decode._whole_second_us_memo.items():
        when = parse_rfc3339(second + "Z")
        assert whole_second_us == int(when.timestamp()) * 10**6  # whole seconds: exact floats
    for suffix, fraction_us in streams.fast_decode._fraction_us_memo.items():
        assert parse_rfc3339("2026-11-26T18:00:00" + suffix).microsecond == fraction_us
    for text, seconds in streams.fast_decode._created_at_memo.items():
        assert seconds.hex() == parse_rfc3339(text).timestamp().hex()


z_suffixes = st.from_regex(r"\A(\.[0-9]{1,12})?[Zz]\Z")
other_suffixes = (
    st.sampled_from(["", ".Z", "Z\n", "ZZ", " Z", ".5 Z", ".\u0661Z", ".1_0Z", ",5Z", ".+1Z",
                     "+05:30", "-00:00", "+23:59", "+24:00", ".123456789-05:00", "+0530"])
    | st.from_regex(r"\A(\.\d{0,9})?[+-]\d\d:\d\d\Z")
    | st.text(max_size=12)
)


@given(rfc3339_instants())
@settings(max_examples=500)
def test_ts_seconds_is_parse_rfc3339_bit_for_bit(pair: tuple[str, datetime]) -> None:
    text, aware = pair
    clear_memos()
    expected = aware.timestamp().hex()
    assert parse_rfc3339(text).timestamp().hex() == expected
    assert outcome(_ts_seconds, text) == expected  # parsed; a UTC time's second memoised
    assert outcome(_ts_seconds, text) == expected  # from the memos, if UTC


@given(rfc3339_instants(), st.lists(z_suffixes | other_suffixes, min_size=1, max_size=6))
@settings(max_examples=500)
def test_strings_sharing_a_memoised_second_are_read_as_parse_rfc3339_reads_them(
    pair: tuple[str, datetime], suffixes: list[str],
) -> None:
    second = pair[0][:19]
    clear_memos()
    _ts_seconds(second + "Z")
    assert second in streams.fast_decode._whole_second_us_memo
    for suffix in suffixes:
        expected = outcome(_seconds, second + suffix)
        assert outcome(_ts_seconds, second + suffix) == expected  # the suffix memoised, if Z
        assert outcome(_ts_seconds, second + suffix) == expected
    assert_memos_hold_only_what_parse_rfc3339_accepted()


@given(st.lists(timestamp_texts | rfc3339_instants().map(lambda pair: pair[0]), max_size=6))
@settings(max_examples=500)
def test_any_timestamp_string_is_read_as_parse_rfc3339_reads_it(texts: list[str]) -> None:
    clear_memos()
    # Each string's second with each string's rest: memo hits for refused strings too.
    mixed = [a[:19] + b[19:] for a in texts for b in texts]
    for text in texts + mixed + texts:
        expected = outcome(_seconds, text)
        assert outcome(_ts_seconds, text) == expected
        assert outcome(_created_at_seconds, text) == expected
    assert_memos_hold_only_what_parse_rfc3339_accepted()


@pytest.mark.parametrize(("seen", "text", "valid"), [
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00.123Z", True),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00.9999999Z", True),  # truncated, not rounded
    ("2026-11-26 18:00:00Z", "2026-11-26 18:00:00.123456789Z", True),
    ("2026-11-26t18:00:00z", "2026-11-26t18:00:00.5z", True),
    ("2026-11-26T18:00:00Z", "2026-11-26t18:00:00Z", True),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00+05:30", True),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00.25-00:00", True),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00+05:75", True),  # fromisoformat takes it
    ("2024-02-28T23:59:59Z", "2024-02-29T00:00:00.000001Z", True),
    ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59.5Z", True),  # before the epoch
    ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000001Z", True),
    ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999999Z", True),
    ("2026-11-26T18:00:59Z", "2026-11-26T18:00:60Z", False),  # leap second
    ("2026-11-26T18:00:59Z", "2026-11-26T18:00:60.5Z", False),
    ("2026-11-26T23:59:59Z", "2026-11-26T24:00:00Z", False),
    ("2026-02-28T23:59:59Z", "2026-02-29T00:00:00Z", False),
    ("2026-02-28T00:00:00Z", "2026-02-30T00:00:00Z", False),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00.Z", False),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00.\u0661Z", False),  # an Arabic-Indic digit
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00Z\n", False),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00ZZ", False),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00,5Z", False),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00", False),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00+0530", False),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00:00+24:00", False),
    ("2026-11-26T18:00:00Z", "2026-11-26T18:00", False),
])
def test_timestamps_next_to_a_memoised_second(seen: str, text: str, valid: bool) -> None:
    clear_memos()
    _ts_seconds(seen)
    for _ in range(2):
        expected = outcome(_seconds, text)
        assert expected.startswith("ValueError") != valid
        assert outcome(_ts_seconds, text) == expected
        assert outcome(_created_at_seconds, text) == expected
    assert_memos_hold_only_what_parse_rfc3339_accepted()


def test_a_refused_created_at_raises_every_time_and_is_not_memoised() -> None:
    clear_memos()
    for _ in range(2):
        with pytest.raises(ValueError, match="second must be in 0..59"):
            _created_at_seconds("2026-11-26T18:00:60Z")
    assert streams.fast_decode._created_at_memo == {}


def test_the_memos_are_cleared_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams.fast_decode, "_TS_MEMO_ENTRIES", 3)
    monkeypatch.setattr(streams.fast_decode, "_CREATED_AT_MEMO_ENTRIES", 3)
    clear_memos()
    for i in range(10):
        text = f"2026-11-26T18:00:{i:02d}.{i}Z"
        for _ in range(2):
            assert outcome(_ts_seconds, text) == outcome(_seconds, text)
            assert outcome(_created_at_seconds, text) == outcome(_seconds, text)
        assert all(0 < len(getattr(streams.fast_decode, name)) <= 3 for name in MEMOS)
    assert_memos_hold_only_what_parse_rfc3339_accepted()


def test_api_call_fields_are_in_the_order_to_call_passes_them() -> None:
    # _to_call builds an ApiCall from positional arguments in this order.
    assert ApiCall.__struct_fields__ == (
        "event_id", "ts", "tenant_id", "account_id", "model", "status", "input_tokens",
        "output_tokens", "endpoint", "max_tokens", "n", "logprobs", "tool_count", "turn",
        "stop_reason", "has_prompt", "simhash", "topic", "cot_request", "jailbreak_score",
        "sysprompt_probe", "has_client", "ip", "asn", "user_agent", "tls_fingerprint",
        "created_at", "payment_fingerprint",
    )


def read_both_ways(value: bytes) -> list[Any]:
    """The event in `value` as msgspec reads it with unknown fields ignored, and refused."""
    events = [_read_open_event(value)]
    with contextlib.suppress(msgspec.ValidationError):  # it has unknown fields
        events.append(_read_closed_event(value))
    return events


def assert_to_call_is_from_event(value: bytes) -> None:
    for event in read_both_ways(value):
        expected = repr(ApiCall.from_event(event, _seconds))
        assert repr(_to_call(event)) == expected
        assert repr(_to_call(event)) == expected  # timestamps from the memos


@given(valid_events())
@settings(max_examples=500)
def test_to_call_is_from_event_field_for_field(doc: dict[str, Any]) -> None:
    assert_to_call_is_from_event(encode(doc))


@pytest.mark.parametrize("edit", [
    {}, {"prompt": None, "client": None, "account": None}, {"prompt.simhash": None},
    {"prompt": {}, "client": {}, "account": {}}, {"account.created_at": None},
    {"account.created_at": "2026-11-20T00:00:00.5+01:00"}, {"ts": "2026-11-26 18:00:00z"},
])
@pytest.mark.parametrize("template", [CONTRACT_EVENT, MINIMAL_EVENT])
def test_to_call_is_from_event_with_groups_present_empty_and_null(
    edit: dict[str, object], template: Doc,
) -> None:
    doc = json.loads(json.dumps(template))
    for path, value in edit.items():
        group = path.split(".")[0]
        if "." in path and doc.get(group) is None:
            doc[group] = {}
        set_path(doc, path, value)
    assert_to_call_is_from_event(encode(doc))


@given(st.lists(st.tuples(valid_events(), st.integers(0, 2), z_suffixes | other_suffixes,
                          st.sampled_from(["ts", "account.created_at"])),
                min_size=1, max_size=20))
@settings(max_examples=300)
def test_a_batch_whose_events_share_seconds_gives_the_same_calls(
    picks: list[tuple[dict[str, Any], int, str, str]],
) -> None:
    docs = []
    for doc, second, suffix, path in picks:
        if path.startswith("account.") and doc.get("account") is None:
            doc["account"] = {}
        docs.append(set_path(doc, path, f"2026-11-26T18:00:0{second}{suffix}"))
    assert_same(encode(docs))
    assert_same(encode(docs))  # with the memos holding the seconds
