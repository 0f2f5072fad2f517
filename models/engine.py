"""The detection engine: one state per account, every detector, episodes, and alerts.

The engine is the whole detection core behind one method: give it an `ApiCall`, get
back the alerts (often none) that the call caused. It reads no clock; event time
(`ApiCall.ts`) drives windows, decay and episodes, so a replay of a day of events in
the same order gives the same alerts, `alert_id` included, as the live run did.
"""

from __future__ import annotations

import math
import uuid
from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from models.base import AccountDetector, Signal
from models.errors import ConfigurationError
from models.reasoning import ReasoningHarvestDetector
from models.records import ApiCall
from schemas.alert import SEVERITIES, AccountRef, Alert, AlertReason, AlertStatus

AccountKey = tuple[str, str]  # (tenant_id, account_id)

# Fixed namespace: alert ids are uuid5 of it and the episode, so replays reproduce them.
_ALERT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:distillwatch:alert:v1")


class Episode:
    """One stretch of suspicious behaviour of one account, from first alert to resolution.

    Times are event time in seconds since the Unix epoch. `severity` is the highest
    severity alerted so far (an index into `schemas.alert.SEVERITIES`); `last_score` and
    `last_signals` belong to the latest suspicious call and make the resolution alert.
    """

    __slots__ = (
        "number",
        "first_ts",
        "last_suspicious_ts",
        "severity",
        "last_score",
        "last_signals",
    )

    def __init__(
        self, number: int, ts: float, severity: int, score: float, signals: tuple[Signal, ...]
    ) -> None:
        self.number = number
        self.first_ts = ts
        self.last_suspicious_ts = ts
        self.severity = severity
        self.last_score = score
        self.last_signals = signals


