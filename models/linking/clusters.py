"""Stage 3 of campaign linking, in one place: linked accounts become campaigns and alerts.

`CampaignClusters` receives every `LinkEdge` (a small stream: only accounts linked
through keys that weigh something) and keeps a graph of accounts and link keys ("hubs").
Every `tick_s` seconds of event time it takes the edges that arrived before the tick,
finds the connected components of the graph restricted to *qualified* links (hub weight
at least `link_min`, account suspicion at least `join_min`) with a union-find, and
turns them into campaigns:

- a component with at least `min_members` accounts whose mean suspicion reaches
  `min_suspicion` and whose score (`mean suspicion * linkage`, linkage being the
  noisy-or over link kinds of the strongest shared key of each kind) reaches
  `fire_score`, with evidence in the last `quiet_s` seconds, opens a campaign and emits a
  `firing` alert;
- an open campaign emits another `firing` alert with the same `dedup_key` when it grows
  by `growth` (a share of the size last alerted), when its severity rises, or when it
  has members not yet named in an alert and its last alert is `update_s` old;
- it resolves when its newest evidence is more than `quiet_s` old, when it has no linked
  members left, or when it merges into an older campaign (which then carries on).

Campaign ids survive growth and merges: a component keeps the id of the campaign most of
whose members it holds, and when components of several campaigns merge, the earliest
alerted id survives. A new campaign's id is a uuid5 of its earliest-linked member and that
member's first link time, so replays reproduce it; `alert_id` is a uuid5 of the campaign
id, the alert's sequence number and its status.

Links that only qualify together with others never merge anything on their own: a weak
hub (a VPN exit, a common onset) contributes to the reasons and the linkage of a
component that strong hubs already hold together. Links and accounts without an edge for
`edge_ttl_s` seconds are forgotten. A link that stops qualifying (its hub's weight or
its account's suspicion fell) is taken out at the next sweep, every ten minutes of event
time, when the forest is rebuilt; until then the union it made stands.

Order: edges must be added before `advance` moves past their `ts`; within that, their
arrival order does not matter (pending edges are applied sorted by `(ts, hub, account,
seq)` at each tick), so the stage gives the same alerts whether its edges came from one
evidence worker or several.
"""

from __future__ import annotations

import math
import uuid
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from models.errors import ConfigurationError
from models.linking.evidence import LinkEdge
from models.linking.keys import KINDS
from schemas.alert import SEVERITIES, AccountRef, Alert, AlertReason, AlertStatus

AccountKey = tuple[str, str]  # (tenant_id, account_id)

_CAMPAIGN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:distillwatch:campaign:v1")
_ALERT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:distillwatch:campaign-alert:v1")
_KIND_ORDER = {kind: rank for rank, kind in enumerate(KINDS)}
_SWEEP_EVERY_S = 600.0  # event-time seconds between expiry sweeps and forest rebuilds


@dataclass(frozen=True, slots=True)
class CampaignMember:
    """One account of a campaign: linked since `since` (event time of its first link,
    seconds) through keys of `link_kinds`. `until` is the event time it stopped being a
    member (it left, or the campaign resolved), None while it is one. Rows of the
    `campaign_members` table."""

    campaign_id: str
    tenant_id: str
    account_id: str
    since: float
    link_kinds: tuple[str, ...]
    until: float | None = None


class _Hub:
    __slots__ = ("kind", "key", "weight", "version", "links")

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self.weight = 0.0
        self.version = (-math.inf, -1)  # (ts, seq) of the edge that set `weight`
        self.links: dict[AccountKey, float] = {}  # account -> ts of its latest edge


class _Account:
    __slots__ = ("suspicion", "version", "hubs", "first_ts", "last_ts", "first_seen")

    def __init__(self, ts: float, first_seen: float) -> None:
        self.suspicion = 0.0
        self.version = -math.inf
        self.hubs: set[str] = set()
        self.first_ts = ts
        self.last_ts = ts
        self.first_seen = first_seen


