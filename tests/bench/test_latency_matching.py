"""The throughput bench's event-to-alert latency: which alert an event is matched to."""

from __future__ import annotations

import pytest

from bench.throughput import match_latencies


def test_an_event_is_matched_to_the_first_account_alert_naming_it() -> None:
    sent_at = {1_000: 10.0, 2_000: 11.0}
    arrivals = [
        (1_000, 10.3, "account"),  # the detection
        (1_000, 14.0, "account"),  # the same episode escalating later
        (2_000, 11.2, "account"),
    ]
    assert match_latencies(sent_at, arrivals) == pytest.approx([200.0, 300.0])


def test_a_campaign_alert_with_an_events_time_is_not_its_detection() -> None:
    """The linking stages raise campaign alerts on their own cadence; one whose event time
    equals a harvester event's is seconds later and says nothing of that event's path."""
    sent_at = {1_000: 10.0, 3_000: 12.0}
    arrivals = [
        (3_000, 18.1, "campaign"),
        (1_000, 10.4, "account"),
        (3_000, 12.5, "account"),
    ]
    assert match_latencies(sent_at, arrivals) == pytest.approx([400.0, 500.0])


def test_events_no_account_alert_names_are_left_out() -> None:
    assert match_latencies({1_000: 10.0}, [(1_000, 16.0, "campaign")]) == []
    assert match_latencies({1_000: 10.0}, []) == []
