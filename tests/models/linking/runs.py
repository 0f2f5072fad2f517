"""Simulated runs through campaign linking, and the issue's bar measured on their alerts.

`simulated(...)` is cached per process: scenario tests share one run per configuration.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from models.linking import (
    CampaignClusters,
    CampaignLinker,
    ExtractionShareSuspicion,
    KeyEvidence,
    LinkEdge,
    LinkObservation,
    LinkObserver,
)
from models.records import ApiCall
from schemas.alert import Alert
from schemas.event import ApiCallEvent
from simulator.generate import generate
from simulator.scenario import load_scenario


@dataclass(frozen=True, eq=False)
class SimulatedRun:
    """A scenario's calls in event-time order, the stand-in suspicion of each, its labels."""

    calls: tuple[ApiCall, ...]
    suspicions: tuple[float, ...]
    labels: tuple[Mapping[str, Any], ...]
    by_account: Mapping[str, Mapping[str, Any]]

    def label_of(self, account_id: str) -> Mapping[str, Any]:
        return self.by_account[account_id]


@cache
def simulated(name: str, duration_s: float, fleet_scale: float, seed: int = 7) -> SimulatedRun:
    """A scenario simulated, validated at the edge like live traffic, as `ApiCall`s."""
    sim = generate(load_scenario(name), seed=seed, duration_s=duration_s, fleet_scale=fleet_scale)
    calls = tuple(ApiCall.from_event(ApiCallEvent.model_validate(e)) for e in sim.events())
    stand_in = ExtractionShareSuspicion()
    suspicions = tuple(stand_in.update(call) for call in calls)
    labels = tuple(sim.labels)
    return SimulatedRun(calls, suspicions, labels, {row["account_id"]: row for row in labels})


def link_in_process(run: SimulatedRun, linker: CampaignLinker | None = None) -> list[Alert]:
    """Every alert of a `CampaignLinker` over the run, flushed at its last event."""
    linker = CampaignLinker() if linker is None else linker
    alerts = [
        alert
        for call, suspicion in zip(run.calls, run.suspicions, strict=True)
        for alert in linker.observe(call, suspicion)
    ]
    alerts.extend(linker.advance(run.calls[-1].ts))
    return alerts


def _shard(text: str, workers: int) -> int:
    return zlib.crc32(text.encode()) % workers


def link_split(run: SimulatedRun, workers: int, ties_by_account: bool = False) -> list[Alert]:
    """The three stages as the pipeline runs them: `workers` observers partitioned by
    account, `workers` evidence stages partitioned by key, one cluster stage.

    Each stage consumes the merge of its input partitions in event-time order; ties in
    `ts` are broken by the original call order, or with `ties_by_account` by account id
    (what a worker merging partitions without a global order could do). The cluster
    stage is advanced to each edge's `ts` before the edge is added, and to the run's
    last event at the end.
    """
    observers = [LinkObserver() for _ in range(workers)]
    evidences = [KeyEvidence() for _ in range(workers)]
    clusters = CampaignClusters()
    # stage 1: each account's calls in order on its partition
    by_partition: list[list[tuple[float, Any, LinkObservation]]] = [[] for _ in range(workers)]
    for index, (call, suspicion) in enumerate(zip(run.calls, run.suspicions, strict=True)):
        part = _shard(call.account_id, workers)
        tie = call.account_id if ties_by_account else index
        for obs in observers[part].observe(call, suspicion):
            by_partition[_shard(obs.hub, workers)].append((obs.ts, tie, obs))
    # stage 2: each key partition merges its input by event time
    edges: list[tuple[float, LinkEdge]] = []
    for part, inbox in enumerate(by_partition):
        inbox.sort(key=lambda item: (item[0], item[1]))
        edges.extend((obs.ts, edge) for _, _, obs in inbox for edge in evidences[part].add(obs))
    # stage 3: one place, edges by event time from all partitions
    edges.sort(key=lambda item: item[0])
    alerts: list[Alert] = []
    for ts, edge in edges:
        alerts.extend(clusters.advance(ts))
        clusters.add(edge)
    alerts.extend(clusters.advance(run.calls[-1].ts))
    return alerts


def membership_precision(run: SimulatedRun, alerts: Iterable[Alert]) -> float:
    """Of the accounts listed by firing campaign alerts, the share in the alert's majority
    true campaign (pooled over alerts, as the scorecard counts it)."""
    listed = matched = 0
    for alert in alerts:
        if alert.kind != "campaign" or alert.status != "firing":
            continue
        counts: dict[str | None, int] = defaultdict(int)
        for ref in alert.accounts:
            counts[run.label_of(ref.account_id)["campaign_id"]] += 1
        listed += len(alert.accounts)
        matched += max((n for c, n in counts.items() if c is not None), default=0)
    return matched / listed if listed else 1.0


def named_archetypes(run: SimulatedRun, alerts: Iterable[Alert]) -> dict[str, int]:
    """Benign accounts named by firing campaign alerts, counted by archetype."""
    named: dict[str, set[str]] = defaultdict(set)
    for alert in alerts:
        if alert.kind == "campaign" and alert.status == "firing":
            for ref in alert.accounts:
                row = run.label_of(ref.account_id)
                if row["label"] == "benign":
                    named[row["archetype"]].add(ref.account_id)
    return {archetype: len(accounts) for archetype, accounts in named.items()}
