"""`KeyEvidence` (Rust, `native/src/evidence.rs`) against the Python it was ported from
(`evidence_reference.py`): the same observations in, the same edges, weights and sizes
out, at every step, through member caps, sketches, their windows, late observations,
keys that start afresh and expiry."""

from __future__ import annotations

import random

import pytest

from models.linking import KeyEvidence, LinkEdge, LinkObservation
from models.linking.keys import KINDS
from tests.models.calls import T0
from tests.models.linking import evidence_reference

SUSPICIONS = (0.0, 0.05, 0.0999, 0.1, 0.3999, 0.4, 0.45, 0.6, 0.95, 1.0)


def stream(seed: int, n: int, ttl: float) -> list[LinkObservation | float]:
    """Observations on a few keys shared by many accounts of a few tenants, and now and
    then an expiry (a float: its watermark)."""
    rng = random.Random(seed)
    keys = [(rng.choice(KINDS), f"k{i}") for i in range(6)]
    ts = T0
    out: list[LinkObservation | float] = []
    for _ in range(n):
        step = rng.random()
        if step < 0.02:
            ts += rng.choice((ttl, 2 * ttl, 3.5 * ttl))  # a key goes quiet, windows turn
        elif step < 0.04:
            out.append(ts - rng.random() * ttl)
            continue
        else:
            ts += rng.expovariate(1 / (ttl / 40))
        kind, key = rng.choice(keys)
        account = rng.randrange(40)
        late = rng.random() * ttl / 5 if rng.random() < 0.1 else 0.0  # out of order
        suspicion = rng.choice(SUSPICIONS) if rng.random() < 0.7 else rng.random()
        out.append(LinkObservation(kind, key, f"org_{account % 7}", f"acct_{account}",
                                   ts - late, suspicion, T0 + account))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_the_rust_evidence_is_the_python_it_was_ported_from(seed: int) -> None:
    ttl = 600.0
    settings = dict(max_members=3 + seed % 6, member_ttl_s=ttl, sketch_size=2 + seed % 5,
                    edge_refresh_s=120.0)
    rust = KeyEvidence(**settings)  # type: ignore[arg-type]
    python = evidence_reference.KeyEvidence(**settings)  # type: ignore[arg-type]
    items = stream(seed, 3000, ttl)
    seen: set[tuple[str, str]] = set()
    edges = 0
    for item in items:
        if isinstance(item, float):
            assert rust.expire(item) == python.expire(item)
            continue
        made = rust.add(item)
        assert made == python.add(item)
        edges += len(made)
        seen.add((item.kind, item.key))
        assert len(rust) == len(python)
        assert rust.members_tracked == python.members_tracked
        for kind, key in seen:
            assert rust.weight(kind, key) == python.weight(kind, key)
    assert edges > 50  # the streams do link


def test_counting_many_at_once_is_counting_each() -> None:
    items = [item for item in stream(99, 2000, 600.0) if not isinstance(item, float)]
    one, many = KeyEvidence(member_ttl_s=600.0), KeyEvidence(member_ttl_s=600.0)
    expected = [edge for item in items for edge in one.add(item)]
    edges: list[LinkEdge] = []
    latest = -float("inf")
    for i in range(0, len(items), 150):
        latest = max(latest, many.add_many(items[i:i + 150], edges))
    assert edges == expected and edges
    assert latest == max(item.ts for item in items)
    assert many.add_many([], edges) == -float("inf")


def test_an_observation_it_cannot_read_stops_the_batch_after_those_before() -> None:
    def obs(account: str, ts: float) -> LinkObservation:
        return LinkObservation("tls", "build", f"org_{account}", account, ts, 0.9, ts)

    evidence, edges = KeyEvidence(), []
    with pytest.raises(AttributeError):
        evidence.add_many([obs("a", T0), obs("b", T0 + 1), "not an observation",  # type: ignore[list-item]
                           obs("c", T0 + 2)], edges)
    assert [edge.account_id for edge in edges] == ["a", "b"]  # a and b linked, c never came
    assert evidence.members_tracked == 2


def test_weights_round_as_python_rounds_on_exact_ties() -> None:
    # Two suspicious tenants: support 0.5; weight 0.0625 * 0.5 = 0.03125, exactly halfway
    # between 0.0312 and 0.0313: Python rounds to even, 0.0312 (half away from zero
    # would give 0.0313).
    rust = KeyEvidence(kind_weights={"tls": 0.0625})
    python = evidence_reference.KeyEvidence(kind_weights={"tls": 0.0625})
    for i in range(2):
        obs = LinkObservation("tls", "build", f"org_{i}", f"a{i}", T0 + i, 0.9, T0)
        assert rust.add(obs) == python.add(obs)
    assert rust.weight("tls", "build") == python.weight("tls", "build") == 0.0312
