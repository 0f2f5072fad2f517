"""Factories for simulated runs: small scenarios and short windows so tests take seconds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from simulator.generate import generate
from simulator.scenario import load_scenario
from tests.simulator.runs import SimRun

_cache: dict[tuple[Any, ...], SimRun] = {}


def _run(
    scenario: str = "default",
    *,
    seed: int = 7,
    duration_s: float | None = None,
    fleet_scale: float | None = None,
    overrides: dict[str, Any] | None = None,
) -> SimRun:
    key = (scenario, seed, duration_s, fleet_scale, tuple(sorted((overrides or {}).items())))
    if key not in _cache:
        sim = generate(
            load_scenario(scenario, overrides),
            seed=seed,
            duration_s=duration_s,
            fleet_scale=fleet_scale,
        )
        _cache[key] = SimRun(sim, list(sim.events()), sim.labels)
    return _cache[key]


@pytest.fixture(scope="session")
def make_run() -> Callable[..., SimRun]:
    """Factory: ``make_run(scenario, seed=, duration_s=, fleet_scale=, overrides=)``, cached."""
    return _run


@pytest.fixture(scope="session")
def fleet(make_run: Callable[..., SimRun]) -> SimRun:
    """Every archetype at 5% of the default fleet over the full six hours, no omitted groups."""
    return make_run(
        "default",
        fleet_scale=0.05,
        overrides={"gateway.omit_client_share": 0.0, "gateway.omit_prompt_share": 0.0},
    )


@pytest.fixture(scope="session")
def demo(make_run: Callable[..., SimRun]) -> SimRun:
    """The demo scenario as shipped."""
    return make_run("demo")
