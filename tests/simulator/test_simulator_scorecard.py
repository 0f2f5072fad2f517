"""The scorecard on hand-made labels and alerts with known answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.scorecard import format_scorecard, p90, score_alerts

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
AlertFactory = Callable[..., dict[str, Any]]


def at(seconds: float) -> str:
    """RFC 3339 event time ``seconds`` after T0."""
    return (
        (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def label(
    account: str, archetype: str, campaign: str | None = None, start: float | None = None
) -> dict[str, Any]:
    """A labels.jsonl row; attack when ``campaign`` is given."""
    return {
        "tenant_id": f"org_{account}",
        "account_id": account,
        "label": "attack" if campaign else "benign",
        "archetype": archetype,
        "campaign_id": campaign,
        "attack_start": at(start) if campaign is not None and start is not None else None,
    }


@pytest.fixture
def make_alert() -> AlertFactory:
    """Factory for contract alerts naming ``accounts`` at ``time`` seconds after T0."""

    def make(
        accounts: list[str],
        time: float,
        *,
        kind: str = "account",
        severity: str = "high",
        status: str = "firing",
    ) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "alert_id": f"a-{'-'.join(accounts)}-{time}",
            "dedup_key": f"{kind}:{accounts[0]}",
            "kind": kind,
            "status": status,
            "severity": severity,
            "score": 0.9,
            "tenant_id": None,
            "account_id": accounts[0] if kind == "account" else None,
            "campaign_id": "c" if kind == "campaign" else None,
            "accounts": [{"tenant_id": f"org_{a}", "account_id": a} for a in accounts],
            "event_time": at(time),
            "detected_at": at(time + 1),
            "first_event_time": at(max(0.0, time - 30)),
            "reasons": [],
        }

    return make


LABELS = [
    label("a1", "hydra", "A", 0),
    label("a2", "hydra", "A", 60),
    label("a3", "hydra", "A", 120),
    label("a4", "hydra", "A", 180),
    label("b1", "swarm", "B", 30),
    label("b2", "swarm", "B", 40),
    label("b3", "swarm", "B", 50),
    label("n1", "tutoring_app"),
    label("n2", "research_lab"),
    label("n3", "small_tenant"),
    label("n4", "small_tenant"),
]


@pytest.fixture
def known_alerts(make_alert: AlertFactory) -> list[dict[str, Any]]:
    return [
        make_alert(["a1"], 100),
        make_alert(["a2", "a3", "n1"], 200, kind="campaign", severity="critical"),
        make_alert(["b1"], 300),
        make_alert(["b2"], 310, status="resolved"),  # resolved alerts name no one
        make_alert(["n2"], 50, severity="low"),
        make_alert(["n2"], 400, severity="medium"),
        make_alert(["ghost"], 500),
    ]


def test_campaigns_count_as_detected_at_half_their_accounts(
    known_alerts: list[dict[str, Any]],
) -> None:
    card = score_alerts(LABELS, known_alerts, days=0.5)
    by_id = {c.campaign_id: c for c in card.campaigns}
    assert (card.campaigns_detected, card.campaigns_total) == (1, 2)
    assert by_id["A"].detected and by_id["A"].named == 3
    # half of A (two accounts) is named by the campaign alert at t=200; A began at t=0
    assert by_id["A"].ttd_s == pytest.approx(200.0)
    assert by_id["A"].detected_at == at(200)
    assert not by_id["B"].detected and by_id["B"].named == 1 and by_id["B"].ttd_s is None
    assert card.ttd_campaign_median_s == pytest.approx(200.0)
    assert card.ttd_campaign_p90_s == pytest.approx(200.0)


def test_time_to_first_alert_per_campaign(known_alerts: list[dict[str, Any]]) -> None:
    card = score_alerts(LABELS, known_alerts, days=0.5)
    by_id = {c.campaign_id: c for c in card.campaigns}
    # A began at t=0 and a1 was first named at 100; B began at 30, b1 first named at 300:
    # a campaign not yet "detected" (half named) has still been alerted on.
    assert by_id["A"].first_alert_s == pytest.approx(100.0)
    assert by_id["B"].first_alert_s == pytest.approx(270.0)
    assert card.ttd_campaign_first_alert_median_s == pytest.approx(185.0)


def test_floor_is_when_half_of_a_campaign_had_begun_attacking(
    known_alerts: list[dict[str, Any]],
) -> None:
    card = score_alerts(LABELS, known_alerts, days=0.5)
    by_id = {c.campaign_id: c for c in card.campaigns}
    # A's keys start at 0, 60, 120, 180: its second (half of four) at 60. B's three keys
    # start at 30, 40, 50: its second (ceil of 1.5) at 40, 10 s after B's first.
    assert by_id["A"].floor_s == pytest.approx(60.0)
    assert by_id["B"].floor_s == pytest.approx(10.0)
    assert card.ttd_campaign_floor_median_s == pytest.approx(35.0)
    assert by_id["A"].ttd_s is not None and by_id["A"].ttd_s >= by_id["A"].floor_s
    assert "floor median 35s" in format_scorecard(card)


def test_recall_and_time_to_detect_per_account(known_alerts: list[dict[str, Any]]) -> None:
    card = score_alerts(LABELS, known_alerts, days=0.5)
    assert card.recall_by_archetype["hydra"].alerted == 3
    assert card.recall_by_archetype["hydra"].rate == pytest.approx(0.75)
    assert card.recall_by_archetype["swarm"].rate == pytest.approx(1 / 3)
    assert card.attack_recall == pytest.approx(4 / 7)
    # a1 100-0, a2 200-60, a3 200-120, b1 300-30
    assert card.ttd_account_median_s == pytest.approx(120.0)
    assert card.ttd_account_p90_s == pytest.approx(270.0)


def test_benign_alerts_by_archetype_severity_and_load(known_alerts: list[dict[str, Any]]) -> None:
    card = score_alerts(LABELS, known_alerts, days=0.5)
    assert (card.benign_alerted, card.benign_accounts) == (2, 4)
    assert card.benign_alerted_rate == pytest.approx(0.5)
    assert card.benign_by_severity == {"low": 0, "medium": 1, "high": 0, "critical": 1}
    assert card.benign_by_archetype["research_lab"].alerted == 1
    assert card.benign_by_archetype["small_tenant"].alerted == 0
    # three firing alerts name benign accounts, over 4 benign accounts and half a day
    assert card.benign_firing_alerts == 3
    assert card.benign_alerts_per_1k_per_day == pytest.approx(3 / (4 / 1000) / 0.5)
    assert card.unknown_accounts == 1


def test_campaign_alert_membership_precision(make_alert: AlertFactory) -> None:
    alerts = [
        make_alert(["a1", "a2", "n1"], 100, kind="campaign"),  # 2 of 3 in A
        make_alert(["a3", "a4", "b1", "b2"], 200, kind="campaign"),  # tie A/B: 2 of 4
        make_alert(["n3", "n4"], 300, kind="campaign"),  # no true campaign: 0 of 2
    ]
    card = score_alerts(LABELS, alerts, days=1.0)
    assert card.campaign_alerts == 3
    assert card.campaign_alert_precision == pytest.approx(4 / 9)
    assert card.campaign_alert_precision_mean == pytest.approx((2 / 3 + 2 / 4 + 0) / 3)


@pytest.mark.parametrize(
    ("members", "named", "detected"), [(2, 1, True), (3, 1, False), (3, 2, True), (5, 2, False)]
)
def test_half_threshold(make_alert: AlertFactory, members: int, named: int, detected: bool) -> None:
    labels = [label(f"k{i}", "swarm", "S", i) for i in range(members)]
    alerts = [make_alert([f"k{i}"], 100 + i) for i in range(named)]
    card = score_alerts(labels, alerts, days=1.0)
    assert card.campaigns[0].detected is detected


def test_no_alerts_scores_zero_without_crashing() -> None:
    card = score_alerts(LABELS, [], days=1.0)
    assert card.campaigns_detected == 0
    assert card.attack_recall == 0.0
    assert card.ttd_account_median_s is None
    assert card.benign_alerts_per_1k_per_day == 0.0
    assert card.campaign_alert_precision is None
    assert "campaigns detected: 0/2" in format_scorecard(card)


def test_days_are_derived_from_the_times_when_not_given(known_alerts: list[dict[str, Any]]) -> None:
    card = score_alerts(LABELS, known_alerts)
    # from the earliest time seen (t=0 attack start) to the latest (t=500 alert)
    assert card.days == pytest.approx(500 / 86400)
    assert card.notes


def test_to_dict_is_json_ready_and_the_table_reads(known_alerts: list[dict[str, Any]]) -> None:
    card = score_alerts(LABELS, known_alerts, days=0.5)
    data = json.loads(json.dumps(card.to_dict()))
    assert data["campaigns_detected"] == 1
    assert data["recall_by_archetype"]["hydra"]["rate"] == 0.75
    assert data["benign_by_severity"]["critical"] == 1
    table = format_scorecard(card)
    assert "campaigns detected: 1/2" in table
    assert "hydra" in table and "research_lab" in table


def test_p90_is_nearest_rank() -> None:
    assert p90([1.0]) == 1.0
    assert p90([float(v) for v in range(1, 21)]) == 18.0
    assert p90([]) is None


@given(
    named=st.lists(st.sampled_from([row["account_id"] for row in LABELS] + ["ghost"]), max_size=12),
    times=st.lists(st.floats(min_value=0, max_value=3600), min_size=12, max_size=12),
    kinds=st.lists(st.sampled_from(["account", "campaign"]), min_size=12, max_size=12),
)
def test_scorecard_invariants_hold_for_any_alerts(
    named: list[str], times: list[float], kinds: list[str]
) -> None:
    alerts = [
        {
            "kind": kind,
            "status": "firing",
            "severity": "high",
            "accounts": [{"tenant_id": f"org_{account}", "account_id": account}],
            "event_time": at(time),
        }
        for account, time, kind in zip(named, times, kinds, strict=False)
    ]
    card = score_alerts(LABELS, alerts, days=1.0)
    assert 0 <= card.campaigns_detected <= card.campaigns_total == 2
    assert 0.0 <= card.attack_recall <= 1.0
    assert 0 <= card.benign_alerted <= card.benign_accounts == 4
    assert sum(card.benign_by_severity.values()) == card.benign_alerted
    precision = card.campaign_alert_precision
    assert precision is None or 0.0 <= precision <= 1.0
    if card.ttd_account_median_s is not None:
        assert card.ttd_account_p90_s is not None
    json.dumps(card.to_dict())
