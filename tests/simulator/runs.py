"""An in-memory simulated run, indexed the ways the simulator tests look at it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from simulator.generate import Simulation


@dataclass
class SimRun:
    """A generated run held in memory, indexed the ways the tests look at it."""

    sim: Simulation
    events: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    label_of: dict[str, dict[str, Any]] = field(init=False)
    events_of: dict[str, list[dict[str, Any]]] = field(init=False)

    def __post_init__(self) -> None:
        self.label_of = {row["account_id"]: row for row in self.labels}
        self.events_of = defaultdict(list)
        for event in self.events:
            self.events_of[event["account_id"]].append(event)

    def archetype_events(self, archetype: str) -> list[dict[str, Any]]:
        """Every event sent by accounts of ``archetype``, in ts order."""
        return [e for e in self.events if self.label_of[e["account_id"]]["archetype"] == archetype]

    def accounts(self, archetype: str) -> list[str]:
        """Account ids of ``archetype`` that sent events."""
        return [a for a, row in self.label_of.items() if row["archetype"] == archetype]
