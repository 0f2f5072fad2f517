"""The detection engine: one state per account, the detectors, peers, feedback, alerts.

The engine is the whole detection core behind one method: give it an `ApiCall`, get
back the alerts (often none) that the call caused. It reads no clock; event time
(`ApiCall.ts`) drives windows, decay, cohort epochs and episodes, so a replay of a day
of events in the same order gives the same alerts, `alert_id` included, as the live run
did.
"""

from __future__ import annotations

import heapq
import math
import uuid
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from distillwatch_native import register_state_types

from models.base import AccountDetector, Finding, Signal
from models.behaviour import FEATURE_NAMES, BehaviourDetector, BehaviourState
from models.cohort import CohortModels, cohort_of
from models.errors import ConfigurationError
from models.feedback import FeedbackModel
from models.records import ApiCall
from schemas.alert import SEVERITIES, AccountRef, Alert, AlertReason, AlertStatus

AccountKey = tuple[str, str]  # (tenant_id, account_id)
Verdict = Literal["confirmed", "benign"]

# Fixed namespace: alert ids are uuid5 of it and the episode, so replays reproduce them.
_ALERT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:distillwatch:alert:v1")
_DEFAULT: Any = "default"
# An account joins its cohort with at least 5 requests in the last hour (volume feature).
_COHORT_MIN_VOLUME = math.log1p(5.0) / math.log1p(1000.0)


class Episode:
    """One stretch of suspicious behaviour of one account, from first alert to resolution.

    Times are event time in seconds since the Unix epoch. `severity` is the highest
    severity alerted so far (an index into `schemas.alert.SEVERITIES`); `last_score`,
    `last_findings` and `last_notes` belong to the latest suspicious call and make the
    resolution alert.
    """

    __slots__ = (
        "number",
        "first_ts",
        "last_suspicious_ts",
        "severity",
        "last_score",
        "last_findings",
        "last_notes",
    )

    def __init__(
        self,
        number: int,
        ts: float,
        severity: int,
        score: float,
        findings: tuple[Finding, ...],
        notes: tuple[Signal, ...] = (),
    ) -> None:
        self.number = number
        self.first_ts = ts
        self.last_suspicious_ts = ts
        self.severity = severity
        self.last_score = score
        self.last_findings = findings
        self.last_notes = notes


class AccountState(msgspec.Struct, gc=False, eq=False):
    """Everything the engine keeps about one account: one state per detector, in the
    engine's detector order, the open episode if any, how many episodes it has had
    (the episode number is part of `alert_id`), and an analyst's benign verdict still in
    force: (until event time, top signal, score) or None.

    Not tracked by the garbage collector (`gc=False`): nothing it holds refers back to
    it, so it can be in no reference cycle, and a million accounts add nothing to a
    collection's walk."""

    detector_states: tuple[Any, ...]
    episode: Episode | None = None
    episodes_opened: int = 0
    suppression: tuple[float, str, float] | None = None


# The behaviour core reads and writes these states by their slots (native/src/fields.rs).
register_state_types(BehaviourState, AccountState)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _top_signal(findings: Sequence[Finding]) -> tuple[str, float]:
    best = max(findings, key=lambda f: f.score)
    signals = best.signals
    return (signals[0].name if signals else "unknown"), best.score


