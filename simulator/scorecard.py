"""The detection scorecard: how well a run of alerts matches a labelled scenario.

Pure computation over already-decoded ``labels.jsonl`` rows and alerts (contract
formats); reading files is the caller's job. All times are event time. Definitions:

- An account is *named* by a firing alert that lists it in ``accounts`` (``account_id``
  is unique across the fleet, so accounts are matched on it). Resolved alerts name no one.
- A campaign is *detected* when at least half of its accounts are named; its time to
  detect runs from its first attack event to the ``event_time`` of the alert that named
  the account completing that half. Its *floor* is the same span to the attack start
  of the account completing that half: no detector can name an account before it
  attacks, so where a campaign's keys come online over an hour, so does its floor.
- An account's time to detect runs from its ``attack_start`` to the ``event_time`` of
  the first firing alert naming it.
- Percentiles: the median interpolates; p90 is the nearest rank (``ceil(0.9 n)``-th value).
- Benign alert load counts firing alerts that name at least one benign account, per
  1,000 benign accounts per day of scenario time.
- Campaign-alert membership precision: for each firing ``campaign`` alert, the true
  campaign most of its listed accounts belong to, and the share of listed accounts in it.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.alert import Alert

SEVERITIES = ("low", "medium", "high", "critical")
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class GroupRate:
    """Of ``total`` accounts in a group, ``alerted`` were named by firing alerts."""

    total: int
    alerted: int

    @property
    def rate(self) -> float:
        return self.alerted / self.total if self.total else 0.0


@dataclass(frozen=True)
class CampaignResult:
    """Detection of one true campaign; times are event time, ``ttd_s`` in seconds."""

    campaign_id: str
    archetype: str
    accounts: int
    named: int
    detected: bool
    start: str
    detected_at: str | None
    ttd_s: float | None
    # From the campaign's first attack event to the first firing alert naming any of its
    # accounts: when responders first hear of it, however the keys' starts are spread.
    first_alert_s: float | None = None
    # From its first attack event to the attack start of the account completing half of
    # it: the earliest `ttd_s` any detector could reach, set by when the keys came online.
    floor_s: float | None = None


@dataclass(frozen=True)
class Scorecard:
    """Everything :func:`score_alerts` measured. Durations in seconds of event time."""

    alerts_total: int
    alerts_firing: int
    days: float | None
    campaigns: tuple[CampaignResult, ...]
    attack_accounts: int
    attack_accounts_named: int
    recall_by_archetype: dict[str, GroupRate]
    ttd_account_median_s: float | None
    ttd_account_p90_s: float | None
    ttd_campaign_median_s: float | None
    ttd_campaign_p90_s: float | None
    benign_accounts: int
    benign_alerted: int
    benign_by_archetype: dict[str, GroupRate]
    benign_by_severity: dict[str, int]
    benign_firing_alerts: int
    campaign_alerts: int
    campaign_alert_listed: int
    campaign_alert_matched: int
    campaign_alert_precision_mean: float | None
    unknown_accounts: int
    notes: tuple[str, ...] = field(default=())
    ttd_campaign_first_alert_median_s: float | None = None
    ttd_campaign_first_alert_p90_s: float | None = None
    ttd_campaign_floor_median_s: float | None = None

    @property
    def campaigns_total(self) -> int:
        return len(self.campaigns)

    @property
    def campaigns_detected(self) -> int:
        return sum(1 for c in self.campaigns if c.detected)

    @property
    def attack_recall(self) -> float:
        return self.attack_accounts_named / self.attack_accounts if self.attack_accounts else 0.0

    @property
    def benign_alerted_rate(self) -> float:
        return self.benign_alerted / self.benign_accounts if self.benign_accounts else 0.0

    @property
    def benign_alerts_per_1k_per_day(self) -> float | None:
        """Firing alerts naming benign accounts per 1,000 benign accounts per scenario day."""
        if not self.days or not self.benign_accounts:
            return None
        return self.benign_firing_alerts / (self.benign_accounts / 1000.0) / self.days

    @property
    def campaign_alert_precision(self) -> float | None:
        """Pooled share of accounts listed by campaign alerts that are in the alert's
        majority true campaign."""
        if not self.campaign_alert_listed:
            return None
        return self.campaign_alert_matched / self.campaign_alert_listed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field and derived rate."""
        data = asdict(self)
        data["campaigns"] = [asdict(c) for c in self.campaigns]
        data["notes"] = list(self.notes)
        for name in ("recall_by_archetype", "benign_by_archetype"):
            data[name] = {
                key: {"total": g.total, "alerted": g.alerted, "rate": g.rate}
                for key, g in getattr(self, name).items()
            }
        data.update(
            campaigns_total=self.campaigns_total,
            campaigns_detected=self.campaigns_detected,
            attack_recall=self.attack_recall,
            benign_alerted_rate=self.benign_alerted_rate,
            benign_alerts_per_1k_per_day=self.benign_alerts_per_1k_per_day,
            campaign_alert_precision=self.campaign_alert_precision,
        )
        return data


