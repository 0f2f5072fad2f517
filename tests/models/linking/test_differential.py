"""The tuned link observer and share suspicion against their frozen reference copies.

`tests/models/linking/reference.py` holds the code as it was before its hot paths were
tuned. Both are fed the same calls: random accounts whose identity fields are drawn from
small pools (shared and distinct values, None, numbers that compare equal but print
differently), prompts from a small pool of templates with bit flips and one-offs,
suspicions that cross the reporting step, and event times that jump past the refresh.
The observations (every field, in order), the returned suspicions and every account's
final state array must be identical: the arrays are what account snapshots persist.
"""

from __future__ import annotations

import pickle
import random
from array import array
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.linking import observe
from models.linking.observe import LinkObserver
from models.linking.suspicion import ExtractionShareSuspicion, LinkingSuspicion
from models.records import ApiCall
from tests.models.calls import T0
from tests.models.linking import reference as reference_module
from tests.models.linking.reference import (
    ReferenceLinkingSuspicion,
    ReferenceLinkObserver,
    ReferenceShareSuspicion,
)

PAYMENTS = [None, "", "pf_1", "pf_2", "pf_3", "pf_ü"]
TLS = [None, "", "t13d1516h2_8daaf6152771", "t13d_build", "t12d_other"]
IPS = [None, "", "203.0.113.0/24", "203.0.113.7", "2001:db8:1:2::5", "198.51.100.0/24", "10.1"]
# 1 and True, 0 and 0.0 and -0.0: equal as numbers, different as text in the identity id.
ASNS: list[Any] = [None, 0, 1, True, False, 64500, 64501, 0.0, -0.0]
USER_AGENTS = [None, "", "python-httpx/0.27", "Go-http-client/2.0", "curl/8.0"]
# Whole floats and the equal ints, 0.0 and -0.0, fractions: the same number, other text.
CREATED: list[Any] = [
    None, T0 - 3600, int(T0 - 3600), T0 - 86400.25, T0 - 7 * 86400, 0.0, -0.0, 0, 1e-7, 1e22,
]
TEMPLATES = [0xA3F09C1D22E4B7F0, 0x1234, 0, 0xFFFF_FFFF_FFFF_FFFF, 0x0001_0002_0003_0004]


def random_simhash(rng: random.Random) -> int | None:
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.55:
        return rng.choice(TEMPLATES)
    if roll < 0.85:  # the template with values filled in: a bit or two flipped
        flipped = rng.choice(TEMPLATES)
        for _ in range(rng.randint(1, 2)):
            flipped ^= 1 << rng.randrange(64)
        return flipped
    return rng.getrandbits(64)  # a one-off prompt


def random_calls(seed: int, accounts: int, count: int, refresh_s: float) -> list[ApiCall]:
    """`count` calls over `accounts` accounts; each account has a usual identity it mostly
    keeps, event time advances per account and sometimes jumps past `refresh_s`."""
    rng = random.Random(seed)
    usual = [
        {
            "payment_fingerprint": rng.choice(PAYMENTS),
            "tls_fingerprint": rng.choice(TLS),
            "ip": rng.choice(IPS),
            "asn": rng.choice(ASNS),
            "user_agent": rng.choice(USER_AGENTS),
            "created_at": rng.choice(CREATED),
        }
        for _ in range(accounts)
    ]
    clock = [T0 + rng.uniform(0, 600) for _ in range(accounts)]
    calls = []
    for n in range(count):
        account = rng.randrange(accounts)
        roll = rng.random()
        if roll < 0.05:
            clock[account] += refresh_s * rng.uniform(1.0, 3.0)
        elif roll < 0.07:
            clock[account] -= rng.uniform(0, 5)  # late and out of order
        else:
            clock[account] += rng.choice([0.0, 0.25, 1.0, rng.uniform(0, 120)])
        identity = dict(usual[account])
        for field, pool in (
            ("payment_fingerprint", PAYMENTS), ("tls_fingerprint", TLS), ("ip", IPS),
            ("asn", ASNS), ("user_agent", USER_AGENTS), ("created_at", CREATED),
        ):
            if rng.random() < 0.04:
                identity[field] = rng.choice(pool)
        calls.append(
            ApiCall(
                event_id=f"e{n}", ts=clock[account], tenant_id=f"org_{account % 7}",
                account_id=f"key_{account}", model="frontier-large", status=200,
                input_tokens=900, output_tokens=350, simhash=random_simhash(rng), **identity,
            )
        )
    return calls


def random_suspicions(seed: int, count: int) -> list[float]:
    """A random walk in [0, 1] with jumps, and a few values outside it (clamped)."""
    rng = random.Random(seed + 1)
    level, values = 0.2, []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.03:
            level = rng.random()
        elif roll < 0.04:
            values.append(rng.choice([-0.3, 1.7, 0.0005, 0.9995, 0.0015]))
            continue
        else:
            level = min(1.0, max(0.0, level + rng.gauss(0, 0.03)))
        values.append(level)
    return values


