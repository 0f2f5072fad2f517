"""Fleet simulator and detection scorecard.

``load_scenario`` reads a named, composable TOML scenario; ``generate`` plans a
deterministic run whose ``labels`` are known up front and whose ``events()`` stream the
fleet's API-call events in event-time order; ``write_scenario`` writes the labelled files;
``score_alerts`` measures a detector's alerts against the labels.
"""

from __future__ import annotations

from simulator.generate import Simulation, generate, write_scenario
from simulator.scenario import Scenario, list_scenarios, load_scenario
from simulator.scorecard import Scorecard, score_alerts

__all__ = [
    "Scenario",
    "Scorecard",
    "Simulation",
    "generate",
    "list_scenarios",
    "load_scenario",
    "score_alerts",
    "write_scenario",
]
