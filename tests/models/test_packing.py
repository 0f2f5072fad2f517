"""An account's state packed into bytes and back: field for field, and no score changed.

The differential test runs a simulated fleet (harvesters, benign accounts, templates,
topics, cohorts) through the engine, the share suspicion and the link observer twice: once
as they are, once packing and unpacking every account of the call just seen, as a worker
does when an account goes idle. Alerts, scores, suspicions and link observations must be
the same.
"""

from __future__ import annotations

import math
import sys
from array import array
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import packing
from models.behaviour import _NO_TEMPLATES, BehaviourDetector, BehaviourState
from models.engine import AccountState, DetectionEngine
from models.linking.observe import LinkObserver
from models.linking.suspicion import LinkingSuspicion
from models.reasoning import ReasoningHarvestDetector
from models.records import ApiCall
from tests.models.calls import T0, build_harvest_call
from tests.models.linking.runs import simulated


def test_an_account_awaiting_its_cohort_stays_in_memory() -> None:
    """The hazard the worker avoids: a sample holds the state object it ranks."""
    fleet = Fleet()
    run = simulated("hydra", duration_s=7200.0, fleet_scale=0.2).calls
    for call in run:
        fleet.call(call)
    engine = fleet.engine
    waiting = [key for key in engine.accounts() if engine.awaits_cohort(*key)]
    idle = set(engine.idle_accounts(float("inf")))
    assert waiting and not idle & set(waiting)
    assert len(idle) + len(waiting) + len(engine._open) >= len(engine.accounts())


def _bits(state: BehaviourState) -> list[Any]:
    """A state's fields, floats as their bits (so -0.0, nan and infinities compare)."""
    return [
        value.tobytes() if isinstance(value, array)
        else math.copysign(1.0, value).hex() + value.hex() if isinstance(value, float)
        else value
        for value in msgspec.structs.astuple(state)
    ]


class Fleet:
    """What a worker keeps per account, fed the same calls a worker feeds it."""

    def __init__(self) -> None:
        self.engine = DetectionEngine()
        self.observer = LinkObserver()
        self.suspicion = LinkingSuspicion()

    def call(self, call: ApiCall) -> tuple[Any, ...]:
        alerts = self.engine.process(call)
        suspicion = self.suspicion.update(call, self.engine.last_suspicion)
        observations = self.observer.observe(call, suspicion)
        return (
            [alert.model_dump() for alert in alerts], self.engine.last_score, suspicion,
            observations,
        )

    def pack(self, tenant_id: str, account_id: str) -> bytes:
        account = self.engine.account_state(tenant_id, account_id)
        assert account is not None
        return packing.pack(
            account,
            self.observer.export_account(account_id),
            self.suspicion.share.export_account(account_id),
        )

    def repack(self) -> list[int]:
        """Pack every account, forget it, unpack it back; the layouts. Not those a cohort
        sample waits for (a worker leaves them in memory too)."""
        layouts = []
        for tenant_id, account_id in self.engine.accounts():
            if self.engine.awaits_cohort(tenant_id, account_id):
                continue
            value = self.pack(tenant_id, account_id)
            self.engine.evict_account(tenant_id, account_id)
            self.observer.forget_account(account_id)
            self.suspicion.share.forget_account(account_id)
            account, link, share = packing.unpack(value)
            self.engine.import_account(tenant_id, account_id, account)
            if link is not None:
                self.observer.import_account(account_id, link)
            if share is not None:
                self.suspicion.share.import_account(account_id, share)
            layouts.append(value[0])
        return layouts


@pytest.fixture(scope="module")
def hydra() -> tuple[ApiCall, ...]:
    return simulated("hydra", duration_s=7200.0, fleet_scale=0.2).calls