def states(observer: Any, accounts: set[str]) -> dict[str, tuple[str, list[int]]]:
    """Every account's state array as (typecode, words)."""
    out: dict[str, tuple[str, list[int]]] = {}
    for account in accounts:
        state: array[int] = observer.export_account(account)
        out[account] = (state.typecode, state.tolist())
    return out


CONFIGS = [
    {},
    {"refresh_s": 300.0, "suspicion_step": 0.05, "template_calls": 0},
    {"refresh_s": 600.0, "suspicion_step": 0.2, "template_calls": 1, "signup_bucket_s": 60.0},
    {"template_calls": 5, "onset_bucket_s": 3600.0, "suspicion_step": 0.001},
]


@pytest.mark.parametrize("tiny_memos", [False, True], ids=["memos", "tiny-memos"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(map(str, c.values())))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_observer_matches_the_reference(
    seed: int, config: dict[str, Any], tiny_memos: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if tiny_memos:  # clear the memos every few calls, mid-stream
        monkeypatch.setattr(observe, "_IDENTITIES_MAX", 3)
    calls = random_calls(seed, accounts=40, count=6000, refresh_s=config.get("refresh_s", 1800))
    suspicions = random_suspicions(seed, len(calls))
    reference, tuned = ReferenceLinkObserver(**config), LinkObserver(**config)
    reported = 0
    for n, (call, suspicion) in enumerate(zip(calls, suspicions, strict=True)):
        expected = reference.observe(call, suspicion)
        assert tuned.observe(call, suspicion) == expected, f"call {n}: {call}"
        reported += len(expected)
    accounts = {call.account_id for call in calls}
    assert states(tuned, accounts) == states(reference, accounts)
    assert len(tuned) == len(reference) == len(accounts)
    assert reported > len(calls) // 10  # the traffic exercised the reporting paths


def test_states_carry_over_from_the_reference_and_the_call_count_saturates() -> None:
    """A snapshot the reference wrote continues identically in the tuned observer, also
    with the per-refresh call counter about to saturate."""
    calls = random_calls(4, accounts=30, count=6000, refresh_s=1800.0)
    half = len(calls) // 2
    reference, tuned = ReferenceLinkObserver(), LinkObserver()
    for call, suspicion in zip(calls[:half], random_suspicions(4, half), strict=True):
        reference.observe(call, suspicion)
    steady = {}  # each account's suspicion as last reported: only event time refreshes
    for account in {call.account_id for call in calls[:half]}:
        state = reference.export_account(account)
        assert state is not None
        state[reference_module._CALLS] = 0xFFFE
        steady[account] = state[reference_module._SUSPICION] / 1000
        tuned.import_account(account, array(state.typecode, state))
    saturated = 0
    for call in calls[half:]:
        suspicion = steady.get(call.account_id, 0.5)
        assert tuned.observe(call, suspicion) == reference.observe(call, suspicion)
        state = tuned.export_account(call.account_id)
        saturated += state is not None and state[reference_module._CALLS] == 0xFFFF
    accounts = {call.account_id for call in calls}
    assert states(tuned, accounts) == states(reference, accounts)
    assert saturated > 100  # calls that found the counter saturated, or saturated it


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 3),  # account
            st.sampled_from([0.0, 1.0, 30.0, 2000.0]),  # event time advance, seconds
            st.sampled_from(PAYMENTS), st.sampled_from(ASNS), st.sampled_from(CREATED),
            st.one_of(st.none(), st.sampled_from(TEMPLATES), st.integers(0, 2**64 - 1)),
            st.floats(-0.5, 1.5),
        ),
        max_size=60,
    )
)
def test_observer_matches_the_reference_on_drawn_calls(
    steps: list[tuple[int, float, Any, Any, Any, int | None, float]],
) -> None:
    reference, tuned = ReferenceLinkObserver(template_calls=1), LinkObserver(template_calls=1)
    clock = [T0] * 4
    for n, (account, advance, payment, asn, created_at, simhash, suspicion) in enumerate(steps):
        clock[account] += advance
        call = ApiCall(
            event_id=f"e{n}", ts=clock[account], tenant_id="org_1", account_id=f"key_{account}",
            model="m", status=200, input_tokens=1, output_tokens=1, simhash=simhash,
            payment_fingerprint=payment, tls_fingerprint="t13d", ip="203.0.113.0/24", asn=asn,
            user_agent="curl/8.0", created_at=created_at,
        )
        assert tuned.observe(call, suspicion) == reference.observe(call, suspicion)
    accounts = {f"key_{account}" for account, *_ in steps}
    assert states(tuned, accounts) == states(reference, accounts)


