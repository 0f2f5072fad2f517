"""Campaign linking in one process: observe, weigh and cluster, for replay and tests.

The streaming pipeline runs the three stages apart, each where its state is partitioned:

    api calls (by account) --LinkObserver--> observations (by f"{kind}:{key}")
        --KeyEvidence--> edges (one partition) --CampaignClusters--> campaign alerts

`CampaignLinker` chains the same three objects in one process. Split or not, the alerts
are the same provided each stage sees its input in event-time order:

- `LinkObserver` needs each account's calls in order (the account partition gives that);
- `KeyEvidence` needs each key's observations in order; observations of one key from
  different accounts with the *same* `ts` may come in any order only at the price of
  slightly different (equally valid) edges, so a worker should merge its input
  partitions by `ts`;
- `CampaignClusters` needs every edge added before `advance` passes the edge's `ts`
  (advance it to the minimum watermark over its input partitions); the arrival order of
  edges within a tick does not matter.
"""

from __future__ import annotations

import math

from models.linking.clusters import CampaignClusters, CampaignMember
from models.linking.evidence import KeyEvidence
from models.linking.observe import LinkObserver
from models.records import ApiCall
from schemas.alert import Alert

EXPIRE_EVERY_S = 600.0  # event-time seconds between sweeps of idle link keys


class CampaignLinker:
    """The three linking stages chained: calls in, `campaign` alerts out.

    `suspicion` is the account's behavioural suspicion in [0, 1] after the call, as the
    engine reports it (`engine.last_suspicion`), or a stand-in such as
    `models.linking.suspicion.ExtractionShareSuspicion`. Calls must come in event-time
    order. `detected_at` equals `event_time`; callers stamp the emission time.
    """

    def __init__(
        self,
        observer: LinkObserver | None = None,
        evidence: KeyEvidence | None = None,
        clusters: CampaignClusters | None = None,
        account_idle_s: float = 7 * 86400.0,
    ) -> None:
        self.observer = LinkObserver() if observer is None else observer
        self.evidence = KeyEvidence() if evidence is None else evidence
        self.clusters = CampaignClusters() if clusters is None else clusters
        self.account_idle_s = account_idle_s
        self.observations = 0  # observations passed from the first stage to the second
        self.edges = 0  # edges passed from the second stage to the third
        self._next_expiry = -math.inf

    def observe(self, call: ApiCall, suspicion: float) -> list[Alert]:
        """Take one call and return the campaign alerts due up to its `ts`."""
        add_observation, add_edge = self.evidence.add, self.clusters.add
        observations = self.observer.observe(call, suspicion)
        if observations:
            self.observations += len(observations)
            for observation in observations:
                for edge in add_observation(observation):
                    self.edges += 1
                    add_edge(edge)
        return self.advance(call.ts)

    def advance(self, watermark: float) -> list[Alert]:
        """Move event time to `watermark` (seconds): ticks, resolutions, expiry of idle keys
        and of accounts dormant for `account_idle_s`."""
        if watermark >= self._next_expiry:
            self.evidence.expire(watermark)
            self.observer.expire(watermark, self.account_idle_s)
            self._next_expiry = (math.floor(watermark / EXPIRE_EVERY_S) + 1) * EXPIRE_EVERY_S
        return self.clusters.advance(watermark)

    def members(self, campaign_id: str) -> list[CampaignMember]:
        """The current members of an open campaign (see `CampaignClusters.members`)."""
        return self.clusters.members(campaign_id)

    def drain_member_changes(self) -> list[CampaignMember]:
        """Membership rows changed since the last call (`campaign_members` table)."""
        return self.clusters.drain_member_changes()
