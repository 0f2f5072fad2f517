"""API-call events through `decode_api_calls`, one event per record: valid and invalid shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas import ApiCallEvent, decode_api_calls
from tests.schemas.documents import Factory, drop_path, encode, set_path
from tests.schemas.test_contract import REQUIRED_PATHS


def _one(value: bytes) -> ApiCallEvent:
    events, rejections = decode_api_calls(value)
    assert rejections == [], rejections[0].reason
    (event,) = events
    return event


def test_the_contract_example_decodes_field_for_field(full_event: Factory) -> None:
    event = _one(encode(full_event()))
    assert event.event_id == "01JDX3V5M8Q2W7E9R4T6Y1U3I5"
    assert event.ts == datetime(2026, 11, 26, 18, 0, 0, 123_000, tzinfo=UTC)
    assert (event.tenant_id, event.account_id) == ("org_12345", "key_456789")
    assert event.request.model == "frontier-large"
    assert event.request.temperature == 1.0 and event.request.max_tokens == 4096
    assert event.request.stream is True
    assert (event.response.status, event.response.input_tokens) == (200, 812)
    assert event.response.stop_reason == "max_tokens"
    assert event.prompt is not None and event.prompt.simhash == "a3f09c1d22e4b7f0"
    assert event.prompt.cot_request is True and event.prompt.jailbreak_score == 0.02
    assert event.client is not None and event.client.country == "SG"
    assert event.client.asn == 64500
    assert event.account is not None
    assert event.account.created_at == datetime(2026, 11, 20, tzinfo=UTC)


def test_a_minimal_event_decodes_with_contract_defaults(minimal_event: Factory) -> None:
    event = _one(encode(minimal_event()))
    assert event.request.model == "frontier-large"
    assert (event.request.n, event.request.turn, event.request.tool_count) == (1, 1, 0)
    assert event.request.logprobs is False and event.request.stream is False
    assert event.prompt is None and event.client is None and event.account is None


@pytest.mark.parametrize(("text", "offset"), [
    ("2026-11-26T23:30:00+05:30", timedelta(hours=5, minutes=30)),
    ("2026-11-26T10:00:00-08:00", timedelta(hours=-8)),
    ("2026-11-26T18:00:00+00:00", timedelta(0)),
    ("2026-11-26T18:00:00-00:00", timedelta(0)),
    ("2026-11-26t18:00:00z", timedelta(0)),
    ("2026-11-26 18:00:00Z", timedelta(0)),  # the space RFC 3339's note allows
    ("2026-11-27T07:45:00+13:45", timedelta(hours=13, minutes=45)),
])
def test_timestamps_with_any_offset_name_the_same_instant(
    minimal_event: Factory, text: str, offset: timedelta
) -> None:
    event = _one(encode(set_path(minimal_event(), "ts", text)))
    assert event.ts == datetime(2026, 11, 26, 18, 0, tzinfo=UTC)
    assert event.ts.utcoffset() == offset
    assert event.ts.tzinfo == timezone(offset)


def test_fractions_beyond_microseconds_are_truncated(minimal_event: Factory) -> None:
    event = _one(encode(set_path(minimal_event(), "ts", "2026-11-26T18:00:00.123456789Z")))
    assert event.ts.microsecond == 123_456


@pytest.mark.parametrize("path", REQUIRED_PATHS)
def test_every_required_field_is_required(full_event: Factory, path: str) -> None:
    value = encode(drop_path(full_event(), path))
    events, rejections = decode_api_calls(value)
    assert events == []
    (rejection,) = rejections
    assert rejection.kind == "invalid"
    assert rejection.reason == f"{path}: Field required"
    assert rejection.raw == value and rejection.batch_index is None


@pytest.mark.parametrize("path", REQUIRED_PATHS)
def test_null_for_a_required_field_is_a_wrong_type(full_event: Factory, path: str) -> None:
    _, (rejection,) = decode_api_calls(encode(set_path(full_event(), path, None)))
    assert rejection.kind == "invalid"
    assert rejection.reason.startswith(f"{path}: ")


def test_every_failing_field_is_named_up_to_three(full_event: Factory) -> None:
    doc = full_event()
    for path in ("event_id", "request.n", "response.status", "prompt.simhash", "client.country"):
        set_path(doc, path, "")
    _, (rejection,) = decode_api_calls(encode(doc))
    assert rejection.reason.startswith("event_id: ")
    assert "; request.n: " in rejection.reason and "; response.status: " in rejection.reason
    assert rejection.reason.endswith("; and 2 more")


@pytest.mark.parametrize("group", ["request", "response", "prompt", "client", "account"])
@pytest.mark.parametrize("value", [[], "x", 5, True])
def test_a_group_that_is_not_an_object_is_named(
    full_event: Factory, group: str, value: object
) -> None:
    _, (rejection,) = decode_api_calls(encode(set_path(full_event(), group, value)))
    assert rejection.kind == "invalid"
    assert rejection.reason.startswith(f"{group}: ")


@pytest.mark.parametrize("where", ["", "request.", "response.", "prompt.", "client.", "account."])
def test_unknown_fields_are_ignored_at_every_level(full_event: Factory, where: str) -> None:
    doc = full_event()
    for name, value in [("x_new_flag", True), ("x_new_group", {"a": [1, {"b": None}]}),
                        ("x_new_number", 1e300), ("x_new_null", None)]:
        set_path(doc, f"{where}{name}", value)
    assert _one(encode(doc)) == _one(encode(full_event()))


def test_unknown_groups_and_future_fields_do_not_leak_into_the_model(full_event: Factory) -> None:
    doc = set_path(full_event(), "moderation", {"flagged": False})
    event = _one(encode(doc))
    assert "moderation" not in event.model_dump()


def test_null_optional_groups_mean_not_supplied(minimal_event: Factory) -> None:
    doc = minimal_event()
    doc.update(prompt=None, client=None, account=None)
    event = _one(encode(doc))
    assert event.prompt is None and event.client is None and event.account is None


@pytest.mark.parametrize("group", ["prompt", "client", "account"])
def test_an_empty_optional_group_takes_the_defaults(minimal_event: Factory, group: str) -> None:
    event = _one(encode(set_path(minimal_event(), group, {})))
    assert getattr(event, group) is not None


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers_are_refused(minimal_event: Factory, literal: bytes) -> None:
    value = encode(set_path(minimal_event(), "request.temperature", 12345.5))
    value = value.replace(b"12345.5", literal)
    events, (rejection,) = decode_api_calls(value)
    assert events == []
    assert rejection.kind == "invalid"
    assert rejection.reason == "request.temperature: Input should be a finite number"


def test_integers_beyond_64_bits_are_ints_not_errors(minimal_event: Factory) -> None:
    event = _one(encode(set_path(minimal_event(), "response.input_tokens", 2**70)))
    assert event.response.input_tokens == 2**70


def test_the_event_round_trips_through_its_own_json(full_event: Factory) -> None:
    event = _one(encode(full_event()))
    assert _one(event.model_dump_json().encode()) == event