class _Campaign:
    __slots__ = (
        "campaign_id",
        "first_ts",
        "first_alert_ts",
        "alerts",
        "alerted_size",
        "severity",
        "last_alert_tick",
        "last_evidence",
        "listed",
        "roster",
        "score",
        "reasons",
    )

    def __init__(self, campaign_id: str, tick: float) -> None:
        self.campaign_id = campaign_id
        self.first_ts = math.inf
        self.first_alert_ts = tick
        self.alerts = 0
        self.alerted_size = 0
        self.severity = 0
        self.last_alert_tick = tick
        self.last_evidence = -math.inf
        self.listed: set[AccountKey] = set()
        self.roster: dict[AccountKey, tuple[float, tuple[str, ...]]] = {}
        self.score = 0.0
        self.reasons: list[AlertReason] = []


@dataclass(slots=True)
class _Component:
    """What a connected component looks like at one tick."""

    accounts: list[AccountKey]
    shared: set[str]  # hubs linking two or more of its accounts
    suspicion: float
    suspicious_share: float
    linkage: float
    last_evidence: float
    first_ts: float
    tenants: int
    kind_hubs: dict[str, tuple[int, float]]  # kind -> (shared hubs, max weight)
    onset_span: float

    @property
    def score(self) -> float:
        return self.suspicion * self.linkage


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class CampaignClusters:
    """Union-find over accounts and link keys; campaign episodes and their alerts.

    `detected_at` is set equal to `event_time` (this stage reads no clock); callers that
    emit alerts stamp the real emission time. See the module docstring for the rules.

    >>> from models.linking.evidence import LinkEdge
    >>> clusters = CampaignClusters(min_members=3)
    >>> for i in range(4):
    ...     clusters.add(LinkEdge("tls", "t13d_campaign_build", f"org_{i}", f"key_{i}",
    ...                           weight=0.9, suspicion=0.8, ts=100.0 + i, seq=i,
    ...                           members=i + 1, first_seen=100.0 + i))
    >>> [(a.kind, a.status, len(a.accounts), a.tenant_id) for a in clusters.advance(180.0)]
    [('campaign', 'firing', 4, None)]
    >>> [a.status for a in clusters.advance(103.0 + 3600 + 60)]
    ['resolved']
    """

    def __init__(
        self,
        link_min: float = 0.45,
        join_min: float = 0.3,
        min_members: int = 5,
        min_suspicion: float = 0.45,
        fire_score: float = 0.25,
        growth: float = 0.25,
        update_s: float = 600.0,
        quiet_s: float = 3600.0,
        edge_ttl_s: float = 5400.0,
        tick_s: float = 60.0,
        max_listed: int = 1000,
        severity_scores: tuple[float, float, float] = (0.45, 0.6, 0.75),
        severity_sizes: tuple[int, int, int] = (10, 25, 100),
    ) -> None:
        if not 0.0 < link_min <= 1.0 or not 0.0 <= join_min <= 1.0:
            raise ConfigurationError(
                f"need 0 < link_min <= 1 and 0 <= join_min <= 1, got {link_min}, {join_min}"
            )
        if min_members < 2 or max_listed < 1:
            raise ConfigurationError(
                f"need min_members >= 2 and max_listed >= 1, got {min_members}, {max_listed}"
            )
        if not all(x > 0 for x in (update_s, quiet_s, edge_ttl_s, tick_s)) or growth < 0:
            raise ConfigurationError(
                "update_s, quiet_s, edge_ttl_s and tick_s must be positive and growth >= 0"
            )
        if len(severity_scores) != 3 or list(severity_scores) != sorted(severity_scores):
            raise ConfigurationError(f"severity_scores must be 3 ascending, {severity_scores}")
        if len(severity_sizes) != 3 or list(severity_sizes) != sorted(severity_sizes):
            raise ConfigurationError(f"severity_sizes must be 3 ascending, {severity_sizes}")
        self.link_min = link_min
        self.join_min = join_min
        self.min_members = min_members
        self.min_suspicion = min_suspicion
        self.fire_score = fire_score
        self.growth = growth
        self.update_s = update_s
        self.quiet_s = quiet_s
        self.edge_ttl_s = edge_ttl_s
        self.tick_s = tick_s
        self.max_listed = max_listed
        self.severity_scores = tuple(severity_scores)
        self.severity_sizes = tuple(severity_sizes)
        self._pending: list[LinkEdge] = []
        self._hubs: dict[str, _Hub] = {}
        self._accounts: dict[AccountKey, _Account] = {}
        self._parent: dict[object, object] = {}
        self._in_forest: set[AccountKey] = set()
        self._new_links: list[tuple[AccountKey, str]] = []
        self._rebuild = False  # rebuild the forest at this tick
        self._stale = False  # a link stopped qualifying: rebuild at the next sweep
        self._changed = False
        self._components: list[_Component] = []
        self._campaigns: dict[str, _Campaign] = {}
        self._campaign_of: dict[AccountKey, str] = {}
        self._used_ids: set[str] = set()
        self._member_changes: list[CampaignMember] = []
        self._tick: float | None = None
        self._next_sweep = -math.inf
        self._watermark = -math.inf

    # ---------------------------------------------------------------- public

    @property
    def watermark(self) -> float:
        """The largest event time passed to `advance` (seconds)."""
        return self._watermark

    @property
    def open_campaigns(self) -> list[str]:
        """Ids of the campaigns currently open, oldest alert first."""
        return sorted(self._campaigns, key=lambda cid: self._campaigns[cid].first_alert_ts)

    @property
    def accounts_tracked(self) -> int:
        """Accounts with at least one live edge."""
        return len(self._accounts)

    @property
    def links_tracked(self) -> int:
        """Live account-to-key links."""
        return sum(len(hub.links) for hub in self._hubs.values())

    def add(self, edge: LinkEdge) -> None:
        """Queue an edge; it takes effect at the first tick after its `ts`."""
        self._pending.append(edge)
        if self._tick is None:
            self._tick = (math.floor(edge.ts / self.tick_s) + 1) * self.tick_s

    def advance(self, watermark: float) -> list[Alert]:
        """Run every tick up to `watermark` (event time, seconds) and return its alerts.

        Alerts come in tick order; within a tick resolutions first, then firing alerts,
        each by campaign id. How often `advance` is called does not change the alerts.
        """
        if watermark > self._watermark:
            self._watermark = watermark
        alerts: list[Alert] = []
        while self._tick is not None and self._tick <= self._watermark:
            tick = self._tick
            self._apply_pending(tick)
            alerts.extend(self._evaluate(tick))
            if self._campaigns:
                self._tick = tick + self.tick_s
            elif self._pending:
                earliest = min(edge.ts for edge in self._pending)
                self._tick = max(tick, math.floor(earliest / self.tick_s) * self.tick_s)
                self._tick += self.tick_s
            else:
                self._tick = None  # idle until the next edge
        return alerts

    def members(self, campaign_id: str) -> list[CampaignMember]:
        """The current members of an open campaign, by first link time (empty if not open)."""
        campaign = self._campaigns.get(campaign_id)
        if campaign is None:
            return []
        return [
            CampaignMember(campaign_id, tenant_id, account_id, since, kinds)
            for (tenant_id, account_id), (since, kinds) in sorted(
                campaign.roster.items(), key=lambda item: (item[1][0], item[0])
            )
        ]

    def drain_member_changes(self) -> list[CampaignMember]:
        """Membership rows that changed since the last call, oldest first: an account that
        joined or changed link kinds (`until` None) or left (`until` set). Folding them by
        `(campaign_id, account_id)`, last row wins, gives every campaign's membership."""
        changes, self._member_changes = self._member_changes, []
        return changes

    # ---------------------------------------------------------------- graph

    def _apply_pending(self, tick: float) -> None:
        pending = self._pending
        if not pending:
            return
        due = [edge for edge in pending if edge.ts < tick]
        if not due:
            return
        self._pending = [edge for edge in pending if edge.ts >= tick]
        due.sort(key=lambda e: (e.ts, e.kind, e.key, e.tenant_id, e.account_id, e.seq))
        for edge in due:
            self._apply(edge)
        self._changed = True

    def _apply(self, edge: LinkEdge) -> None:
        hub_id = f"{edge.kind}:{edge.key}"
        hub = self._hubs.get(hub_id)
        if hub is None:
            hub = _Hub(edge.kind, edge.key)
            self._hubs[hub_id] = hub
        account_key = (edge.tenant_id, edge.account_id)
        account = self._accounts.get(account_key)
        if account is None:
            account = _Account(edge.ts, edge.first_seen)
            self._accounts[account_key] = account
        link_min, join_min = self.link_min, self.join_min
        version = (edge.ts, edge.seq)
        if version > hub.version:
            hub.version = version
            was = hub.weight >= link_min
            hub.weight = edge.weight
            now = hub.weight >= link_min
            if was and not now:
                self._stale = True
            elif now and not was:
                self._new_links.extend((member, hub_id) for member in hub.links)
        if edge.ts >= account.version:
            account.version = edge.ts
            was = account.suspicion >= join_min
            account.suspicion = edge.suspicion
            now = account.suspicion >= join_min
            if was and not now:
                self._stale = True
            elif now and not was:
                self._new_links.extend((account_key, linked) for linked in account.hubs)
        if edge.ts > account.last_ts:
            account.last_ts = edge.ts
        if account_key not in hub.links:
            self._new_links.append((account_key, hub_id))
        hub.links[account_key] = max(edge.ts, hub.links.get(account_key, -math.inf))
        account.hubs.add(hub_id)

    def _expire(self, tick: float) -> None:
        cutoff = tick - self.edge_ttl_s
        link_min, join_min = self.link_min, self.join_min
        accounts = self._accounts
        for hub_id in list(self._hubs):
            hub = self._hubs[hub_id]
            stale = [key for key, ts in hub.links.items() if ts < cutoff]
            for key in stale:
                del hub.links[key]
                account = accounts[key]
                account.hubs.discard(hub_id)
                if hub.weight >= link_min and account.suspicion >= join_min:
                    self._stale = True
                if not account.hubs:
                    del accounts[key]
            if not hub.links:
                del self._hubs[hub_id]

    def _find(self, node: object) -> object:
        parent = self._parent
        root = parent.setdefault(node, node)
        while root != parent[root]:
            parent[root] = parent[parent[root]]
            root = parent[root]
        return root

    def _union(self, a: object, b: object) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[rb] = ra

    def _link(self, account_key: AccountKey, hub_id: str) -> None:
        hub = self._hubs.get(hub_id)
        account = self._accounts.get(account_key)
        if (
            hub is None
            or account is None
            or account_key not in hub.links
            or hub.weight < self.link_min
            or account.suspicion < self.join_min
        ):
            return
        self._union(hub_id, account_key)
        self._in_forest.add(account_key)

    def _components_now(self) -> list[_Component]:
        if self._rebuild:
            self._parent = {}
            self._in_forest = set()
            self._new_links = []
            self._rebuild = self._stale = False
            accounts, join_min = self._accounts, self.join_min
            for hub_id, hub in self._hubs.items():
                if hub.weight >= self.link_min:
                    for account_key in hub.links:
                        if accounts[account_key].suspicion >= join_min:
                            self._union(hub_id, account_key)
                            self._in_forest.add(account_key)
        else:
            for account_key, hub_id in self._new_links:
                self._link(account_key, hub_id)
            self._new_links = []
        groups: dict[object, list[AccountKey]] = {}
        for account_key in self._in_forest:
            groups.setdefault(self._find(account_key), []).append(account_key)
        campaign_of = self._campaign_of
        components = [
            self._describe(sorted(group))
            for group in groups.values()
            if len(group) >= self.min_members or any(key in campaign_of for key in group)
        ]
        components.sort(key=lambda c: c.accounts[0])
        return components

    def _describe(self, members: list[AccountKey]) -> _Component:
        accounts, hubs = self._accounts, self._hubs
        inside: dict[str, int] = {}
        suspicion = 0.0
        suspicious = 0
        last_evidence = -math.inf
        first_ts = math.inf
        earliest_seen = math.inf
        latest_seen = -math.inf
        for key in members:
            account = accounts[key]
            for hub_id in account.hubs:
                inside[hub_id] = inside.get(hub_id, 0) + 1
            suspicion += account.suspicion
            suspicious += account.suspicion >= 0.5
            last_evidence = max(last_evidence, account.last_ts)
            first_ts = min(first_ts, account.first_ts)
            earliest_seen = min(earliest_seen, account.first_seen)
            latest_seen = max(latest_seen, account.first_seen)
        shared = {h for h, n in inside.items() if n >= 2 and hubs[h].weight > 0.0}
        kind_hubs: dict[str, tuple[int, float]] = {}
        for hub_id in sorted(shared):  # a fixed order: the product's last digit depends on it
            hub = hubs[hub_id]
            count, best = kind_hubs.get(hub.kind, (0, 0.0))
            kind_hubs[hub.kind] = (count + 1, max(best, hub.weight))
        calm = 1.0
        for _, best in kind_hubs.values():
            calm *= 1.0 - best
        return _Component(
            accounts=members,
            shared=shared,
            suspicion=suspicion / len(members),
            suspicious_share=suspicious / len(members),
            linkage=1.0 - calm,
            last_evidence=last_evidence,
            first_ts=first_ts,
            tenants=len({tenant for tenant, _ in members}),
            kind_hubs=dict(
                sorted(kind_hubs.items(), key=lambda item: _KIND_ORDER.get(item[0], 99))
            ),
            onset_span=latest_seen - earliest_seen,
        )

    def _kinds(self, key: AccountKey, shared: set[str]) -> tuple[str, ...]:
        """The kinds of the keys that link `key` to the rest of its component."""
        hubs = self._hubs
        own = {hubs[h].kind for h in self._accounts[key].hubs if h in shared}
        return tuple(sorted(own, key=lambda kind: _KIND_ORDER.get(kind, 99)))

    # ---------------------------------------------------------------- campaigns

    def _evaluate(self, tick: float) -> list[Alert]:
        if tick >= self._next_sweep:
            self._expire(tick)
            if self._stale:
                self._rebuild = self._changed = True
            self._next_sweep = (math.floor(tick / _SWEEP_EVERY_S) + 1) * _SWEEP_EVERY_S
        if self._changed:
            self._components = self._components_now()
            self._changed = False
        components = self._components
        campaigns = self._campaigns
        resolved: list[Alert] = []
        firing: list[Alert] = []

        # which component each open campaign lives on: the one holding most of its members
        where = {key: index for index, c in enumerate(components) for key in c.accounts}
        claims: dict[int, list[_Campaign]] = {}
        for campaign_id in sorted(campaigns):
            campaign = campaigns[campaign_id]
            overlap: dict[int, int] = {}
            for key in campaign.roster:
                index = where.get(key)
                if index is not None:
                    overlap[index] = overlap.get(index, 0) + 1
            if not overlap:
                resolved.append(self._resolve(campaign, "its accounts are no longer linked"))
                continue
            best = max(overlap, key=lambda i: (overlap[i], -i))
            claims.setdefault(best, []).append(campaign)

        for index, component in enumerate(components):
            claimants = claims.get(index)
            if claimants:
                claimants.sort(key=lambda c: (c.first_alert_ts, c.campaign_id))
                survivor = claimants[0]
                for absorbed in claimants[1:]:
                    resolved.append(
                        self._resolve(absorbed, f"merged into campaign {survivor.campaign_id}")
                    )
                if component.last_evidence < tick - self.quiet_s:
                    resolved.append(self._resolve(survivor, "no new link evidence"))
                    continue
                alert = self._update(survivor, component, tick)
            else:
                alert = self._open(component, tick)
            if alert is not None:
                firing.append(alert)
        resolved.sort(key=lambda a: a.campaign_id or "")
        firing.sort(key=lambda a: a.campaign_id or "")
        return resolved + firing

    def _severity(self, component: _Component) -> int:
        by_score = bisect_right(self.severity_scores, component.score)
        by_size = bisect_right(self.severity_sizes, len(component.accounts))
        return min(by_score, by_size)

    def _open(self, component: _Component, tick: float) -> Alert | None:
        if (
            len(component.accounts) < self.min_members
            or component.suspicion < self.min_suspicion
            or component.score < self.fire_score
            or component.last_evidence < tick - self.quiet_s
        ):
            return None
        accounts = self._accounts
        first = min(component.accounts, key=lambda k: (accounts[k].first_ts, k))
        base = f"{first[0]}/{first[1]}@{accounts[first].first_ts:.3f}"
        campaign_id = str(uuid.uuid5(_CAMPAIGN_NAMESPACE, base))
        number = 1
        while campaign_id in self._used_ids:
            number += 1
            campaign_id = str(uuid.uuid5(_CAMPAIGN_NAMESPACE, f"{base}#{number}"))
        self._used_ids.add(campaign_id)
        campaign = _Campaign(campaign_id, tick)
        self._campaigns[campaign_id] = campaign
        self._set_roster(campaign, component, tick)
        return self._fire(campaign, component, tick)

    def _update(self, campaign: _Campaign, component: _Component, tick: float) -> Alert | None:
        self._set_roster(campaign, component, tick)
        size = len(component.accounts)
        grown = size >= max(campaign.alerted_size + 1, campaign.alerted_size * (1 + self.growth))
        unlisted = any(key not in campaign.listed for key in component.accounts)
        due = unlisted and tick - campaign.last_alert_tick >= self.update_s
        if grown or due or self._severity(component) > campaign.severity:
            return self._fire(campaign, component, tick)
        return None

    def _set_roster(self, campaign: _Campaign, component: _Component, tick: float) -> None:
        # Link kinds of members already on the roster are refreshed when an alert fires.
        accounts = self._accounts
        roster: dict[AccountKey, tuple[float, tuple[str, ...]]] = {}
        changes = self._member_changes
        old = campaign.roster
        for key in component.accounts:
            previous = old.get(key)
            if previous is None:
                since, kinds = accounts[key].first_ts, self._kinds(key, component.shared)
                changes.append(CampaignMember(campaign.campaign_id, *key, since, kinds))
                self._campaign_of[key] = campaign.campaign_id
                roster[key] = (since, kinds)
            else:
                roster[key] = previous
        for key, (since, kinds) in old.items():
            if key not in roster:
                changes.append(CampaignMember(campaign.campaign_id, *key, since, kinds, tick))
                if self._campaign_of.get(key) == campaign.campaign_id:
                    del self._campaign_of[key]
                campaign.listed.discard(key)
        campaign.roster = roster
        campaign.first_ts = min(campaign.first_ts, component.first_ts)
        campaign.last_evidence = component.last_evidence

    def _fire(self, campaign: _Campaign, component: _Component, tick: float) -> Alert:
        campaign.severity = max(campaign.severity, self._severity(component))
        campaign.alerted_size = len(component.accounts)
        campaign.last_alert_tick = tick
        campaign.score = component.score
        roster = campaign.roster
        kind_accounts: dict[str, int] = {}
        for key, (since, kinds) in roster.items():
            now = self._kinds(key, component.shared)
            if now != kinds:
                roster[key] = (since, now)
                self._member_changes.append(CampaignMember(campaign.campaign_id, *key, since, now))
            for kind in now:
                kind_accounts[kind] = kind_accounts.get(kind, 0) + 1
        order = sorted(roster, key=lambda k: (k in campaign.listed, roster[k][0], k))
        listed = order[: self.max_listed]
        campaign.listed.update(listed)
        campaign.reasons = self._reasons(component, kind_accounts, len(listed))
        return self._alert(campaign, "firing", listed, component.last_evidence)

    def _resolve(self, campaign: _Campaign, why: str) -> Alert:
        del self._campaigns[campaign.campaign_id]
        until = campaign.last_evidence
        for key, (since, kinds) in campaign.roster.items():
            self._member_changes.append(
                CampaignMember(campaign.campaign_id, *key, since, kinds, until)
            )
            if self._campaign_of.get(key) == campaign.campaign_id:
                del self._campaign_of[key]
        roster = campaign.roster
        listed = sorted(roster, key=lambda k: (roster[k][0], k))[: self.max_listed]
        campaign.reasons = [
            AlertReason(signal="campaign_resolved", value=0.0, detail=why),
            *campaign.reasons,
        ]
        return self._alert(campaign, "resolved", listed, campaign.last_evidence)

    def _alert(
        self,
        campaign: _Campaign,
        status: AlertStatus,
        listed: Iterable[AccountKey],
        event_time: float,
    ) -> Alert:
        campaign.alerts += 1
        campaign_id = campaign.campaign_id
        refs = [AccountRef(tenant_id=t, account_id=a) for t, a in listed]
        tenants = {ref.tenant_id for ref in refs} | {t for t, _ in campaign.roster}
        when = _utc(event_time)
        return Alert(
            alert_id=str(
                uuid.uuid5(_ALERT_NAMESPACE, f"campaign:{campaign_id}|{campaign.alerts}|{status}")
            ),
            dedup_key=f"campaign:{campaign_id}",
            kind="campaign",
            status=status,
            severity=SEVERITIES[campaign.severity],
            score=min(1.0, max(0.0, campaign.score)),
            tenant_id=next(iter(tenants)) if len(tenants) == 1 else None,
            campaign_id=campaign_id,
            accounts=refs,
            event_time=when,
            detected_at=when,
            first_event_time=_utc(min(campaign.first_ts, event_time)),
            reasons=list(campaign.reasons),
        )

    def _reasons(
        self, component: _Component, kind_accounts: dict[str, int], listed: int
    ) -> list[AlertReason]:
        size = len(component.accounts)
        note = (
            f"; listing {listed:,} of {size:,}, all of them in campaign_members"
            if listed < size
            else ""
        )
        reasons = [
            AlertReason(
                signal="campaign_members",
                value=float(size),
                baseline=float(self.min_members),
                detail=f"{size:,} linked accounts across {component.tenants:,} tenants{note}",
            ),
            AlertReason(
                signal="member_suspicion",
                value=round(component.suspicion, 4),
                baseline=self.min_suspicion,
                detail=(
                    f"mean behavioural suspicion {component.suspicion:.2f} of the members;"
                    f" {component.suspicious_share:.0%} of them at 0.5 or more"
                ),
            ),
        ]
        for kind, (hubs, best) in component.kind_hubs.items():
            accounts = kind_accounts.get(kind, 0)
            reasons.append(
                AlertReason(
                    signal=f"link_{kind}",
                    value=float(accounts),
                    baseline=self.link_min,
                    detail=(
                        f"{accounts:,} members share {hubs:,} {kind} key"
                        f"{'s' if hubs != 1 else ''} (strongest weight {best:.2f})"
                    ),
                )
            )
        reasons.append(
            AlertReason(
                signal="onset_span",
                value=round(component.onset_span, 1),
                detail=f"members first seen within {_minutes(component.onset_span)}",
            )
        )
        return reasons
