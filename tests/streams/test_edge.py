"""The Rust edge (`native/`, `streams.edge`) against the Python edge (`decode_calls`).

For every record the Rust reader accepts, its calls must be the Python edge's: the same
`ApiCall` when the payload is decoded (repr for repr, so 1 and 1.0 differ), the same bytes
as msgspec writes, the same event time, ids and partition, and no rejection the Python
edge would have made. Where it declines, `EdgeReader` must give what the Python edge gives.
And it must accept the contract's valid events, or the comparison would prove nothing.
"""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench._traffic import TrafficPlan, events
from models.records import ApiCall
from schemas.decode import MAX_BATCH_EVENTS, Rejection
from simulator.generate import generate
from simulator.scenario import load_scenario
from streams.edge import (
    EdgeCall,
    EdgeCalls,
    EdgeReader,
    edge_records,
    encode_edge_calls,
    group_by_destination,
)
from streams.fast_decode import decode_calls
from streams.internal import encode_calls, group_by_partition, partition_for
from tests.schemas.documents import CONTRACT_EVENT, MINIMAL_EVENT, encode, set_path
from tests.schemas.strategies import invalid_elements, valid_events
from tests.streams.test_fast_decode import (
    _event,
    arbitrary_bytes,
    batches,
    byte_edits,
    mutated_events,
)

PARTITIONS = 12
_payload_call = msgspec.msgpack.Decoder(ApiCall).decode


def _key(call: EdgeCall) -> tuple[str, float, str, str, int, bytes]:
    return (repr(_payload_call(call.payload)), call.ts, call.tenant_id, call.account_id,
            call.partition, call.payload)


def _expected_key(call: ApiCall) -> tuple[str, float, str, str, int, bytes]:
    return (repr(call), call.ts, call.tenant_id, call.account_id,
            partition_for(call.account_id, PARTITIONS), msgspec.msgpack.encode(call))


def assert_same(value: bytes | None) -> tuple[bool, int]:
    """The Rust reader, where it accepts `value`, and `EdgeReader` always, agree with the
    Python edge; returns whether the Rust reader accepted it, and how many valid events
    no worker can carry (a count past 64 bits: dead-lettered, declined by the Rust reader)."""
    reader = EdgeReader(PARTITIONS)
    expected_calls, expected_rejections = decode_calls(value)
    expected, uncarried = [], []
    for call in expected_calls:
        try:
            expected.append(_expected_key(call))
        except OverflowError:
            uncarried.append(call.event_id)
    native = reader._native.decode(value) if value else None
    if native is not None:
        assert expected_rejections == [] and uncarried == []
        assert [_key(c) for c in native] == expected
    calls, rejections = reader.read(value)
    assert [_key(c) for c in calls] == expected
    assert rejections[:len(expected_rejections)] == expected_rejections
    assert [r.kind for r in rejections[len(expected_rejections):]] == (
        ["processing_error"] * len(uncarried))
    assert reader.by_python == (native is None)
    return native is not None, len(uncarried)


def accepted(value: bytes) -> bool:
    """`assert_same(value)`, and whether the Rust reader accepted `value`."""
    return assert_same(value)[0]


# Accepted, and equal -------------------------------------------------------------------------

@given(valid_events())
@settings(max_examples=400)
def test_a_valid_event_is_read_in_rust_as_in_python(doc: dict[str, Any]) -> None:
    rust, uncarried = assert_same(encode(doc))
    assert rust or uncarried


@given(st.lists(valid_events(), max_size=12))
def test_a_valid_batch_is_read_in_rust_as_in_python(docs: list[dict[str, Any]]) -> None:
    rust, uncarried = assert_same(encode(docs))
    assert rust or uncarried


