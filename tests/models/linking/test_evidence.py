"""KeyEvidence: weights by kind and popularity, bounded state, a low-volume edge stream."""

from __future__ import annotations

import msgspec
import pytest

from models.errors import ConfigurationError
from models.linking import KeyEvidence, LinkEdge, LinkObservation
from tests.models.calls import T0


def seen(
    evidence: KeyEvidence,
    account: str,
    suspicion: float,
    ts: float = T0,
    *,
    tenant: str | None = None,
    kind: str = "tls",
    key: str = "t13d_build",
) -> list[LinkEdge]:
    obs = LinkObservation(kind, key, tenant or f"org_{account}", account, ts, suspicion, ts)
    return evidence.add(obs)


def test_one_member_links_nothing_two_tenants_link_both() -> None:
    evidence = KeyEvidence()
    assert seen(evidence, "a", 0.8) == []
    edges = seen(evidence, "b", 0.8, T0 + 1)
    assert [(e.account_id, e.weight, e.members) for e in edges] == [("a", 0.45, 2), ("b", 0.45, 2)]
    assert [e.seq for e in edges] == [1, 2]


def test_sharing_within_one_tenant_weighs_nothing() -> None:
    evidence = KeyEvidence()
    for i in range(50):
        assert seen(evidence, f"k{i}", 0.9, T0 + i, tenant="org_enterprise") == []
    assert evidence.weight("tls", "t13d_build") == 0.0


def test_campaign_infrastructure_is_strong_and_common_infrastructure_is_not() -> None:
    evidence = KeyEvidence()
    for i in range(200):  # a TLS build only a hydra's fresh suspicious keys present
        seen(evidence, f"h{i}", 0.85, T0 + i, key="hydra_build")
    assert evidence.weight("tls", "hydra_build") >= 0.85
    for i in range(300):  # a corporate egress: 300 calm keys of several tenants ...
        seen(evidence, f"c{i}", 0.03, T0 + i, tenant=f"org_{i % 3}", kind="netua", key="egress")
    for i in range(10):  # ... and a few suspicious ones behind it
        seen(evidence, f"s{i}", 0.9, T0 + 400 + i, kind="netua", key="egress")
    assert evidence.weight("netua", "egress") < 0.01
    for i in range(60):  # a stock client library: calm users and suspicious ones alike
        seen(evidence, f"u{i}", 0.05 if i % 2 else 0.6, T0 + i, key="stock_httpx")
    assert evidence.weight("tls", "stock_httpx") < 0.05


def test_members_are_capped_and_the_sketch_keeps_calm_popularity() -> None:
    evidence = KeyEvidence(max_members=32, sketch_size=16)
    for i in range(2000):
        seen(evidence, f"calm{i}", 0.02, T0 + i, kind="netua", key="cloud")
    for i in range(5):
        seen(evidence, f"sus{i}", 0.9, T0 + 2000 + i, kind="netua", key="cloud")
    assert evidence.members_tracked == 32
    assert evidence.weight("netua", "cloud") < 0.01


def test_members_decay_in_event_time_and_idle_keys_expire() -> None:
    evidence = KeyEvidence(member_ttl_s=600.0)
    seen(evidence, "a", 0.8, T0)
    seen(evidence, "b", 0.8, T0 + 1)
    assert seen(evidence, "c", 0.8, T0 + 700) == []  # a and b are older than the ttl
    assert evidence.members_tracked == 1
    assert evidence.expire(T0 + 700 + 601) == 1
    assert len(evidence) == 0


def test_expiry_does_not_change_the_edges() -> None:
    def run(expire: bool) -> list[LinkEdge]:
        evidence = KeyEvidence(member_ttl_s=600.0)
        edges = []
        for step in range(40):
            ts = T0 + 97.0 * step
            if expire and step % 3 == 0:
                evidence.expire(ts)
            edges += seen(evidence, f"k{step % 7}", 0.3 + (step % 5) / 10, ts)
            edges += seen(evidence, f"k{step % 4}", 0.8, ts + 500 * (step % 2), kind="payment")
        return edges

    assert run(expire=True) == run(expire=False)


def test_the_edge_stream_is_quiet_when_nothing_changes() -> None:
    evidence = KeyEvidence(edge_refresh_s=900.0)
    for i in range(10):
        seen(evidence, f"k{i}", 0.8, T0 + i)
    assert seen(evidence, "k3", 0.82, T0 + 20) == []  # same suspicion, same weight
    assert [e.suspicion for e in seen(evidence, "k3", 0.95, T0 + 21)] == [0.95]
    assert len(seen(evidence, "k3", 0.95, T0 + 21 + 900)) == 1  # refresh
    assert len(seen(evidence, "k_new", 0.8, T0 + 30)) == 1


def test_a_key_that_stops_qualifying_says_so_once() -> None:
    evidence = KeyEvidence()
    seen(evidence, "a", 0.8)
    seen(evidence, "b", 0.8)
    edges = seen(evidence, "b", 0.05, T0 + 10)  # b turns out calm: one tenant left
    assert [(e.account_id, e.weight) for e in edges] == [("b", 0.0)]
    assert seen(evidence, "a", 0.8, T0 + 11) == []


def test_edges_round_trip_through_msgspec() -> None:
    evidence = KeyEvidence()
    seen(evidence, "a", 0.8)
    edge = seen(evidence, "b", 0.8)[0]
    assert msgspec.json.decode(msgspec.json.encode(edge), type=LinkEdge) == edge
    assert edge.hub == "tls:t13d_build"


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        KeyEvidence(kind_weights={"phone": 1.0})
    with pytest.raises(ConfigurationError):
        KeyEvidence(calm_below=0.5, suspicious_from=0.4)
