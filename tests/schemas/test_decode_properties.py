"""Properties of `decode_api_calls` over generated events, batches and arbitrary bytes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import AnalystVerdict, ApiCallEvent, Rejection, decode_api_calls, decode_verdict
from schemas.fields import parse_rfc3339
from tests.schemas.documents import encode
from tests.schemas.strategies import invalid_elements, rfc3339_instants, valid_events


@given(valid_events())
def test_a_valid_event_decodes_to_exactly_itself(doc: dict[str, Any]) -> None:
    value = encode(doc)
    events, rejections = decode_api_calls(value)
    assert rejections == []
    assert events == [ApiCallEvent.model_validate_json(value)]
    (event,) = events
    assert event.event_id == doc["event_id"]
    assert event.response.input_tokens == doc["response"]["input_tokens"]
    assert event.ts == parse_rfc3339(doc["ts"])


@given(valid_events())
def test_a_decoded_event_survives_its_own_json(doc: dict[str, Any]) -> None:
    (event,), _ = decode_api_calls(encode(doc))
    assert decode_api_calls(event.model_dump_json().encode()) == ([event], [])


# Raw bytes rarely start like JSON; prefixes steer some of them into each decoding path.
arbitrary_bytes = st.tuples(st.sampled_from([b"", b"[", b"{", b" [{", b'[{"schema_version":1,']),
                            st.binary(max_size=512)).map(b"".join)


@given(arbitrary_bytes)
@settings(max_examples=1000)
def test_arbitrary_bytes_never_raise_and_never_vanish(value: bytes) -> None:
    events, rejections = decode_api_calls(value)
    if not events and not rejections:
        assert json.loads(value) == []
    for rejection in rejections:
        assert rejection.reason


@given(arbitrary_bytes)
def test_arbitrary_bytes_never_raise_as_a_verdict(value: bytes) -> None:
    assert isinstance(decode_verdict(value), AnalystVerdict | Rejection)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                                           allow_infinity=False)
                    | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.text(max_size=5), children, max_size=3),
                    max_leaves=12))
def test_arbitrary_json_never_raises_and_never_vanishes(doc: object) -> None:
    events, rejections = decode_api_calls(encode(doc))
    assert events or rejections or doc == []


@given(st.lists(st.tuples(st.booleans(), valid_events(), invalid_elements()), max_size=12))
def test_a_mixed_batch_partitions_exactly(picks: list[tuple[bool, dict[str, Any], object]]) -> None:
    batch = [good if keep else bad for keep, good, bad in picks]
    bad_indices = [i for i, (keep, _, _) in enumerate(picks) if not keep]
    events, rejections = decode_api_calls(encode(batch))
    assert len(events) + len(rejections) == len(batch)
    assert [r.batch_index for r in rejections] == bad_indices
    assert [e.event_id for e in events] == [
        good["event_id"] for keep, good, _ in picks if keep]
    for rejection in rejections:
        assert rejection.batch_index is not None
        assert json.loads(rejection.raw) == batch[rejection.batch_index]


@given(rfc3339_instants())
def test_every_rfc3339_timestamp_names_its_instant_and_offset(pair: tuple[str, datetime]) -> None:
    text, expected = pair
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()
