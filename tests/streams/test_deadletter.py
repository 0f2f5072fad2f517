from __future__ import annotations

from datetime import UTC, datetime

from schemas.deadletter import ENVELOPE_HEADER, REASON_HEADER, DeadLetter
from schemas.decode import Rejection
from streams.deadletter import MAX_DEAD_LETTER_BYTES, dead_letter

NOW = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)


def test_dead_letter_keeps_the_bytes_and_names_the_source() -> None:
    rejection = Rejection("invalid", "response.status: Input should be a valid integer", b"{}", 3)
    value, headers, envelope = dead_letter(rejection, topic="api-calls", partition=2, offset=41,
                                           now=NOW)
    assert value == b"{}"
    found = dict(headers)
    assert found[REASON_HEADER] == rejection.reason.encode()
    parsed = DeadLetter.model_validate_json(found[ENVELOPE_HEADER])
    assert parsed == envelope
    assert (parsed.source_topic, parsed.partition, parsed.offset, parsed.batch_index) == (
        "api-calls", 2, 41, 3)
    assert not parsed.truncated and parsed.original_size == 2


def test_oversized_value_is_cut_and_marked() -> None:
    raw = b"x" * (MAX_DEAD_LETTER_BYTES + 10)
    value, _, envelope = dead_letter(Rejection("too_large", "big", raw), topic="t", partition=0,
                                     offset=0, now=NOW)
    assert len(value) == MAX_DEAD_LETTER_BYTES
    assert envelope.truncated and envelope.original_size == len(raw)
