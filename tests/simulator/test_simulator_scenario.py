"""Scenario files: names, includes, overrides, and errors that point at the mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.archetypes import ARCHETYPES
from simulator.generate import generate
from simulator.scenario import (
    ScenarioError,
    list_scenarios,
    load_scenario,
    parse_duration,
)


def test_shipped_scenarios_are_listed_and_load() -> None:
    names = list_scenarios()
    assert {"default", "demo", "base", "hydra", "swarm", "lookalikes"} <= set(names)
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.duration_s > 0


def test_default_scenario_has_the_promised_size() -> None:
    sim = generate(load_scenario("default"), seed=7)
    summary = sim.summary()
    assert summary["benign_accounts"] >= 3000
    assert summary["attack_accounts"] >= 1500
    assert summary["duration_s"] == 6 * 3600
    archetypes = {row["archetype"] for row in sim.labels}
    assert archetypes == set(ARCHETYPES)  # every archetype appears


def test_include_merges_and_the_including_file_wins(tmp_path: Path) -> None:
    (tmp_path / "parent.toml").write_text(
        'duration = "2h"\n[benign.small_tenant]\naccounts = 10\nrate_per_hour = 5.0\n'
    )
    (tmp_path / "child.toml").write_text(
        'include = ["parent.toml"]\nname = "child"\n'
        "[benign.small_tenant]\naccounts = 20\n"
        '[attack.hydra_b]\narchetype = "hydra"\naccounts = 3\n'
    )
    scenario = load_scenario(str(tmp_path / "child.toml"))
    assert scenario.name == "child"
    assert scenario.duration_s == 7200.0
    tenants = scenario.population("small_tenant")
    assert tenants.knobs["accounts"] == 20
    assert tenants.knobs["rate_per_hour"] == 5.0  # inherited from the included file
    hydra = scenario.population("hydra_b")
    assert hydra.archetype == "hydra" and hydra.role == "attack"
    assert hydra.knobs["cot_share"] == ARCHETYPES["hydra"]["cot_share"]


def test_shipped_scenarios_can_be_included_by_name(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text('include = ["base.toml"]\n[attack.swarm]\naccounts = 9\n')
    scenario = load_scenario(str(tmp_path / "mine.toml"))
    assert scenario.population("swarm").knobs["accounts"] == 9
    assert scenario.population("enterprise").knobs["accounts"] == 300


def test_overrides_accept_nested_and_dotted_keys() -> None:
    nested = load_scenario("demo", {"attack": {"hydra": {"accounts": 7}}, "duration": "10m"})
    dotted = load_scenario("demo", {"attack.hydra.accounts": 7, "duration": 600})
    assert nested.population("hydra").knobs["accounts"] == 7
    assert dotted.population("hydra").knobs["accounts"] == 7
    assert nested.duration_s == dotted.duration_s == 600.0


def test_fleet_scale_multiplies_account_counts() -> None:
    scenario = load_scenario("demo")
    full = generate(scenario, seed=7, duration_s=600.0)
    half = generate(scenario, seed=7, duration_s=600.0, fleet_scale=0.5)
    assert 0.4 < len(half.labels) / len(full.labels) < 0.6


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[benign.small_tenant]\nacounts = 3\n", "no knob 'acounts'"),
        ("[benign.teleporter]\naccounts = 3\n", "unknown archetype 'teleporter'"),
        ("[benign.hydra]\naccounts = 3\n", "belongs under [attack]"),
        ("durration = '1h'\n", "unknown top-level keys"),
        ("[gateway]\nomit_everything = 1.0\n", "no knob 'omit_everything'"),
    ],
)
def test_mistakes_are_errors_naming_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_scenario(str(path))


def test_include_cycles_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('include = ["b.toml"]\n')
    (tmp_path / "b.toml").write_text('include = ["a.toml"]\n')
    with pytest.raises(ScenarioError, match="include cycle"):
        load_scenario(str(tmp_path / "a.toml"))


def test_unknown_scenario_names_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match="demo"):
        load_scenario("no-such-scenario")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6h", 21600.0), ("90m", 5400.0), ("45s", 45.0), ("1d", 86400.0), ("3600", 3600.0), (2, 2.0)],
)
def test_durations_parse(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5m", "0", "6 hours"])
def test_bad_durations_are_rejected(text: str) -> None:
    with pytest.raises(ScenarioError):
        parse_duration(text)
