"""Link keys: one kind per trait, nothing for a missing field, LSH banding of SimHashes."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from models.linking.keys import (
    KINDS,
    ip_prefix,
    link_keys,
    onset_key,
    template_keys,
)
from tests.models.calls import build_call

FULL = {
    "payment_fingerprint": "pf_9a8b7c",
    "tls_fingerprint": "t13d1516h2_8daaf6152771_02713d6af862",
    "simhash": 0xA3F09C1D22E4B7F0,
    "ip": "203.0.113.0/24",
    "asn": 64500,
    "user_agent": "python-httpx/0.27",
    "created_at": 1_800_000_000.0,
}


def kinds_of(**fields: object) -> list[str]:
    return [kind for kind, _ in link_keys(build_call(**fields))]


def test_every_kind_but_onset_comes_from_one_call_in_kind_order() -> None:
    keys = link_keys(build_call(**FULL))
    assert [kind for kind, _ in keys] == ["payment", "tls"] + ["template"] * 6 + [
        "netua",
        "signup",
    ]
    assert ("payment", "pf_9a8b7c") in keys
    assert ("netua", "203.0.113.0/24|64500|python-httpx/0.27") in keys
    assert ("signup", str(int(1_800_000_000 // 600))) in keys
    assert ("template", "p01:b7f022e4") in keys
    assert {kind for kind, _ in keys} | {"onset"} == set(KINDS)


def test_a_missing_field_yields_no_key_of_its_kind() -> None:
    assert kinds_of() == []
    for field in ("payment_fingerprint", "tls_fingerprint", "simhash", "created_at"):
        fields = {k: v for k, v in FULL.items() if k != field}
        assert len(kinds_of(**fields)) == len(link_keys(build_call(**FULL))) - (
            6 if field == "simhash" else 1
        )
    for field in ("ip", "asn", "user_agent"):  # netua needs all three
        fields = {k: v for k, v in FULL.items() if k != field}
        assert "netua" not in kinds_of(**fields)


def test_networks_are_prefixes() -> None:
    assert ip_prefix("198.51.100.23") == "198.51.100.0/24"
    assert ip_prefix("198.51.100.0/24") == "198.51.100.0/24"
    assert ip_prefix("2001:db8:aa:bb::1") == "2001:db8:aa::/48"


def test_onset_is_the_first_seen_bucket() -> None:
    assert onset_key(1_800_000_599.0) == ("onset", "3000000")
    assert onset_key(1_800_000_600.0) == ("onset", "3000001")


def flip(simhash: int, bits: list[int]) -> int:
    for bit in bits:
        simhash ^= 1 << bit
    return simhash


@given(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.lists(st.integers(min_value=0, max_value=63), max_size=2),
)
def test_near_duplicates_within_two_flips_always_share_a_template_key(
    simhash: int, bits: list[int]
) -> None:
    assert set(template_keys(simhash)) & set(template_keys(flip(simhash, bits)))


def test_near_duplicates_with_three_or_four_flips_usually_share_one() -> None:
    rng = random.Random(3)
    for flips, at_least in ((3, 0.55), (4, 0.25)):
        shared = 0
        for _ in range(2000):
            base = rng.getrandbits(64)
            near = flip(base, [rng.randrange(64) for _ in range(flips)])
            shared += bool(set(template_keys(base)) & set(template_keys(near)))
        assert shared / 2000 >= at_least


def test_unrelated_prompts_do_not_share_template_keys() -> None:
    rng = random.Random(5)
    seen: set[str] = set()
    for _ in range(20_000):
        keys = set(template_keys(rng.getrandbits(64)))
        assert not keys & seen
        seen |= keys