def shaped_calls(seed: int, accounts: int, count: int) -> list[ApiCall]:
    """Calls with every field `is_extraction_shaped` reads drawn around its thresholds."""
    rng = random.Random(seed)
    clock = [T0] * accounts
    calls = []
    for n in range(count):
        account = rng.randrange(accounts)
        clock[account] += rng.choice([0.0, -3.0, 1.0, 60.0, 3600.0, rng.expovariate(1 / 900)])
        calls.append(
            ApiCall(
                event_id=f"e{n}", ts=clock[account], tenant_id="org_1",
                account_id=f"key_{account}", model="m", status=200,
                input_tokens=rng.choice([250, 4096, 5000]),
                output_tokens=rng.choice([250, 4096, 300]),
                n=rng.choice([1, 1, 1, 2]), logprobs=rng.random() < 0.05,
                tool_count=rng.choice([0, 0, 3]), turn=rng.choice([1, 1, 2, 9]),
                stop_reason=rng.choice([None, "max_tokens", "end_turn"]),
                cot_request=rng.random() < 0.5,
                jailbreak_score=rng.choice([None, 0.0, 0.69, 0.7, 0.95]),
                sysprompt_probe=rng.random() < 0.03,
            )
        )
    return calls


@pytest.mark.parametrize(
    "config", [{}, {"half_life_s": 60.0, "prior": 0.0, "prior_weight": 3.0}, {"prior": 1.0}]
)
@pytest.mark.parametrize("seed", [1, 2])
def test_suspicion_matches_the_reference(seed: int, config: dict[str, float]) -> None:
    calls = shaped_calls(seed, accounts=30, count=5000)
    engine = random.Random(seed)
    reference = ReferenceLinkingSuspicion(ReferenceShareSuspicion(**config))
    tuned = LinkingSuspicion(ExtractionShareSuspicion(**config))
    for call in calls:
        engine_suspicion = engine.choice([0.0, 0.5, engine.random()])
        assert tuned.update(call, engine_suspicion) == reference.update(call, engine_suspicion)
    for account in {call.account_id for call in calls}:
        expected = reference.share.export_account(account)
        got = tuned.share.export_account(account)
        assert got is not None and expected is not None
        assert (got.typecode, got.tolist()) == (expected.typecode, expected.tolist())


def test_the_share_suspicion_pickles_without_its_core_and_goes_on_counting() -> None:
    calls = shaped_calls(3, accounts=5, count=400)
    reference = ReferenceShareSuspicion(half_life_s=600.0)
    tuned = ExtractionShareSuspicion(half_life_s=600.0)
    for call in calls[:200]:
        reference.update(call)
        tuned.update(call)
    restored = pickle.loads(pickle.dumps(tuned))
    assert restored.half_life_s == 600.0
    for call in calls[200:]:
        assert restored.update(call) == reference.update(call)


def linked_one_by_one(
    observer: LinkObserver, suspicion: LinkingSuspicion, calls: list[ApiCall],
    engine: list[float],
) -> tuple[list[Any], list[int]]:
    """What `observe_many` stands for: each call's suspicion, then its observations; the
    index of each call that raised."""
    out: list[Any] = []
    failed: list[int] = []
    for n, (call, engine_suspicion) in enumerate(zip(calls, engine, strict=True)):
        try:
            out += observer.observe(call, suspicion.update(call, engine_suspicion))
        except ValueError:
            failed.append(n)
    return out, failed


def linked_together(
    observer: LinkObserver, suspicion: LinkingSuspicion, calls: list[ApiCall],
    engine: list[float],
) -> tuple[list[Any], list[int]]:
    """`observe_many` over `calls`, going on after each call that raised, as a drain does."""
    out: list[Any] = []
    failed: list[int] = []
    start = 0
    while True:
        observations, done, error = observer.observe_many(calls[start:], engine[start:],
                                                          suspicion)
        out += observations
        if error is None:
            return out, failed
        assert isinstance(error, ValueError)
        failed.append(start + done)
        start += done + 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_observing_many_calls_at_once_is_observing_each(seed: int) -> None:
    """The drain's link stage over a slice of calls: the same observations, account
    arrays and share suspicions as a call at a time, including around a call the
    observer refuses (an event time that is not finite, past the share's update)."""
    calls = random_calls(seed, accounts=40, count=3000, refresh_s=1800) + shaped_calls(
        seed, accounts=30, count=2000)
    rng = random.Random(seed)
    bad = sorted(rng.sample(range(len(calls)), 3))
    for n in bad:
        calls[n] = ApiCall(**{**{f: getattr(calls[n], f) for f in calls[n].__struct_fields__},
                              "ts": float("nan")})
    engine = [rng.choice([0.0, 0.5, rng.random()]) for _ in calls]
    one = (LinkObserver(), LinkingSuspicion(ExtractionShareSuspicion()))
    many = (LinkObserver(), LinkingSuspicion(ExtractionShareSuspicion()))
    expected = linked_one_by_one(*one, calls, engine)
    got = linked_together(*many, calls, engine)
    assert expected[1] == bad
    assert got == expected
    assert len(expected[0]) > len(calls) // 10
    accounts = {call.account_id for call in calls}
    assert states(many[0], accounts) == states(one[0], accounts)
    for account in accounts:
        a, b = one[1].share.export_account(account), many[1].share.export_account(account)
        assert a is not None and b is not None and a.tolist() == b.tolist()


def test_observing_many_wants_a_suspicion_per_call() -> None:
    calls = random_calls(1, accounts=3, count=5, refresh_s=1800)
    with pytest.raises(ValueError, match="5 calls but 4 suspicions"):
        LinkObserver().observe_many(calls, [0.0] * 4, LinkingSuspicion())