def test_the_benchmark_and_simulator_traffic_is_read_in_rust_byte_for_byte() -> None:
    values = [e.value for e in events(TrafficPlan(accounts=500), 0, 3_000)]
    simulation = generate(load_scenario("hydra"), seed=7, duration_s=3600, fleet_scale=None)
    values += [json.dumps(e).encode() for e in islice(simulation.events(), 3_000)]
    records = [b"[" + b",".join(values[i:i + 500]) + b"]" for i in range(0, len(values), 500)]
    reader = EdgeReader(PARTITIONS)
    for record in records + values[:50]:
        assert accepted(record)
        # The internal records too: one per partition, as the Python edge writes them.
        calls, _ = reader.read(record)
        python_calls, _ = decode_calls(record)
        mine = {p: encode_edge_calls(group) for p, group in group_by_destination(calls).items()}
        theirs = {p: encode_calls(group) for p, group in
                  group_by_partition(python_calls, "account_id", PARTITIONS).items()}
        assert mine == theirs
        # ... and as the pipeline writes them, from the rows, in records of at most 7
        groups = group_by_partition(python_calls, "account_id", PARTITIONS)
        assert edge_records(calls, 7) == {
            p: [encode_calls(group[i:i + 7]) for i in range(0, len(group), 7)]
            for p, group in groups.items()}
    assert reader.by_python == 0


def test_a_full_batch_of_the_contract_event_is_read_in_rust() -> None:
    assert accepted(encode([CONTRACT_EVENT] * MAX_BATCH_EVENTS))
    assert not accepted(encode([CONTRACT_EVENT] * (MAX_BATCH_EVENTS + 1)))


@pytest.mark.parametrize("text", [
    "plain", "caf\u00e9 \u4e2d\u6587", "emoji \U0001f600", 'quote " and \\ backslash',
    "tab\tnewline\n", "\u0000nul", "x" * 300, "\u00e9" * 128,
])
def test_strings_with_escapes_and_other_scripts_are_read_in_rust(text: str) -> None:
    for path in ("tenant_id", "account_id", "request.model", "client.user_agent"):
        if path.endswith("_id") and len(text) > 128:
            continue  # not an id: the test above has it declined
        doc = json.loads(json.dumps(CONTRACT_EVENT))
        set_path(doc, path, text)
        assert accepted(json.dumps(doc, ensure_ascii=True).encode())
        assert accepted(json.dumps(doc, ensure_ascii=False).encode())


@pytest.mark.parametrize("ts", [
    b'"2026-11-26T18:00:00Z"', b'"2026-11-26 18:00:00Z"', b'"2026-11-26t18:00:00z"',
    b'"2026-11-26T18:00:00.1Z"', b'"2026-11-26T18:00:00.123456789+05:30"',
    b'"2026-11-26T18:00:00.9999999Z"', b'"2024-02-29T23:59:59.5-00:30"',
    b'"1970-01-01T00:00:00+23:59"', b'"2200-12-31T23:59:59.999999-23:59"',
])
@pytest.mark.parametrize("path", ["ts", "account.created_at"])
def test_timestamps_are_read_in_rust_to_the_same_float(ts: bytes, path: str) -> None:
    assert accepted(_event(path, ts, CONTRACT_EVENT))


# Declined, and read by the Python edge -------------------------------------------------------

@pytest.mark.parametrize(("path", "fragment"), [
    ("ts", b'"2026-11-26T18:00:60Z"'), ("ts", b'"2026-02-29T00:00:00Z"'),
    ("ts", b'"0001-01-01T00:00:00+23:59"'),  # valid, past what a double holds exactly
    ("ts", b'"2026-11-26T18:00:00+24:00"'), ("ts", b'"2026-11-26T18:00:00"'),
    ("schema_version", b"1.0"), ("schema_version", b"true"), ("request.n", b"0"),
    ("response.status", b"99"), ("response.input_tokens", b"-1"), ("client.asn", b"-0"),
    ("response.input_tokens", b"18446744073709551616"), ("request.temperature", b"1e400"),
    ("prompt.jailbreak_score", b"1.0000000000000002"), ("prompt.simhash", b'"0x3f09c1d22e4b7f"'),
    ("client.country", b'"sg"'), ("tenant_id", b'""'), ("account_id", b'"' + b"x" * 129 + b'"'),
    ("event_id", b'"\\ud800"'), ("request.model", b"null"),
    ("x_new", b'"\\udc00"'), ("x_new", b"1" * 1_001), ("x_new", b"[" * 101 + b"]" * 101),
    ("request.x_new", b"01"),
])
def test_what_the_rust_reader_declines_is_read_by_the_python_edge(
    path: str, fragment: bytes
) -> None:
    assert not accepted(_event(path, fragment, CONTRACT_EVENT))


