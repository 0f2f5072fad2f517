"""Generated events obey the wire contract and the labels agree with them."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from simulator.generate import generate
from simulator.scenario import load_scenario
from tests.simulator.contract_check import contract_problems
from tests.simulator.runs import SimRun


def test_every_event_is_valid_per_the_contract(fleet: SimRun, demo: SimRun) -> None:
    for run in (fleet, demo):
        bad = [(e["event_id"], p) for e in run.events if (p := contract_problems(e))]
        assert not bad[:5], f"{len(bad)} invalid events, e.g. {bad[:5]}"


@pytest.mark.skipif(
    importlib.util.find_spec("schemas.event") is None, reason="schemas.event not written yet"
)
def test_every_event_validates_with_the_pydantic_model(fleet: SimRun) -> None:
    from schemas.event import ApiCallEvent

    for event in fleet.events:
        ApiCallEvent.model_validate(event)


@pytest.mark.skipif(
    importlib.util.find_spec("schemas.labels") is None, reason="schemas.labels not written yet"
)
def test_every_label_validates_with_the_pydantic_model(fleet: SimRun) -> None:
    from schemas.labels import AccountLabel

    for row in fleet.labels:
        AccountLabel.model_validate(row)


def test_events_are_in_non_decreasing_event_time(fleet: SimRun) -> None:
    stamps = [e["ts"] for e in fleet.events]
    # fixed-width UTC stamps sort lexicographically in time order
    assert stamps == sorted(stamps)
    assert stamps[0] >= fleet.sim.summary()["start"]
    assert stamps[-1] < fleet.sim.summary()["end"]


def test_event_ids_are_unique(fleet: SimRun) -> None:
    ids = [e["event_id"] for e in fleet.events]
    assert len(set(ids)) == len(ids)


def test_every_account_in_events_is_labelled_exactly_once(fleet: SimRun) -> None:
    labelled = [row["account_id"] for row in fleet.labels]
    assert len(set(labelled)) == len(labelled)
    assert set(fleet.events_of) == set(labelled)
    for account_id, events in fleet.events_of.items():
        assert {e["tenant_id"] for e in events} == {fleet.label_of[account_id]["tenant_id"]}


def test_label_fields_follow_the_contract(fleet: SimRun) -> None:
    for row in fleet.labels:
        assert set(row) == {
            "tenant_id", "account_id", "label", "archetype", "campaign_id", "attack_start"
        }  # fmt: skip
        if row["label"] == "benign":
            assert row["campaign_id"] is None and row["attack_start"] is None
        else:
            assert row["label"] == "attack"
            assert row["campaign_id"] and row["attack_start"]


def test_attack_start_is_the_first_event_of_the_account(fleet: SimRun) -> None:
    attackers = [row for row in fleet.labels if row["label"] == "attack"]
    assert len(attackers) > 50
    for row in attackers:
        assert row["attack_start"] == fleet.events_of[row["account_id"]][0]["ts"]


def test_labels_are_known_before_any_event_is_generated(make_run: Callable[..., SimRun]) -> None:
    run = make_run("demo", duration_s=300.0)
    fresh = generate(load_scenario("demo"), seed=7, duration_s=300.0)
    assert fresh.labels == run.labels


def test_start_and_duration_overrides_move_the_window() -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    sim = generate(load_scenario("demo"), seed=1, duration_s=120.0, fleet_scale=0.2, start=start)
    events = list(sim.events())
    assert events
    assert events[0]["ts"] >= "2027-01-01T00:00:00.000Z"
    assert events[-1]["ts"] < "2027-01-01T00:02:00.000Z"


def test_events_are_json_serialisable(demo: SimRun) -> None:
    json.dumps(demo.events[:100])