def _signal_scores(findings: Sequence[Finding]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for finding in findings:
        for signal in finding.signals:
            scores[signal.name] = max(scores.get(signal.name, 0.0), signal.score)
    return scores


class DetectionEngine:
    """Scores every API call of every account and turns the scores into alert episodes.

    With no arguments it is the production engine: `BehaviourDetector` per account (see
    `models.behaviour` for its signals and calibration), `CohortModels` comparing
    accounts with their peers, a `FeedbackModel` learning from analyst verdicts, and a
    per-tenant limit on new episodes. `detectors` replaces the per-account detectors
    (the cohort models then apply only if one of them is a `BehaviourDetector`).

    For each call, every detector counts it and judges the account (`assess_one`). The
    findings combine into one score in [0, 1] by noisy-or (`1 - prod(1 - score)`); once
    the feedback model is ready, the score moves towards the analysts' verdicts on
    similar signal combinations. A call is *suspicious* when that score reaches
    `fire_threshold`. Then:

    - the first suspicious call of an account opens an episode and emits a `firing`
      alert; later suspicious calls emit another `firing` alert with the same
      `dedup_key` only when the severity rises above the highest alerted so far;
    - an episode resolves once its last suspicious call is more than `quiet_s` seconds
      of event time behind the watermark, emitting a `resolved` alert whose content
      (`event_time` = last suspicious call, score and reasons of that call, peak
      severity) does not depend on when the resolution was noticed;
    - suspicious calls are kept out of the account's baseline (`withhold_one`), other
      calls teach it (`learn_one`): a flagged account never teaches its baseline that
      harvesting is normal, while its windows keep measuring it so the score can fall;
    - a tenant opens at most `tenant_episode_limit` new episodes per hour of event
      time. Further accounts of that tenant crossing the threshold are *folded*: they
      stay tracked and withheld, they open their own episode as soon as the tenant is
      under the limit again, and the tenant's next alert says how many were folded
      (reason `tenant_rate_limit`). One compromised integration cannot page a
      responder a thousand times, and nothing is silently dropped;
    - `apply_verdict(..., "benign")` closes the open episode and stops re-alerting the
      account for the same top signal for `suppress_s` seconds of event time, unless
      its score rises `rearm_margin` above the score the analyst saw.

    Severity is `low` from `fire_threshold`, then `medium`, `high` and `critical` from
    the three `severity_thresholds`. The watermark is the largest event time seen by
    `process` or passed to `advance`.

    `detected_at` is wall-clock time in the contract, and the engine reads no clock: it
    sets `detected_at` equal to `event_time`. Callers that emit alerts stamp the real
    emission time: `alert.model_copy(update={"detected_at": now})`.

    Cross-account state (cohort models, feedback, the tenant limit) is per engine: with
    several workers, each compares an account with the peers it holds.

    >>> engine = DetectionEngine()
    >>> def harvest(i):
    ...     return ApiCall(event_id=str(i), ts=1_800_000_000.0 + 20 * i, tenant_id="org_1",
    ...                    account_id="key_1", model="frontier-large", status=200,
    ...                    input_tokens=300, output_tokens=4096, stop_reason="max_tokens",
    ...                    has_prompt=True, cot_request=True, topic="math")
    >>> alerts = [alert for i in range(200) for alert in engine.process(harvest(i))]
    >>> [(a.status, a.severity) for a in alerts]
    [('firing', 'low'), ('firing', 'medium'), ('firing', 'high'), ('firing', 'critical')]
    >>> alerts[0].dedup_key, alerts[0].reasons[0].signal
    ('account:org_1:key_1', 'cot_request_rate')
    >>> round(engine.last_suspicion, 2)
    0.92
    >>> [(a.status, a.severity) for a in engine.advance(1_800_000_000.0 + 20 * 199 + 1801)]
    [('resolved', 'critical')]
    """

    def __init__(
        self,
        detectors: Sequence[AccountDetector[Any]] | None = None,
        fire_threshold: float = 0.5,
        quiet_s: float = 1800.0,
        severity_thresholds: tuple[float, float, float] = (0.65, 0.8, 0.9),
        cohorts: CohortModels | None = _DEFAULT,
        feedback: FeedbackModel | None = _DEFAULT,
        tenant_episode_limit: int = 20,
        suppress_s: float = 7 * 86_400.0,
        rearm_margin: float = 0.2,
    ) -> None:
        detectors = (BehaviourDetector(),) if detectors is None else tuple(detectors)
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
        if tenant_episode_limit < 1:
            raise ConfigurationError(
                f"tenant_episode_limit must be at least 1, got {tenant_episode_limit}"
            )
        if not (suppress_s > 0 and rearm_margin >= 0):
            raise ConfigurationError(
                f"need suppress_s > 0 and rearm_margin >= 0, got {suppress_s}, {rearm_margin}"
            )
        self.detectors = detectors
        self.fire_threshold = fire_threshold
        self.quiet_s = quiet_s
        self.severity_thresholds = tuple(severity_thresholds)
        self.tenant_episode_limit = tenant_episode_limit
        self.suppress_s = suppress_s
        self.rearm_margin = rearm_margin
        profile = next(
            (i for i, d in enumerate(detectors) if isinstance(d, BehaviourDetector)), None
        )
        self._profile_index = profile
        self._profile: BehaviourDetector | None = (
            None if profile is None else detectors[profile]  # type: ignore[assignment]
        )
        self.cohorts: CohortModels | None = (
            (CohortModels() if profile is not None else None) if cohorts is _DEFAULT else cohorts
        )
        self.feedback: FeedbackModel | None = (
            FeedbackModel() if feedback is _DEFAULT else feedback
        )
        self._accounts: dict[AccountKey, AccountState] = {}
        self._open: dict[AccountKey, Episode] = {}
        self._tenant_openings: dict[str, deque[float]] = {}
        self._tenant_folded: dict[str, set[str]] = {}
        self._watermark = -math.inf
        self.last_score = 0.0  # combined score of the last call processed, for aggregates
        self._last_state: Any = None
        self._last_ts = 0.0
        # The current cohort epoch as one int object that every account's
        # `sampled_epoch` shares (a million accounts, one int instead of a million).
        self._epoch = -1
        # Event times [from, until) of `_epoch`: inside them no epoch number is computed.
        self._epoch_from = self._epoch_until = math.inf
        # The one detector of the usual engine, else None (several detectors).
        self._single: AccountDetector[Any] | None = detectors[0] if len(detectors) == 1 else None
        # Detectors whose learn_one is the no-op of a window-derived baseline are skipped.
        self._learns = any(
            type(d).learn_one is not BehaviourDetector.learn_one for d in detectors
        )
        # The usual engine: `process_many` runs its common call in its detector's core.
        self._native = type(self._single) is BehaviourDetector and not self._learns

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

    @property
    def last_suspicion(self) -> float:
        """How much the last processed call's account looks like harvesting, in [0, 1].

        Volume-independent (`BehaviourDetector.suspicion`): the shape of the account's
        traffic over the last day, with the call counted. Twenty harvest-shaped requests
        of a swarm key score high; a tutoring product lower; ordinary chat, coding and
        agent traffic about 0. Computed on demand, so reading it costs only the callers
        who need it (the campaign linker). 0.0 without a `BehaviourDetector`.
        """
        if self._profile is None or self._last_state is None:
            return 0.0
        return self._profile.suspicion(self._last_state, self._last_ts)

    def account_state(self, tenant_id: str, account_id: str) -> AccountState | None:
        """The engine's state for one account, None if it has never been seen."""
        return self._accounts.get((tenant_id, account_id))

    def account_features(
        self, tenant_id: str, account_id: str, ts: float | None = None
    ) -> dict[str, float] | None:
        """The account's behaviour vector (`models.behaviour.FEATURE_NAMES`, each in
        [0, 1]) at event time `ts` (default: the watermark), plus its `suspicion`.

        None if the account was never seen or the engine has no `BehaviourDetector`.
        """
        account = self._accounts.get((tenant_id, account_id))
        if account is None or self._profile is None or self._profile_index is None:
            return None
        state = account.detector_states[self._profile_index]
        at = self._watermark if ts is None else ts
        features = dict(zip(FEATURE_NAMES, self._profile.features(state, at), strict=True))
        features["suspicion"] = self._profile.suspicion(state, at)
        return features

    def process(self, call: ApiCall) -> list[Alert]:
        """Score `call`, update its account and return the alerts it caused, oldest first.

        At most a `resolved` alert (the account's previous episode went quiet before this
        call) followed by a `firing` one.
        """
        ts = call.ts
        watermark = self._watermark
        if ts > watermark:
            watermark = self._watermark = ts
        key = (call.tenant_id, call.account_id)
        account = self._accounts.get(key)
        detectors = self.detectors
        single = self._single
        if account is None:
            # An account's first call: a third of all calls in a fleet of mostly idle
            # accounts, so no generator and no per-detector loop for the usual engine.
            account = self._accounts[key] = AccountState(
                (single.new_state(),) if single is not None
                else tuple(detector.new_state() for detector in detectors)
            )
            alerts: list[Alert] = []
        else:
            alerts = []
            episode = account.episode
            if episode is not None and episode.last_suspicious_ts < watermark - self.quiet_s:
                alerts.append(self._resolve(key, account, episode))
        cohorts = self.cohorts
        if cohorts is not None and watermark >= cohorts._next_final:
            cohorts.advance(watermark)

        states = account.detector_states
        if single is not None:
            return self._assessed(call, key, account, single.assess_one(states[0], call), alerts)
        found = []
        calm = 1.0
        for detector, state in zip(detectors, states, strict=True):
            finding = detector.assess_one(state, call)
            if finding is not None:
                found.append(finding)
                calm *= 1.0 - finding.score
        self._scored(call, key, account, tuple(found), 1.0 - calm, alerts)
        return alerts

    def process_many(
        self,
        calls: list[ApiCall],
        start: int,
        stop: int,
        until_ts: float,
        known: set[AccountKey] | None,
        prepare: Callable[[AccountKey], object] | None,
        suspicions: list[float],
        scores: list[float],
        alerts: list[Alert],
    ) -> tuple[int, Exception | None]:
        """`process` each of `calls[start:stop]` in order, for a worker's drain: each
        call's `last_suspicion` appended to `suspicions`, its `last_score` to `scores`,
        its alerts to `alerts`.

        Stops after the first call whose `ts` is at or after `until_ts`. With `known` a
        set, a call whose (tenant, account) key is not in it goes to `prepare(key)` first,
        if given (a worker loads the account's stored state there). Returns the index of
        the first call not processed, and None, or the exception a call raised (from
        `prepare`, `process` or `last_suspicion`) with that call's index: it is not
        counted in the lists, and the caller goes on from the call after it.

        The usual engine (one `BehaviourDetector`) runs the common call in Rust
        (`BehaviourCore.process_many`): the same counting and suspicion as `process`,
        without four Python calls per call. The result is the same either way.
        """
        if self._native:
            core = self._single._core  # type: ignore[union-attr]
            return core.process_many(  # type: ignore[no-any-return]
                self, calls, start, stop, until_ts, known, prepare, suspicions, scores, alerts)
        for i in range(start, stop):
            call = calls[i]
            try:
                if known is not None:
                    key = (call.tenant_id, call.account_id)
                    if key not in known and prepare is not None:
                        prepare(key)
                made = self.process(call)
                suspicion = self.last_suspicion
            except Exception as exc:
                return i, exc
            suspicions.append(suspicion)
            scores.append(self.last_score)
            alerts += made
            if call.ts >= until_ts:
                return i + 1, None
        return max(start, stop), None

    def _counted(
        self, call: ApiCall, key: AccountKey, account: AccountState, gate: bool
    ) -> list[Alert]:
        """The rest of `process` for a call `BehaviourCore.process_many` has counted into
        `account`, its count's gate `gate`: what the Rust path leaves to Python (a pattern
        past its gate, a cohort sample)."""
        state = account.detector_states[0]
        finding = self._profile.judge_counted(state, call) if gate else None  # type: ignore[union-attr]
        return self._assessed(call, key, account, finding, [])

    def _assessed(
        self,
        call: ApiCall,
        key: AccountKey,
        account: AccountState,
        finding: Finding | None,
        alerts: list[Alert],
    ) -> list[Alert]:
        """The usual engine's call once its one detector has assessed it."""
        if finding is not None:
            self._scored(call, key, account, (finding,), finding.score, alerts)
            return alerts
        state = account.detector_states[0]
        if self._learns:
            self._single.learn_one(state, call)  # type: ignore[union-attr]
        if self._profile is not None:
            ts = call.ts
            self._last_state = state
            self._last_ts = ts
            cohorts = self.cohorts
            if cohorts is not None:
                # The epoch changes every `epoch_s` of event time: while `ts` is in the
                # current one, reuse its number (one int shared by every state).
                if self._epoch_from <= ts < self._epoch_until:
                    epoch = self._epoch
                else:
                    epoch = self._epoch_of(ts, cohorts)
                if state.sampled_epoch is not epoch and state.sampled_epoch != epoch:
                    state.sampled_epoch = epoch
                    if cohorts.should_learn(key[1], epoch):
                        self._offer(state, key, call, cohorts, epoch, False, True)
        self.last_score = 0.0
        return alerts

    def _scored(
        self,
        call: ApiCall,
        key: AccountKey,
        account: AccountState,
        findings: tuple[Finding, ...],
        score: float,
        alerts: list[Alert],
    ) -> None:
        """The call's combined score from its findings: feedback, alerts, learning."""
        ts = call.ts
        single = self._single
        detectors = self.detectors
        states = account.detector_states
        suspicious = False
        if score > 0.0:
            notes: tuple[Signal, ...] = ()
            feedback = self.feedback
            if feedback is not None and feedback.ready:
                before = score
                signal_scores = _signal_scores(findings)
                score = feedback.blend(score, signal_scores)
                notes = (Signal(
                    "analyst_feedback", abs(score - before), feedback.predict(signal_scores),
                    before,
                    "analysts' verdicts on similar signal combinations moved the score "
                    f"from {before:.2f} to {score:.2f}",
                ),)
            if score >= self.fire_threshold and not self._suppressed(account, ts, findings, score):
                suspicious = True
                self._on_suspicious(key, account, ts, score, findings, notes, alerts)

        if single is not None:
            if suspicious:
                single.withhold_one(states[0], call)
            elif self._learns:
                single.learn_one(states[0], call)
        elif suspicious:
            for detector, state in zip(detectors, states, strict=True):
                detector.withhold_one(state, call)
        else:
            for detector, state in zip(detectors, states, strict=True):
                detector.learn_one(state, call)

        if self._profile_index is not None:
            self._after(states[self._profile_index], key, call, self.cohorts, score > 0.0)
        self.last_score = score

    def _after(
        self,
        state: BehaviourState,
        key: AccountKey,
        call: ApiCall,
        cohorts: CohortModels | None,
        evidence: bool,
    ) -> None:
        """Remember the account for `last_suspicion`; offer it to its cohort once an epoch."""
        self._last_state = state
        ts = self._last_ts = call.ts
        if cohorts is None:
            return
        if self._epoch_from <= ts < self._epoch_until:
            epoch = self._epoch
        else:
            epoch = self._epoch_of(ts, cohorts)
        if state.sampled_epoch == epoch:
            return
        state.sampled_epoch = epoch
        learn = cohorts.should_learn(key[1], epoch)
        if evidence or learn:
            self._offer(state, key, call, cohorts, epoch, evidence, learn)

    def _epoch_of(self, ts: float, cohorts: CohortModels) -> int:
        """The cohort epoch of `ts`: the shared `_epoch` object if it is that one."""
        epoch = int(ts // cohorts.epoch_s)
        if epoch == self._epoch:
            return self._epoch
        if epoch > self._epoch:
            self._epoch = epoch
            self._epoch_from = epoch * cohorts.epoch_s
            self._epoch_until = (epoch + 1) * cohorts.epoch_s
        return epoch

    def _offer(
        self,
        state: BehaviourState,
        key: AccountKey,
        call: ApiCall,
        cohorts: CohortModels,
        epoch: int,
        evidence: bool,
        learn: bool,
    ) -> None:
        """Offer the account's feature vector of `epoch` to its cohort, if it has the volume."""
        ts = call.ts
        profile = self._profile
        assert profile is not None
        # Most offers come from accounts with a call or two in the hour: the volume
        # feature alone turns them away, before the whole vector is computed.
        if profile.volume(state, ts) < _COHORT_MIN_VOLUME:
            return  # too little traffic in the hour to say what the account is like
        features = profile.features(state, ts)
        created = call.created_at
        age_days = None if created is None else (ts - created) / 86_400.0
        cohort = cohort_of(age_days, features[3])
        cohorts.offer(cohort, key, state, features, epoch, evidence, learn)

    def _suppressed(
        self, account: AccountState, ts: float, findings: Sequence[Finding], score: float
    ) -> bool:
        suppression = account.suppression
        if suppression is None:
            return False
        until, top, seen = suppression
        if ts < until and score < seen + self.rearm_margin and _top_signal(findings)[0] == top:
            return True
        account.suppression = None  # the behaviour changed, or the verdict expired
        return False

    def advance(self, watermark: float) -> list[Alert]:
        """Move event time to `watermark` (seconds) and resolve episodes quiet since then.

        Pass the largest `ts` seen so far (across the caller's input): then how often
        `advance` is called changes when resolutions come out, never what they say.
        Returns the `resolved` alerts ordered by their `event_time`, then `dedup_key`.
        """
        if watermark > self._watermark:
            self._watermark = watermark
        if self.cohorts is not None:
            self.cohorts.advance(self._watermark)
        cutoff = self._watermark - self.quiet_s
        stale = sorted(
            (episode.last_suspicious_ts, key)
            for key, episode in self._open.items()
            if episode.last_suspicious_ts < cutoff
        )
        accounts = self._accounts
        return [self._resolve(key, accounts[key], self._open[key]) for _, key in stale]

    def apply_verdict(
        self, tenant_id: str, account_id: str, verdict: Verdict, ts: float
    ) -> list[Alert]:
        """Learn an analyst's verdict on an account at event time `ts` (seconds).

        Both verdicts teach the feedback model the account's current signal scores
        (those of its open episode, else those it would score at `ts`). `benign` also
        closes the open episode, returning its `resolved` alert (with an
        `analyst_verdict` reason), forgets the calls withheld from the account's
        baseline, and suppresses re-alerting for the same top signal (see the class
        docstring). `confirmed` keeps any episode open. Unknown accounts are ignored.
        """
        if verdict not in ("confirmed", "benign"):
            raise ConfigurationError(f"verdict must be 'confirmed' or 'benign', got {verdict!r}")
        key = (tenant_id, account_id)
        account = self._accounts.get(key)
        if account is None:
            return []
        episode = account.episode
        if episode is not None:
            findings = episode.last_findings
            score = episode.last_score
        else:
            findings = self._judge_now(account, ts)
            score = max((f.score for f in findings), default=0.0)
        if self.feedback is not None and findings:
            self.feedback.learn(_signal_scores(findings), verdict == "confirmed")
        if verdict == "confirmed":
            return []
        if findings:
            top, _ = _top_signal(findings)
            account.suppression = (ts + self.suppress_s, top, score)
        if self._profile_index is not None:
            state = account.detector_states[self._profile_index]
            state.withheld = None  # an analyst called it normal: it may teach the baseline
        if episode is None:
            return []
        note = Signal(
            "analyst_verdict", 0.0, 0.0, None,
            "an analyst judged this behaviour benign; re-alerting is suppressed until it "
            "changes materially",
        )
        episode.last_notes = (*episode.last_notes, note)
        return [self._resolve(key, account, episode)]

    def _judge_now(self, account: AccountState, ts: float) -> tuple[Finding, ...]:
        if self._profile is None or self._profile_index is None:
            return ()
        state = account.detector_states[self._profile_index]
        finding = self._profile.judge(state, ts, None)
        return () if finding is None else (finding,)

    def _on_suspicious(
        self,
        key: AccountKey,
        account: AccountState,
        ts: float,
        score: float,
        findings: tuple[Finding, ...],
        notes: tuple[Signal, ...],
        alerts: list[Alert],
    ) -> None:
        severity = bisect_right(self.severity_thresholds, score)
        episode = account.episode
        tenant_id = key[0]
        if episode is None:
            openings = self._tenant_openings.get(tenant_id)
            if openings is None:
                openings = self._tenant_openings[tenant_id] = deque()
            while openings and openings[0] <= ts - 3600.0:
                openings.popleft()
            if len(openings) >= self.tenant_episode_limit:
                self._tenant_folded.setdefault(tenant_id, set()).add(key[1])
                return
            openings.append(ts)
            account.episodes_opened += 1
            notes = (*notes, *self._folded_note(tenant_id))
            episode = Episode(account.episodes_opened, ts, severity, score, findings, notes)
            account.episode = episode
            self._open[key] = episode
            alerts.append(self._alert(key, episode, "firing", severity, score, findings, notes, ts))
            return
        if ts < episode.first_ts:  # a late call can move the start back
            episode.first_ts = ts
        if ts >= episode.last_suspicious_ts:
            episode.last_suspicious_ts = ts
            episode.last_score = score
            episode.last_findings = findings
            episode.last_notes = notes
        if severity > episode.severity:
            episode.severity = severity
            notes = (*notes, *self._folded_note(tenant_id))
            alerts.append(self._alert(key, episode, "firing", severity, score, findings, notes, ts))

    def _folded_note(self, tenant_id: str) -> tuple[Signal, ...]:
        folded = self._tenant_folded.pop(tenant_id, None)
        if not folded:
            return ()
        limit = self.tenant_episode_limit
        return (Signal(
            "tenant_rate_limit", 0.0, float(len(folded)), float(limit),
            f"{len(folded):,} more accounts of this tenant crossed the alert threshold while it "
            f"was at its limit of {limit} new episodes per hour; they alert on their own once "
            "the tenant is under the limit",
        ),)

    def _resolve(self, key: AccountKey, account: AccountState, episode: Episode) -> Alert:
        account.episode = None
        del self._open[key]
        return self._alert(
            key,
            episode,
            "resolved",
            episode.severity,
            episode.last_score,
            episode.last_findings,
            episode.last_notes,
            episode.last_suspicious_ts,
        )

    def _alert(
        self,
        key: AccountKey,
        episode: Episode,
        status: AlertStatus,
        severity_index: int,
        score: float,
        findings: Sequence[Finding],
        notes: Sequence[Signal],
        event_time: float,
    ) -> Alert:
        tenant_id, account_id = key
        dedup_key = f"account:{tenant_id}:{account_id}"
        severity = SEVERITIES[severity_index]
        when = _utc(event_time)
        signals = [signal for finding in findings for signal in finding.signals]
        ranked = sorted(signals, key=lambda signal: -signal.score) + list(notes)
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

    # -- state that outlives the process ----------------------------------------------
    # The engine does no I/O; a worker persists accounts through these (see
    # streams/statestore.py): it snapshots accounts it changed, evicts idle ones from RAM
    # and imports them back on their next call, so state survives restarts and moves
    # with its partition.

    def import_account(self, tenant_id: str, account_id: str, account: AccountState) -> None:
        """Take over an account's state (from a snapshot), replacing any in memory."""
        key = (tenant_id, account_id)
        self._accounts[key] = account
        if account.episode is not None:
            self._open[key] = account.episode
        else:
            self._open.pop(key, None)

    def evict_account(self, tenant_id: str, account_id: str) -> AccountState | None:
        """Forget an account's state (the caller has it saved); returns what was held."""
        key = (tenant_id, account_id)
        self._open.pop(key, None)
        account = self._accounts.pop(key, None)
        if account is not None and self._last_state is not None and (
            self._profile_index is not None
            and account.detector_states[self._profile_index] is self._last_state
        ):
            self._last_state = None
        return account

    def shrink(self) -> None:
        """Rebuild the account tables after many accounts left them: a dict keeps the
        table of its largest size (tens of MB at 10^6 accounts) however many remain."""
        self._accounts = dict(self._accounts)
        self._open = dict(self._open)

    def idle_accounts(
        self, before_ts: float, keep: int | None = None, quiet_ts: float = -math.inf
    ) -> list[AccountKey]:
        """Accounts without a call since event time `before_ts`, without an open episode
        and without a cohort sample waiting for its epoch to be scored: the ones that may
        leave memory (see `awaits_cohort`). Empty without a `BehaviourDetector` (nothing
        else records when an account was last active).

        With `keep`, were more than `keep` accounts to stay, also the longest idle of
        those without a call since `quiet_ts` (later than `before_ts`), oldest first,
        until `keep` stay or none of them is left: a cap on the accounts held as objects
        for when many arrive at once, that spares those called within the last moments."""
        index = self._profile_index
        if index is None:
            return []
        cohorts = self.cohorts
        idle = [
            key for key, account in self._accounts.items()
            if account.episode is None
            and account.detector_states[index].last_ts < before_ts
            and (cohorts is None or not cohorts.is_sampled(key))
        ]
        excess = 0 if keep is None else len(self._accounts) - len(idle) - keep
        if excess > 0:
            quiet = (
                (last_ts, key) for key, account in self._accounts.items()
                if account.episode is None
                and before_ts <= (last_ts := account.detector_states[index].last_ts) < quiet_ts
                and (cohorts is None or not cohorts.is_sampled(key))
            )
            idle += [key for _, key in heapq.nsmallest(excess, quiet)]
        return idle

    def awaits_cohort(self, tenant_id: str, account_id: str) -> bool:
        """Whether the account may have a sample in a cohort epoch not yet scored. Such a
        sample holds the account's state object and writes its percentile there: were
        the account to leave memory and come back, the percentile would be lost."""
        cohorts = self.cohorts
        return cohorts is not None and cohorts.is_sampled((tenant_id, account_id))

    def accounts(self) -> list[AccountKey]:
        """Every account held in memory."""
        return list(self._accounts)

    def export_shared(self) -> dict[str, Any]:
        """What the engine knows beyond single accounts: event-time progress, the cohort
        models with the epoch samples not yet final (by account key: the states they
        refer to are the accounts' own), the feedback model and the tenant limits."""
        cohorts = self.cohorts
        pending = None
        if cohorts is not None:
            pending = {
                epoch: [(s[0], s[1], None, *s[3:]) for s in samples]
                for epoch, samples in cohorts._pending.items()
            }
        return {
            "watermark": self._watermark,
            "cohorts": None if cohorts is None else cohorts.cohorts,
            "pending": pending,
            "feedback": self.feedback,
            "tenant_openings": self._tenant_openings,
            "tenant_folded": self._tenant_folded,
        }

    @staticmethod
    def shared_accounts(shared: dict[str, Any]) -> set[AccountKey]:
        """Accounts whose state `shared` samples are to be scored into: import them before
        `import_shared`."""
        return {s[1] for samples in (shared["pending"] or {}).values() for s in samples if s[4]}

    def import_shared(self, shared: dict[str, Any]) -> None:
        """Restore what `export_shared` returned (of an engine with the same configuration)."""
        self._watermark = max(self._watermark, shared["watermark"])
        cohorts, index = self.cohorts, self._profile_index
        if cohorts is not None and shared["cohorts"] is not None:
            cohorts.cohorts = shared["cohorts"]
            if index is not None:
                accounts = self._accounts
                # Samples to be scored of accounts not held, or taken with another feature
                # vector (an older version), are left out: their epoch goes on without them.
                # A sample only learnt from needs no account.
                width = len(FEATURE_NAMES)
                pending = {
                    epoch: [
                        (s[0], s[1], accounts[s[1]].detector_states[index] if s[4] else None,
                         *s[3:])
                        for s in samples
                        if (not s[4] or s[1] in accounts) and len(s[3]) == width
                    ]
                    for epoch, samples in (shared["pending"] or {}).items()
                }
                cohorts.restore_pending(pending)
        if self.feedback is not None and shared["feedback"] is not None:
            self.feedback = shared["feedback"]
        self._tenant_openings = shared["tenant_openings"]
        self._tenant_folded = shared["tenant_folded"]