class AccountState:
    """Everything the engine keeps about one account: one state per detector, in the
    engine's detector order, the open episode if any, and how many episodes it has had
    (the episode number is part of `alert_id`)."""

    __slots__ = ("detector_states", "episode", "episodes_opened")

    def __init__(self, detector_states: tuple[Any, ...]) -> None:
        self.detector_states = detector_states
        self.episode: Episode | None = None
        self.episodes_opened = 0


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class DetectionEngine:
    """Scores every API call of every account and turns the scores into alert episodes.

    For each call, every detector scores the account *before* the call is learnt. The
    signals combine into one score in [0, 1] by noisy-or (`1 - prod(1 - score)`: any
    one strong signal suffices, agreeing weak ones add up). A call is *suspicious* when
    that score reaches `fire_threshold`. Then:

    - the first suspicious call of an account opens an episode and emits a `firing`
      alert; later suspicious calls emit another `firing` alert with the same
      `dedup_key` only when the severity rises above the highest alerted so far;
    - an episode resolves once its last suspicious call is more than `quiet_s` seconds
      of event time behind the watermark, emitting a `resolved` alert whose content
      (`event_time` = last suspicious call, score and reasons of that call, peak
      severity) does not depend on when the resolution was noticed;
    - every call is counted into the detectors' evidence windows (`observe_one`), but
      only calls that are not suspicious are learnt into baselines (`learn_one`). A
      flagged account's own traffic therefore never teaches its baseline that
      harvesting is normal, while its windows keep measuring it so the score can fall.

    Severity is `low` from `fire_threshold`, then `medium`, `high` and `critical` from
    the three `severity_thresholds`. The watermark is the largest event time seen by
    `process` or passed to `advance`.

    `detected_at` is wall-clock time in the contract, and the engine reads no clock: it
    sets `detected_at` equal to `event_time`. Callers that emit alerts stamp the real
    emission time: `alert.model_copy(update={"detected_at": now})`.

    Seams for later work:

    - tenant and cohort models: heavier models (River, per tenant or cohort) will be a
      second detector kind scored in the same loop in `process`, their state in a dict
      keyed by tenant or cohort, not by account;
    - analyst feedback (`alert-feedback`): `apply_verdict(tenant_id, account_id,
      verdict)` belongs here, next to `_resolve`: `benign` closes the open episode and
      may learn the calls it withheld, `confirmed` keeps the account flagged;
    - campaign linking: a `CampaignLinker` consumes the account alerts returned here
      (and per-account fingerprints kept as another detector state) to emit `campaign`
      alerts.

    >>> engine = DetectionEngine()
    >>> def harvest(i):
    ...     return ApiCall(event_id=str(i), ts=1_800_000_000.0 + 3 * i, tenant_id="org_1",
    ...                    account_id="key_1", model="frontier-large", status=200,
    ...                    input_tokens=300, output_tokens=4096, stop_reason="max_tokens",
    ...                    has_prompt=True, cot_request=True)
    >>> alerts = [alert for i in range(200) for alert in engine.process(harvest(i))]
    >>> [(a.status, a.severity, round(a.score, 2)) for a in alerts]
    [('firing', 'low', 0.5), ('firing', 'medium', 0.65), ('firing', 'high', 0.8)]
    >>> alerts[0].dedup_key, alerts[0].reasons[0].signal
    ('account:org_1:key_1', 'cot_request_rate')
    >>> [(a.status, a.severity) for a in engine.advance(1_800_000_000.0 + 3 * 199 + 1801)]
    [('resolved', 'high')]
    """

    def __init__(
        self,
        detectors: Sequence[AccountDetector[Any]] | None = None,
        fire_threshold: float = 0.5,
        quiet_s: float = 1800.0,
        severity_thresholds: tuple[float, float, float] = (0.65, 0.8, 0.9),
    ) -> None:
        detectors = (ReasoningHarvestDetector(),) if detectors is None else tuple(detectors)
        names = [detector.name for detector in detectors]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"detector names must be unique, got {names}")
        if len(severity_thresholds) != 3:
            raise ConfigurationError(
                "severity_thresholds are the lower bounds of medium, high and critical, "
                f"got {severity_thresholds}"
            )
        medium, high, critical = severity_thresholds
        if not 0.0 < fire_threshold <= medium <= high <= critical <= 1.0:
            raise ConfigurationError(
                "need 0 < fire_threshold <= medium <= high <= critical <= 1, got "
                f"fire_threshold={fire_threshold}, severity_thresholds={severity_thresholds}"
            )
        if not quiet_s > 0:
            raise ConfigurationError(f"quiet_s must be positive, got {quiet_s}")
        self.detectors = detectors
        self.fire_threshold = fire_threshold
        self.quiet_s = quiet_s
        self.severity_thresholds = tuple(severity_thresholds)
        self._accounts: dict[AccountKey, AccountState] = {}
        self._open: dict[AccountKey, Episode] = {}
        self._watermark = -math.inf
        self.last_score = 0.0  # combined score of the last call processed, for aggregates

    @property
    def accounts_tracked(self) -> int:
        """Accounts with state in the engine."""
        return len(self._accounts)

    @property
    def open_episodes(self) -> int:
        """Accounts currently in an unresolved episode."""
        return len(self._open)

    @property
    def watermark(self) -> float:
        """Event-time progress: the largest `ts` seen or passed to `advance` (seconds)."""
        return self._watermark

    def account_state(self, tenant_id: str, account_id: str) -> AccountState | None:
        """The engine's state for one account, None if it has never been seen."""
        return self._accounts.get((tenant_id, account_id))

    def process(self, call: ApiCall) -> list[Alert]:
        """Score `call`, update its account and return the alerts it caused, oldest first.

        At most a `resolved` alert (the account's previous episode went quiet before this
        call) followed by a `firing` one.
        """
        ts = call.ts
        if ts > self._watermark:
            self._watermark = ts
        key = (call.tenant_id, call.account_id)
        account = self._accounts.get(key)
        detectors = self.detectors
        if account is None:
            account = AccountState(tuple(detector.new_state() for detector in detectors))
            self._accounts[key] = account
        alerts: list[Alert] = []
        episode = account.episode
        if episode is not None and episode.last_suspicious_ts < self._watermark - self.quiet_s:
            alerts.append(self._resolve(key, account, episode))

        states = account.detector_states
        signals: list[Signal] = []
        for detector, state in zip(detectors, states, strict=True):
            signal = detector.score_one(state, call)
            if signal is not None:
                signals.append(signal)
        # Tenant and cohort models will score here too, before anything is learnt.

        suspicious = False
        score = 0.0
        if signals:
            if len(signals) == 1:
                score = signals[0].score
            else:
                calm = 1.0
                for signal in signals:
                    calm *= 1.0 - signal.score
                score = 1.0 - calm
            if score >= self.fire_threshold:
                suspicious = True
                self._on_suspicious(key, account, ts, score, signals, alerts)

        self.last_score = score
        for detector, state in zip(detectors, states, strict=True):
            detector.observe_one(state, call)
            if not suspicious:
                detector.learn_one(state, call)
        return alerts

    def advance(self, watermark: float) -> list[Alert]:
        """Move event time to `watermark` (seconds) and resolve episodes quiet since then.

        Pass the largest `ts` seen so far (across the caller's input): then how often
        `advance` is called changes when resolutions come out, never what they say.
        Returns the `resolved` alerts ordered by their `event_time`, then `dedup_key`.
        """
        if watermark > self._watermark:
            self._watermark = watermark
        cutoff = self._watermark - self.quiet_s
        stale = sorted(
            (episode.last_suspicious_ts, key)
            for key, episode in self._open.items()
            if episode.last_suspicious_ts < cutoff
        )
        accounts = self._accounts
        return [self._resolve(key, accounts[key], self._open[key]) for _, key in stale]

    def _on_suspicious(
        self,
        key: AccountKey,
        account: AccountState,
        ts: float,
        score: float,
        signals: list[Signal],
        alerts: list[Alert],
    ) -> None:
        severity = bisect_right(self.severity_thresholds, score)
        episode = account.episode
        if episode is None:
            account.episodes_opened += 1
            episode = Episode(account.episodes_opened, ts, severity, score, tuple(signals))
            account.episode = episode
            self._open[key] = episode
            alerts.append(self._alert(key, episode, "firing", severity, score, signals, ts))
            return
        if ts < episode.first_ts:  # a late call can move the start back
            episode.first_ts = ts
        if ts >= episode.last_suspicious_ts:
            episode.last_suspicious_ts = ts
            episode.last_score = score
            episode.last_signals = tuple(signals)
        if severity > episode.severity:
            episode.severity = severity
            alerts.append(self._alert(key, episode, "firing", severity, score, signals, ts))

    def _resolve(self, key: AccountKey, account: AccountState, episode: Episode) -> Alert:
        # Analyst verdicts (apply_verdict) will close or pin episodes next to this.
        account.episode = None
        del self._open[key]
        return self._alert(
            key,
            episode,
            "resolved",
            episode.severity,
            episode.last_score,
            episode.last_signals,
            episode.last_suspicious_ts,
        )

    def _alert(
        self,
        key: AccountKey,
        episode: Episode,
        status: AlertStatus,
        severity_index: int,
        score: float,
        signals: Sequence[Signal],
        event_time: float,
    ) -> Alert:
        tenant_id, account_id = key
        dedup_key = f"account:{tenant_id}:{account_id}"
        severity = SEVERITIES[severity_index]
        when = _utc(event_time)
        ranked = sorted(signals, key=lambda signal: -signal.score)
        return Alert(
            alert_id=str(
                uuid.uuid5(_ALERT_ID_NAMESPACE, f"{dedup_key}|{episode.number}|{status}|{severity}")
            ),
            dedup_key=dedup_key,
            kind="account",
            status=status,
            severity=severity,
            score=min(1.0, max(0.0, score)),
            tenant_id=tenant_id,
            account_id=account_id,
            accounts=[AccountRef(tenant_id=tenant_id, account_id=account_id)],
            event_time=when,
            detected_at=when,
            first_event_time=_utc(episode.first_ts),
            reasons=[
                AlertReason(
                    signal=signal.name,
                    value=signal.value,
                    baseline=signal.baseline,
                    detail=signal.detail,
                )
                for signal in ranked
            ],
        )
