from __future__ import annotations

from streams.producer import peek


def test_peek_reads_key_and_event_time_or_nothing() -> None:
    key, ts = peek(b'{"account_id": "key_1", "ts": "2026-11-26T18:00:00Z", "x": [1]}')
    assert key == b"key_1" and ts == 1795716000.0
    assert peek(b"not json") == (None, None)
    assert peek(b'[{"account_id": "a"}]') == (None, None)
    assert peek(b'{"account_id": "k", "ts": "never"}') == (b"k", None)