def test_packing_every_account_again_and_again_changes_nothing(
    hydra: tuple[ApiCall, ...],
) -> None:
    plain, packed = Fleet(), Fleet()
    layouts = {packing.COMPACT: 0, packing.PICKLED: 0}
    alerts = 0
    for n, call in enumerate(hydra):
        expected = plain.call(call)
        assert packed.call(call) == expected
        alerts += len(expected[0])
        if n % 97 == 0:  # every account that may leave memory leaves and comes back
            for layout in packed.repack():
                layouts[layout] += 1
    # The run exercised both layouts (accounts in an episode go pickled) and cohorts.
    assert alerts > 0 and layouts[packing.COMPACT] > layouts[packing.PICKLED] > 0
    ranked = [key for key in packed.engine.accounts()
              if packed.engine.account_state(*key).detector_states[0].cohort]  # type: ignore[union-attr]
    assert len(ranked) > 10
    for key in plain.engine.accounts():
        mine, theirs = plain.engine.account_state(*key), packed.engine.account_state(*key)
        assert mine is not None and theirs is not None
        assert _bits(mine.detector_states[0]) == _bits(theirs.detector_states[0])
        assert plain.observer.export_account(key[1]) == packed.observer.export_account(key[1])


def test_an_idle_account_packs_to_under_half_a_kilobyte(hydra: tuple[ApiCall, ...]) -> None:
    fleet = Fleet()
    for call in hydra:
        fleet.call(call)
    sizes = [
        len(fleet.pack(tenant, account))
        for tenant, account in fleet.engine.accounts()
        if fleet.engine.account_state(tenant, account).episode is None  # type: ignore[union-attr]
    ]
    assert len(sizes) > 100 and max(sizes) < 512


def test_a_packed_state_comes_back_field_for_field() -> None:
    engine = DetectionEngine()
    for i in range(20):
        engine.process(build_harvest_call(T0 + 600 * i))  # no burst: no episode
    [key] = engine.accounts()
    account = engine.account_state(*key)
    assert account is not None and account.episode is None
    [state] = account.detector_states
    link = array("I", range(30))
    share = array("d", [0.25, -0.0, T0])
    value = packing.pack(account, link, share)
    assert value[0] == packing.COMPACT
    assert packing.last_call_ts(value) == state.last_ts == T0 + 600 * 19
    back, link_back, share_back = packing.unpack(value)
    assert back.episodes_opened == account.episodes_opened and back.suppression is None
    assert _bits(back.detector_states[0]) == _bits(state)
    assert (link_back, share_back) == (link, share) and link_back is not link
    assert math.copysign(1.0, share_back[1]) == -1.0  # type: ignore[index]


def test_an_account_before_its_first_template_shares_the_empty_templates() -> None:
    account = AccountState((BehaviourState(),))
    back, link, share = packing.unpack(packing.pack(account, None, None))
    assert back.detector_states[0].templates is _NO_TEMPLATES
    assert back.detector_states[0].withheld is None and link is None and share is None
    assert packing.last_call_ts(packing.pack(account, None, None)) == -math.inf


@pytest.mark.parametrize(
    "case", ["episode", "suppression", "other detectors", "two detectors", "huge number"])
def test_what_the_compact_layout_cannot_hold_is_pickled(case: str) -> None:
    if case == "other detectors":
        engine = DetectionEngine(detectors=[ReasoningHarvestDetector()])
    elif case == "two detectors":
        engine = DetectionEngine(detectors=[ReasoningHarvestDetector(), BehaviourDetector()])
    else:
        engine = DetectionEngine()
    calls = 60 if case == "episode" else 3
    for i in range(calls):
        engine.process(build_harvest_call(T0 + 30 * i))
    [key] = engine.accounts()
    account = engine.account_state(*key)
    assert account is not None
    if case == "suppression":
        account.suppression = (T0 + 86400, "reasoning_trace_coercion", 0.9)
    if case == "huge number":
        account.detector_states[0].cohort = 1 << 70
    assert (account.episode is not None) == (case == "episode")
    value = packing.pack(account, None, array("d", [0.5, 0.5, T0]))
    assert value[0] == packing.PICKLED
    back, _, share = packing.unpack(value)
    assert (back.episodes_opened, back.suppression) == (
        account.episodes_opened, account.suppression)
    assert [type(s) for s in back.detector_states] == [
        type(s) for s in account.detector_states]
    assert share == array("d", [0.5, 0.5, T0])
    behaviour = [s for s in account.detector_states if isinstance(s, BehaviourState)]
    assert packing.last_call_ts(value) == (behaviour[0].last_ts if behaviour else -math.inf)
    if case == "huge number":
        assert back.detector_states[0].cohort == 1 << 70