def parse_event_time(value: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp (``Z`` or offset)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def median(values: list[float]) -> float | None:
    """The median of ``values`` (interpolated), or None when empty."""
    return float(statistics.median(values)) if values else None


def p90(values: list[float]) -> float | None:
    """The nearest-rank 90th percentile of ``values``, or None when empty.

    >>> p90([float(v) for v in range(1, 11)])
    9.0
    """
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)])


def _named_accounts(alert: Mapping[str, Any]) -> list[str]:
    listed = alert.get("accounts") or []
    names = [str(a["account_id"]) for a in listed if a.get("account_id") is not None]
    if not names and alert.get("account_id") is not None:
        names = [str(alert["account_id"])]
    return list(dict.fromkeys(names))  # an alert names an account once


def score_alerts(
    labels: Iterable[Mapping[str, Any]],
    alerts: Iterable[Mapping[str, Any]],
    *,
    days: float | None = None,
) -> Scorecard:
    """Score ``alerts`` (contract alert dicts) against ``labels`` (``labels.jsonl`` rows).

    ``days`` is the scenario's length in days of event time for the alert-load rate; when
    None it is the span from the earliest to the latest time seen in labels and alerts.
    """
    by_account: dict[str, Mapping[str, Any]] = {str(row["account_id"]): row for row in labels}
    alert_rows = list(alerts)
    firing = sorted(
        (a for a in alert_rows if a.get("status", "firing") == "firing"),
        key=lambda a: parse_event_time(a["event_time"]),
    )
    first_named_s: dict[str, float] = {}
    max_severity: dict[str, int] = {}
    unknown: set[str] = set()
    benign_firing_alerts = 0
    campaign_alerts = listed_total = matched_total = 0
    precisions: list[float] = []
    seen_times: list[float] = []
    for alert in firing:
        at_s = parse_event_time(alert["event_time"])
        seen_times.append(at_s)
        if alert.get("first_event_time"):
            seen_times.append(parse_event_time(alert["first_event_time"]))
        rank = _SEVERITY_RANK.get(str(alert.get("severity")), 0)
        names = _named_accounts(alert)
        names_benign = False
        for account_id in names:
            row = by_account.get(account_id)
            if row is None:
                unknown.add(account_id)
                continue
            first_named_s.setdefault(account_id, at_s)
            if row["label"] == "benign":
                names_benign = True
                max_severity[account_id] = max(max_severity.get(account_id, rank), rank)
        benign_firing_alerts += names_benign
        if alert.get("kind") == "campaign" and names:
            true_campaigns = Counter(
                by_account[a]["campaign_id"]
                for a in names
                if a in by_account and by_account[a]["campaign_id"] is not None
            )
            matched = true_campaigns.most_common(1)[0][1] if true_campaigns else 0
            campaign_alerts += 1
            listed_total += len(names)
            matched_total += matched
            precisions.append(matched / len(names))

    # ---- attack side
    members: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    attack_rows = [row for row in by_account.values() if row["label"] == "attack"]
    recall_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    account_ttd: list[float] = []
    for row in attack_rows:
        account_id = str(row["account_id"])
        counts = recall_counts[str(row["archetype"])]
        counts[0] += 1
        if row.get("campaign_id") is not None:
            members[str(row["campaign_id"])].append(row)
        if row.get("attack_start"):
            seen_times.append(parse_event_time(row["attack_start"]))
        if account_id in first_named_s:
            counts[1] += 1
            if row.get("attack_start"):
                start_s = parse_event_time(row["attack_start"])
                account_ttd.append(first_named_s[account_id] - start_s)

    campaigns: list[CampaignResult] = []
    campaign_ttd: list[float] = []
    first_alert_ttd: list[float] = []
    floors: list[float] = []
    for campaign_id in sorted(members):
        rows = members[campaign_id]
        starts = [parse_event_time(r["attack_start"]) for r in rows if r.get("attack_start")]
        start_s = min(starts) if starts else math.nan
        named_times = sorted(
            first_named_s[account_id]
            for account_id in (str(r["account_id"]) for r in rows)
            if account_id in first_named_s
        )
        half = math.ceil(len(rows) / 2)
        detected = len(named_times) >= half
        detected_s = named_times[half - 1] if detected else None
        ttd = detected_s - start_s if detected_s is not None and starts else None
        if ttd is not None:
            campaign_ttd.append(ttd)
        first_alert = named_times[0] - start_s if named_times and starts else None
        floor = sorted(starts)[half - 1] - start_s if len(starts) >= half else None
        if floor is not None:
            floors.append(floor)
        if first_alert is not None:
            first_alert_ttd.append(first_alert)
        archetypes = Counter(str(r["archetype"]) for r in rows)
        campaigns.append(
            CampaignResult(
                campaign_id=campaign_id,
                archetype=archetypes.most_common(1)[0][0],
                accounts=len(rows),
                named=len(named_times),
                detected=detected,
                start=min((r["attack_start"] for r in rows if r.get("attack_start")), default=""),
                detected_at=_iso(detected_s),
                ttd_s=ttd,
                first_alert_s=first_alert,
                floor_s=floor,
            )
        )

    # ---- benign side
    benign_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_severity = dict.fromkeys(SEVERITIES, 0)
    for row in by_account.values():
        if row["label"] != "benign":
            continue
        counts = benign_counts[str(row["archetype"])]
        counts[0] += 1
        worst = max_severity.get(str(row["account_id"]))
        if worst is not None:
            counts[1] += 1
            by_severity[SEVERITIES[worst]] += 1

    notes: list[str] = []
    if days is None and len(seen_times) >= 2:
        span_s = max(seen_times) - min(seen_times)
        days = span_s / 86400.0 if span_s > 0 else None
        notes.append("days derived from the span of labels and alerts; pass days for exactness")
    if unknown:
        notes.append(f"{len(unknown)} alerted accounts are not in the labels")

    return Scorecard(
        alerts_total=len(alert_rows),
        alerts_firing=len(firing),
        days=days,
        campaigns=tuple(campaigns),
        attack_accounts=len(attack_rows),
        attack_accounts_named=sum(c[1] for c in recall_counts.values()),
        recall_by_archetype={k: GroupRate(*v) for k, v in sorted(recall_counts.items())},
        ttd_account_median_s=median(account_ttd),
        ttd_account_p90_s=p90(account_ttd),
        ttd_campaign_median_s=median(campaign_ttd),
        ttd_campaign_p90_s=p90(campaign_ttd),
        ttd_campaign_first_alert_median_s=median(first_alert_ttd),
        ttd_campaign_first_alert_p90_s=p90(first_alert_ttd),
        ttd_campaign_floor_median_s=median(floors),
        benign_accounts=sum(c[0] for c in benign_counts.values()),
        benign_alerted=sum(c[1] for c in benign_counts.values()),
        benign_by_archetype={k: GroupRate(*v) for k, v in sorted(benign_counts.items())},
        benign_by_severity=by_severity,
        benign_firing_alerts=benign_firing_alerts,
        campaign_alerts=campaign_alerts,
        campaign_alert_listed=listed_total,
        campaign_alert_matched=matched_total,
        campaign_alert_precision_mean=statistics.fmean(precisions) if precisions else None,
        unknown_accounts=len(unknown),
        notes=tuple(notes),
    )