def test_a_count_past_64_bits_is_dead_lettered_not_sent() -> None:
    big = 2**64
    value = encode([CONTRACT_EVENT, set_path(json.loads(json.dumps(CONTRACT_EVENT)),
                                             "response.output_tokens", big)])
    calls, rejections = EdgeReader(PARTITIONS).read(value)
    assert len(calls) == 1
    (rejection,) = rejections
    assert rejection.kind == "processing_error" and rejection.batch_index == 1
    assert str(big).encode() in rejection.raw and "64-bit" in rejection.reason


@pytest.mark.parametrize("fragment", [
    b"1", b"-0.5e-3", b'"text \\u00e9 \\ud83d\\ude00"', b"null", b"true", b"[]", b"{}",
    b'{"a": [1, {"b": null}], "c": "d"}', b"1" * 1_000, b"[" * 100 + b"]" * 100,
])
@pytest.mark.parametrize("path", ["x_new", "request.x_new", "prompt.x_new", "account.x_new"])
def test_unknown_fields_are_skipped_in_rust(path: str, fragment: bytes) -> None:
    assert accepted(_event(path, fragment, CONTRACT_EVENT))


def test_a_key_given_twice_goes_to_the_python_edge() -> None:
    value = encode(MINIMAL_EVENT)[:-1] + b',"account_id":"other"}'
    assert not accepted(value)


def test_a_batch_with_one_bad_element_is_split_by_the_python_edge() -> None:
    value = encode([CONTRACT_EVENT, {"schema_version": 2}, CONTRACT_EVENT])
    reader = EdgeReader(PARTITIONS)
    calls, rejections = reader.read(value)
    assert len(calls) == 2 and [r.batch_index for r in rejections] == [1]
    assert isinstance(rejections[0], Rejection) and reader.by_python == 1
    assert accepted(value) is False


@given(mutated_events())
@settings(max_examples=400)
def test_an_event_with_a_tricky_value_gets_the_same_verdict(value: bytes) -> None:
    assert_same(value)


@given(byte_edits())
@settings(max_examples=300)
def test_an_event_with_edited_bytes_gets_the_same_verdict(value: bytes) -> None:
    assert_same(value)


@given(st.lists(st.tuples(st.booleans(), valid_events(), invalid_elements()), max_size=12))
def test_a_batch_mixing_valid_and_invalid_events_gets_the_same_verdicts(
    picks: list[tuple[bool, dict[str, Any], object]],
) -> None:
    assert_same(encode([good if keep else bad for keep, good, bad in picks]))


@given(batches())
@settings(max_examples=300)
def test_a_batch_of_anything_gets_the_same_verdicts(value: bytes) -> None:
    assert_same(value)


@given(arbitrary_bytes)
@settings(max_examples=300)
def test_garbage_bytes_get_the_same_verdict(value: bytes) -> None:
    assert_same(value)


@given(st.lists(batches() | arbitrary_bytes | valid_events().map(encode)
                | st.sampled_from([None, b"", b"[]"]), max_size=8))
@settings(max_examples=200)
def test_records_read_together_get_each_its_own_verdict(values: list[bytes | None]) -> None:
    one_by_one, together = EdgeReader(PARTITIONS), EdgeReader(PARTITIONS)
    expected = [one_by_one.read(value) for value in values]
    got = together.read_many(values)
    assert len(got) == len(values)
    for (calls, rejections), (expected_calls, expected_rejections) in zip(
            got, expected, strict=True):
        assert [_key(c) for c in calls] == [_key(c) for c in expected_calls]
        assert rejections == expected_rejections
    assert together.by_python == one_by_one.by_python


def test_calls_the_python_edge_read_join_the_rust_ones_in_one_record() -> None:
    reader = EdgeReader(1)
    rust, _ = reader.read(encode([CONTRACT_EVENT]))
    python = [reader.edge_call(call) for call in decode_calls(encode(CONTRACT_EVENT))[0]]
    both = decode_calls(encode([CONTRACT_EVENT, CONTRACT_EVENT]))[0]
    assert encode_edge_calls([*rust, *python]) == encode_calls(both)
    # ... and as the edge's order holds them: rows, joined in Rust
    assert edge_records(EdgeCalls.of([rust, *python]), 1_000) == {0: [encode_calls(both)]}


def test_a_decoder_for_no_partitions_is_refused() -> None:
    with pytest.raises(ValueError, match="partitions"):
        EdgeReader(0)