def test_bytes_it_did_not_make_are_refused() -> None:
    state = BehaviourState(array("f", [0.0, 2.5] + [0.0] * 45))
    value = packing.pack(AccountState((state,)), array("I", range(30)), None)
    used = packing._BODY.unpack_from(value, packing._HEADER.size)[8]
    first = packing._HEADER.size + packing._BODY.size  # the first counter's position
    past = value[:first] + b"\xff" + value[first + 1:]  # a position past the counters
    assert used > 0
    for bad in (value[:5], value[:-1], value + b"\x00", b"\x07" + value[1:], past):
        with pytest.raises(ValueError):
            packing.unpack(bad)


floats = st.floats(allow_nan=True, allow_infinity=True)
float32s = st.floats(width=32, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    counts=st.lists(float32s, min_size=47, max_size=47),
    withheld=st.none() | st.lists(float32s, min_size=47, max_size=47),
    templates=st.lists(st.integers(0, 2**64 - 1), max_size=6),
    template_next=st.integers(0, 5),
    topics=st.integers(0, 2**200),
    scalars=st.tuples(floats, floats, floats, floats),
    cohort=st.integers(0, 2**62),
    sampled_epoch=st.integers(-1, 2**40),
    episodes=st.integers(0, 2**40),
    link=st.none() | st.lists(st.integers(0, 2**32 - 1), min_size=30, max_size=30),
)
def test_any_production_state_round_trips(
    counts: list[float], withheld: list[float] | None, templates: list[int],
    template_next: int, topics: int, scalars: tuple[float, float, float, float],
    cohort: int, sampled_epoch: int, episodes: int, link: list[int] | None,
) -> None:
    landmark, last_ts, gap_mean, gap_dev = scalars
    state = BehaviourState(
        array("f", counts), landmark, None if withheld is None else array("f", withheld),
        array("Q", templates) if templates else _NO_TEMPLATES, template_next, topics,
        last_ts, gap_mean, gap_dev, cohort, sampled_epoch,
    )
    account = AccountState((state,), None, episodes)
    value = packing.pack(account, None if link is None else array("I", link), None)
    assert value[0] == packing.COMPACT
    back, link_back, _ = packing.unpack(value)
    assert back.episodes_opened == episodes
    assert _bits(back.detector_states[0]) == _bits(state)
    assert link_back == (None if link is None else array("I", link))


def test_the_account_tables_shrink_back_once_most_accounts_left(
    hydra: tuple[ApiCall, ...],
) -> None:
    fleet = Fleet()
    for call in hydra:
        fleet.call(call)
    engine, observer, share = fleet.engine, fleet.observer, fleet.suspicion.share
    keys = engine.accounts()
    kept = keys[:10]
    states = {key: engine.account_state(*key) for key in kept}
    for tenant_id, account_id in keys[10:]:
        engine.evict_account(tenant_id, account_id)
        observer.forget_account(account_id)
        share.forget_account(account_id)
    tables = [sys.getsizeof(engine._accounts), sys.getsizeof(observer._accounts),
              sys.getsizeof(share._accounts)]
    engine.shrink()
    observer.shrink()
    share.shrink()
    after = [sys.getsizeof(engine._accounts), sys.getsizeof(observer._accounts),
             sys.getsizeof(share._accounts)]
    assert len(keys) > 200 and all(a * 4 < t for a, t in zip(after, tables, strict=True))
    assert engine.accounts() == kept
    assert all(engine.account_state(*key) is states[key] for key in kept)