def _iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return (
        datetime.fromtimestamp(epoch_s, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if abs(seconds) < 120:
        return f"{seconds:.0f}s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_scorecard(card: Scorecard) -> str:
    """A readable plain-text report of ``card``."""
    lines = [
        f"alerts: {card.alerts_total:,} ({card.alerts_firing:,} firing)",
        "",
        f"campaigns detected: {card.campaigns_detected}/{card.campaigns_total}"
        f"   time to detect median {_duration(card.ttd_campaign_median_s)},"
        f" p90 {_duration(card.ttd_campaign_p90_s)} (half its accounts named; floor"
        f" median {_duration(card.ttd_campaign_floor_median_s)});"
        f" first alert median {_duration(card.ttd_campaign_first_alert_median_s)},"
        f" p90 {_duration(card.ttd_campaign_first_alert_p90_s)}",
        f"  {'campaign':32} {'archetype':18} {'named':>11} {'detected':>8} {'ttd':>7}"
        f" {'floor':>7} {'first':>7}",
    ]
    for c in card.campaigns:
        lines.append(
            f"  {c.campaign_id:32} {c.archetype:18} {f'{c.named}/{c.accounts}':>11}"
            f" {'yes' if c.detected else 'no':>8} {_duration(c.ttd_s):>7}"
            f" {_duration(c.floor_s):>7} {_duration(c.first_alert_s):>7}"
        )
    lines += [
        "",
        f"attack accounts named: {card.attack_accounts_named:,}/{card.attack_accounts:,}"
        f" ({_pct(card.attack_recall)})   time to detect median"
        f" {_duration(card.ttd_account_median_s)}, p90 {_duration(card.ttd_account_p90_s)}",
        f"  {'archetype':20} {'named':>13} {'recall':>8}",
    ]
    for name, g in card.recall_by_archetype.items():
        lines.append(f"  {name:20} {f'{g.alerted:,}/{g.total:,}':>13} {_pct(g.rate):>8}")
    per_day = card.benign_alerts_per_1k_per_day
    lines += [
        "",
        f"benign accounts alerted: {card.benign_alerted:,}/{card.benign_accounts:,}"
        f" ({_pct(card.benign_alerted_rate)})",
        "  by max severity: "
        + ", ".join(f"{name} {count:,}" for name, count in card.benign_by_severity.items()),
        "  alerts per 1,000 benign accounts per day: "
        f"{'-' if per_day is None else f'{per_day:.1f}'}"
        f" ({card.benign_firing_alerts:,} firing alerts over "
        f"{'-' if card.days is None else f'{card.days:.3f}'} days)",
        f"  {'archetype':20} {'alerted':>13} {'rate':>8}",
    ]
    for name, g in card.benign_by_archetype.items():
        lines.append(f"  {name:20} {f'{g.alerted:,}/{g.total:,}':>13} {_pct(g.rate):>8}")
    lines += [
        "",
        f"campaign alerts: {card.campaign_alerts:,}   membership precision"
        f" {_pct(card.campaign_alert_precision)} pooled,"
        f" {_pct(card.campaign_alert_precision_mean)} mean per alert",
    ]
    lines += [f"note: {note}" for note in card.notes]
    return "\n".join(lines)


@dataclass(frozen=True)
class CampaignBar:
    """How one true campaign fared; times are seconds of event time."""

    campaign_id: str
    accounts: int
    first_alert_s: float | None  # from its first attack event to its first campaign alert
    named: float  # share of its accounts named by firing campaign alerts
    named_within: float  # share named within `within_s` of their own attack start


def campaign_bars(
    labels: Iterable[Mapping[str, Any]], alerts: Iterable[Alert], within_s: float
) -> dict[str, CampaignBar]:
    """Per true campaign: when its first firing campaign alert came, what share of its
    accounts campaign alerts named, and what share within `within_s` seconds of each
    account's own attack start (the campaign-linking bars)."""
    start_of: dict[str, float] = {}
    members: dict[str, list[str]] = defaultdict(list)
    for row in labels:
        if row.get("campaign_id"):
            members[row["campaign_id"]].append(row["account_id"])
            start_of[row["account_id"]] = parse_event_time(row["attack_start"])
    named_at: dict[str, float] = {}
    for alert in alerts:
        if alert.kind == "campaign" and alert.status == "firing":
            at = alert.event_time.timestamp()
            for ref in alert.accounts:
                named_at[ref.account_id] = min(named_at.get(ref.account_id, math.inf), at)
    bars = {}
    for campaign_id, accounts in members.items():
        start = min(start_of[a] for a in accounts)
        firsts = [named_at[a] for a in accounts if a in named_at]
        within = sum(1 for a in accounts if named_at.get(a, math.inf) - start_of[a] <= within_s)
        bars[campaign_id] = CampaignBar(
            campaign_id,
            len(accounts),
            min(firsts) - start if firsts else None,
            len(firsts) / len(accounts),
            within / len(accounts),
        )
    return bars
