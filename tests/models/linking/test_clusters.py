"""CampaignClusters: union-find over keys, campaign ids, alert lifecycle, order of edges."""

from __future__ import annotations

import random
import uuid

import pytest

from models.errors import ConfigurationError
from models.linking import CampaignClusters, LinkEdge
from schemas.alert import Alert
from tests.models.calls import T0

_seq = iter(range(1, 10**9))


def edge(
    account: str,
    ts: float,
    *,
    key: str = "build_a",
    kind: str = "tls",
    weight: float = 0.9,
    suspicion: float = 0.8,
    tenant: str | None = None,
) -> LinkEdge:
    return LinkEdge(
        kind, key, tenant or f"org_{account}", account, weight, suspicion, ts, next(_seq), 2, ts
    )


def feed(clusters: CampaignClusters, edges: list[LinkEdge], until: float) -> list[Alert]:
    for e in edges:
        clusters.add(e)
    return clusters.advance(until)


def names(alert: Alert) -> set[str]:
    return {ref.account_id for ref in alert.accounts}


def test_a_linked_suspicious_group_fires_one_campaign_alert() -> None:
    clusters = CampaignClusters(min_members=5)
    alerts = feed(clusters, [edge(f"k{i}", T0 + i) for i in range(6)], T0 + 120)
    [alert] = alerts
    assert (alert.kind, alert.status, alert.tenant_id, alert.account_id) == (
        "campaign",
        "firing",
        None,
        None,
    )
    assert alert.dedup_key == f"campaign:{alert.campaign_id}"
    assert names(alert) == {f"k{i}" for i in range(6)}
    assert alert.event_time.timestamp() == T0 + 5
    assert alert.first_event_time.timestamp() == T0
    assert alert.detected_at == alert.event_time
    signals = [reason.signal for reason in alert.reasons]
    assert signals[:3] == ["campaign_members", "member_suspicion", "link_tls"]
    assert uuid.UUID(alert.campaign_id or "").version == 5


def test_too_few_weak_or_calm_links_fire_nothing() -> None:
    assert feed(CampaignClusters(), [edge(f"k{i}", T0 + i) for i in range(4)], T0 + 600) == []
    weak = [edge(f"k{i}", T0 + i, kind="onset", key="b1", weight=0.2) for i in range(50)]
    assert feed(CampaignClusters(), weak, T0 + 600) == []
    calm = [edge(f"k{i}", T0 + i, suspicion=0.05) for i in range(50)]
    assert feed(CampaignClusters(), calm, T0 + 600) == []


def test_growth_escalates_under_the_same_campaign_id_and_listing_new_members_first() -> None:
    clusters = CampaignClusters(min_members=5, growth=0.25, max_listed=6)
    [first] = feed(clusters, [edge(f"k{i}", T0 + i) for i in range(5)], T0 + 60)
    assert feed(clusters, [edge("k5", T0 + 61)], T0 + 120) == []  # +20%: not yet
    [second] = feed(clusters, [edge(f"k{i}", T0 + 121 + i) for i in range(6, 9)], T0 + 180)
    assert second.campaign_id == first.campaign_id and second.status == "firing"
    assert second.alert_id != first.alert_id
    assert {"k5", "k6", "k7", "k8"} <= names(second) and len(names(second)) == 6
    assert "listing 6 of 9" in second.reasons[0].detail


def test_merging_keeps_the_earliest_alerted_campaign() -> None:
    clusters = CampaignClusters(min_members=3)
    [old] = feed(clusters, [edge(f"a{i}", T0 + i, key="build_a") for i in range(3)], T0 + 60)
    [new] = feed(clusters, [edge(f"b{i}", T0 + 70 + i, key="build_b") for i in range(3)], T0 + 120)
    bridge = [
        edge("a0", T0 + 130, kind="payment", key="card"),
        edge("b0", T0 + 131, kind="payment", key="card"),
    ]
    merged = feed(clusters, bridge, T0 + 180)
    assert [(a.status, a.campaign_id) for a in merged] == [
        ("resolved", new.campaign_id),
        ("firing", old.campaign_id),
    ]
    assert "merged into" in merged[0].reasons[0].detail
    assert names(merged[1]) == {"a0", "a1", "a2", "b0", "b1", "b2"}
    assert clusters.open_campaigns == [old.campaign_id]


def test_a_quiet_campaign_resolves_with_its_last_evidence_time() -> None:
    clusters = CampaignClusters(min_members=3, quiet_s=1800.0)
    [fired] = feed(clusters, [edge(f"k{i}", T0 + i) for i in range(3)], T0 + 60)
    assert clusters.advance(T0 + 2 + 1800) == []
    [resolved] = clusters.advance(T0 + 2 + 1800 + 60)
    assert resolved.status == "resolved" and resolved.dedup_key == fired.dedup_key
    assert resolved.event_time.timestamp() == T0 + 2
    assert resolved.severity == fired.severity
    # new evidence after the resolution opens a new campaign with a new id
    [again] = feed(clusters, [edge(f"k{i}", T0 + 4000 + i) for i in range(3)], T0 + 4100)
    assert again.status == "firing" and again.campaign_id != fired.campaign_id


def test_membership_is_queryable_and_its_changes_drain() -> None:
    clusters = CampaignClusters(min_members=3)
    edges = [edge(f"k{i}", T0 + i) for i in range(3)]
    edges.append(edge("k0", T0 + 5, kind="payment", key="card"))
    edges.append(edge("k1", T0 + 6, kind="payment", key="card"))
    [alert] = feed(clusters, edges, T0 + 60)
    members = clusters.members(alert.campaign_id or "")
    assert [(m.account_id, m.since, m.link_kinds) for m in members] == [
        ("k0", T0, ("payment", "tls")),
        ("k1", T0 + 1, ("payment", "tls")),
        ("k2", T0 + 2, ("tls",)),
    ]
    changes = clusters.drain_member_changes()
    assert {c.account_id for c in changes} == {"k0", "k1", "k2"}
    assert all(c.until is None for c in changes)
    assert clusters.drain_member_changes() == []


def test_edge_order_within_a_tick_does_not_matter() -> None:
    edges = [
        edge(f"k{i}", T0 + (i % 50), key=f"b{i % 3}", weight=0.5 + (i % 4) / 10) for i in range(60)
    ]
    edges += [edge(f"k{i}", T0 + 30 + i % 20, kind="payment", key="card") for i in range(0, 60, 7)]
    results = []
    for seed in range(3):
        shuffled = edges[:]
        random.Random(seed).shuffle(shuffled)
        clusters = CampaignClusters()
        results.append([a.model_dump() for a in feed(clusters, shuffled, T0 + 300)])
    assert results[0] == results[1] == results[2]
    assert results[0]


def test_alert_ids_are_deterministic_and_unique() -> None:
    def run() -> list[Alert]:
        clusters = CampaignClusters(min_members=3)
        alerts = feed(clusters, [edge(f"k{i}", T0 + 10 * i) for i in range(12)], T0 + 200)
        return alerts + clusters.advance(T0 + 10_000)

    first, second = run(), run()
    assert [a.alert_id for a in first] == [a.alert_id for a in second]
    assert len({a.alert_id for a in first}) == len(first) >= 3


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        CampaignClusters(min_members=1)
    with pytest.raises(ConfigurationError):
        CampaignClusters(severity_scores=(0.9, 0.5, 0.7))
