"""LinkObserver: report what is new for an account, refresh, templates, tiny state."""

from __future__ import annotations

import pickle
import random

import msgspec

from models.linking import LinkObservation, LinkObserver
from tests.models.calls import T0, build_call

CLIENT = {
    "payment_fingerprint": "pf_1",
    "tls_fingerprint": "t13d_build",
    "ip": "203.0.113.0/24",
    "asn": 64500,
    "user_agent": "python-httpx/0.27",
    "created_at": T0 - 3600,
}


def kinds(observations: list[LinkObservation]) -> list[str]:
    return [obs.kind for obs in observations]


def test_the_first_call_reports_onset_and_every_key_then_nothing_repeats() -> None:
    observer = LinkObserver()
    first = observer.observe(build_call(T0, simhash=0x1234, **CLIENT), 0.5)
    assert kinds(first) == ["onset", "payment", "tls", "netua", "signup"] + ["template"] * 6
    assert {(o.tenant_id, o.account_id, o.ts, o.suspicion, o.first_seen) for o in first} == {
        ("org_1", "key_1", T0, 0.5, T0)
    }
    assert observer.observe(build_call(T0 + 1, simhash=0x1234, **CLIENT), 0.52) == []


def test_a_new_key_is_reported_alone() -> None:
    observer = LinkObserver()
    observer.observe(build_call(T0, **CLIENT), 0.5)
    moved = {**CLIENT, "ip": "198.51.100.0/24"}
    assert [(o.kind, o.key) for o in observer.observe(build_call(T0 + 5, **moved), 0.5)] == [
        ("netua", "198.51.100.0/24|64500|python-httpx/0.27")
    ]
    assert observer.observe(build_call(T0 + 6, **CLIENT), 0.5) == []  # seen before


def test_a_suspicion_step_or_a_refresh_reports_the_keys_again() -> None:
    observer = LinkObserver(refresh_s=1800.0, suspicion_step=0.1)
    observer.observe(build_call(T0, **CLIENT), 0.30)
    assert observer.observe(build_call(T0 + 10, **CLIENT), 0.38) == []
    stepped = observer.observe(build_call(T0 + 20, **CLIENT), 0.41)
    assert kinds(stepped) == ["onset", "payment", "tls", "netua", "signup"]
    assert {obs.suspicion for obs in stepped} == {0.41}
    assert observer.observe(build_call(T0 + 1000, **CLIENT), 0.41) == []
    refreshed = observer.observe(build_call(T0 + 20 + 1800, **CLIENT), 0.41)
    assert kinds(refreshed) == ["onset", "payment", "tls", "netua", "signup"]
    assert {obs.first_seen for obs in refreshed} == {T0}


def test_templates_of_the_first_calls_then_only_repeated_ones() -> None:
    observer = LinkObserver(template_calls=2)
    rng = random.Random(1)
    template = rng.getrandbits(64)
    assert kinds(observer.observe(build_call(T0, simhash=rng.getrandbits(64)), 0.5)) == [
        "onset",
        *["template"] * 6,
    ]
    assert len(observer.observe(build_call(T0 + 1, simhash=template), 0.5)) == 6
    # one-off prompts after the first calls report nothing
    for i in range(20):
        assert observer.observe(build_call(T0 + 2 + i, simhash=rng.getrandbits(64)), 0.5) == []
    observer.observe(build_call(T0 + 30, simhash=(other := rng.getrandbits(64))), 0.5)
    # the same template again, one bit off: the pairs of its intact bands are reported
    repeated = observer.observe(build_call(T0 + 31, simhash=other ^ 1), 0.5)
    assert kinds(repeated) == ["template"] * 3
    assert all(not obs.key.startswith("p0") for obs in repeated)  # band 0 has the flip


def test_account_state_is_at_most_200_bytes_and_survives_pickle() -> None:
    observer = LinkObserver()
    for i in range(50):
        observer.observe(build_call(T0 + i, account_id=f"key_{i % 5}", **CLIENT), 0.5)
    assert observer.state_bytes() <= 200
    assert len(observer) == 5
    restored = pickle.loads(pickle.dumps(observer))
    call = build_call(T0 + 99, account_id="key_1", simhash=0xFEED, **CLIENT)
    assert restored.observe(call, 0.5) == observer.observe(call, 0.5)


def test_observations_round_trip_through_msgspec() -> None:
    obs = LinkObserver().observe(build_call(T0, **CLIENT), 0.5)[1]
    wire = msgspec.json.encode(obs)
    assert msgspec.json.decode(wire, type=LinkObservation) == obs
    assert obs.hub == "payment:pf_1"


def test_dormant_accounts_are_forgotten_and_come_back_new() -> None:
    observer = LinkObserver(refresh_s=1800.0)
    observer.observe(build_call(T0, **CLIENT), 0.5)
    observer.observe(build_call(T0, account_id="key_2", **CLIENT), 0.5)
    observer.observe(build_call(T0 + 5000, account_id="key_2", **CLIENT), 0.5)
    assert observer.expire(T0 + 3600 + 1800 + 1, idle_s=3600.0) == 1
    assert len(observer) == 1
    again = observer.observe(build_call(T0 + 9000, **CLIENT), 0.5)
    assert again[0].kind == "onset" and again[0].first_seen == T0 + 9000
