"""Peer comparison: one River anomaly model per cohort of accounts, never per account.

A cohort is an account-age band (`new` under 7 days, `young` under 90, `established`,
`unknown` when the gateway sends no `account.created_at`) times a traffic class
(`single_turn` when most requests are single-turn and tool-free, else
`conversational`). Each cohort has a `river.anomaly.HalfSpaceTrees` over the
account-level feature vector of `models.behaviour.BehaviourDetector.features` (every
feature already in [0, 1], which is the scale HalfSpaceTrees assumes).

Accounts are sampled, not events: an account offers its feature vector at most once per
epoch (`epoch_s` of event time), at its first call of the epoch with enough traffic,
to be *scored* when it shows pattern evidence (only those accounts use a percentile),
and to be *learnt* in one epoch out of `learn_every` (a rotating, unbiased sample of
the population, so that the cohort's model and its percentiles describe the peers and
not the accounts under suspicion).
An epoch is *final* once the watermark passes its end by `lateness_s`; then its samples
are scored (before anything of the epoch is learnt), in a fixed order (cohort, then
account key), turned into a percentile among the cohort's recent scores, written into
each account's state, and learnt. An account may use its percentile from the event
time its epoch became final. Nothing therefore depends on how calls of different
accounts interleave, as long as no call arrives more than `lateness_s` behind the
watermark: an offline replay and a live run give the same scores.
"""

from __future__ import annotations

import bisect
import zlib
from collections import deque
from dataclasses import dataclass, field

from river import anomaly

from models.behaviour import FEATURE_NAMES, BehaviourState
from models.errors import ConfigurationError

# (cohort, account, state, features, score, learn): the account's state object only when
# the sample is scored (its percentile is written there); a sample only learnt from holds
# None.
_Sample = tuple[str, tuple[str, str], BehaviourState | None, tuple[float, ...], bool, bool]
AGE_BANDS_DAYS = ((7.0, "new"), (90.0, "young"))


def cohort_of(age_days: float | None, single_turn_share: float) -> str:
    """The cohort name of an account: `<age band>/<traffic class>`."""
    if age_days is None:
        band = "unknown"
    else:
        band = next((name for limit, name in AGE_BANDS_DAYS if age_days < limit), "established")
    traffic = "single_turn" if single_turn_share >= 0.6 else "conversational"
    return f"{band}/{traffic}"


@dataclass
class Cohort:
    """One cohort's anomaly model and the recent anomaly scores its percentiles use."""

    model: anomaly.HalfSpaceTrees
    learnt: int = 0
    recent: deque[float] = field(default_factory=deque)
    ordered: list[float] = field(default_factory=list)


class CohortModels:
    """The fleet's cohort models, fed sampled account vectors in event-time epochs.

    Percentiles are reported only once a cohort has learnt `min_learnt` samples; the
    `reservoir` most recent anomaly scores of the cohort rank a new one.
    """

    def __init__(
        self,
        epoch_s: float = 600.0,
        lateness_s: float = 120.0,
        n_trees: int = 10,
        height: int = 6,
        window_size: int = 100,
        min_learnt: int = 150,
        reservoir: int = 500,
        learn_every: int = 6,
        max_learn_per_epoch: int = 200,
        seed: int = 7,
    ) -> None:
        if not (epoch_s > 0 and lateness_s >= 0):
            raise ConfigurationError(
                f"need epoch_s > 0 and lateness_s >= 0, got {epoch_s}, {lateness_s}"
            )
        sizes = (n_trees, height, window_size, reservoir, learn_every, max_learn_per_epoch)
        if min(sizes) < 1 or min_learnt < 0:
            raise ConfigurationError("cohort model sizes must be positive")
        self.epoch_s = epoch_s
        self.lateness_s = lateness_s
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.min_learnt = min_learnt
        self.reservoir = reservoir
        self.learn_every = learn_every
        self.max_learn_per_epoch = max_learn_per_epoch
        self.seed = seed
        self.cohorts: dict[str, Cohort] = {}
        self._pending: dict[int, list[_Sample]] = {}
        self._sampled: dict[tuple[str, str], int] = {}  # account -> its scored samples pending
        self._next_final = float("inf")

    def epoch(self, ts: float) -> int:
        """The epoch number of event time `ts` (seconds)."""
        return int(ts // self.epoch_s)

    def offer(
        self,
        cohort: str,
        key: tuple[str, str],
        state: BehaviourState,
        features: tuple[float, ...],
        epoch: int,
        score: bool,
        learn: bool,
    ) -> None:
        """Queue one account's vector for `epoch`; the caller offers once per epoch. Only
        a sample to be scored keeps the account's state object (see `is_sampled`)."""
        self._pending.setdefault(epoch, []).append(
            (cohort, key, state if score else None, features, score, learn))
        if score:
            self._sampled[key] = self._sampled.get(key, 0) + 1
        final_at = (epoch + 1) * self.epoch_s + self.lateness_s
        if final_at < self._next_final:
            self._next_final = final_at

    def is_sampled(self, key: tuple[str, str]) -> bool:
        """Whether the account has a sample to be scored in an epoch not yet final. The
        sample holds the account's state object, into which scoring writes the cohort
        percentile. (A sample only learnt from holds nothing of the account.)"""
        return key in self._sampled

    def restore_pending(self, pending: dict[int, list[_Sample]]) -> None:
        """Take over the samples of epochs not yet scored (of a restored engine)."""
        self._pending = pending
        self._sampled = {}
        for samples in pending.values():
            for sample in samples:
                if sample[4]:
                    self._sampled[sample[1]] = self._sampled.get(sample[1], 0) + 1
        self._next_final = min(
            ((e + 1) * self.epoch_s + self.lateness_s for e in pending), default=float("inf")
        )

    def advance(self, watermark: float) -> None:
        """Score and learn every epoch final at `watermark` (event-time seconds)."""
        if watermark < self._next_final:
            return
        pending = self._pending
        for epoch in sorted(pending):
            final_at = (epoch + 1) * self.epoch_s + self.lateness_s
            if final_at > watermark:
                break
            self._finalise(pending.pop(epoch), epoch, final_at)
        self._next_final = min(
            ((e + 1) * self.epoch_s + self.lateness_s for e in pending), default=float("inf")
        )

    def should_learn(self, account_id: str, epoch: int) -> bool:
        """Whether the account is in `epoch`'s learning sample (a fixed rotation)."""
        return (epoch + ord(account_id[-1]) + len(account_id)) % self.learn_every == 0

    def _finalise(self, samples: list[_Sample], epoch: int, final_at: float) -> None:
        sampled = self._sampled
        for sample in samples:
            if sample[4]:
                left = sampled.pop(sample[1]) - 1
                if left:
                    sampled[sample[1]] = left
        # A fixed order that does not depend on arrival; learners beyond the cap of
        # their cohort (taken in a scrambled but reproducible order) are only scored.
        samples.sort(key=lambda s: (s[0], zlib.crc32(f"{epoch}|{s[1][0]}|{s[1][1]}".encode())))
        learners: dict[str, int] = {}
        for i, sample in enumerate(samples):
            if sample[5]:
                taken = learners.get(sample[0], 0)
                if taken >= self.max_learn_per_epoch:
                    samples[i] = (*sample[:5], False)
                else:
                    learners[sample[0]] = taken + 1
        usable_from = int(final_at) + (final_at > int(final_at))
        learning = []
        for name, _, state, features, score_it, learn_it in samples:
            cohort = self.cohorts.get(name)
            if cohort is None:
                model = anomaly.HalfSpaceTrees(
                    n_trees=self.n_trees, height=self.height, window_size=self.window_size,
                    seed=self.seed,
                )
                cohort = self.cohorts[name] = Cohort(model)
            if not (score_it or learn_it):
                continue
            x = dict(zip(FEATURE_NAMES, features, strict=True))
            if learn_it:
                learning.append((cohort, x))
            if cohort.learnt < self.window_size:
                continue  # the trees have not seen a full window: scores mean nothing yet
            score = cohort.model.score_one(x)  # type: ignore[no-untyped-call]
            if (score_it and state is not None and cohort.learnt >= self.min_learnt
                    and len(cohort.ordered) >= 50):
                rank = bisect.bisect_left(cohort.ordered, score) / len(cohort.ordered)
                state.cohort = (usable_from << 10) | min(1000, round(1000 * rank))
            if learn_it:
                self._remember(cohort, score)
        for cohort, x in learning:  # the whole epoch is scored before any of it is learnt
            cohort.model.learn_one(x)  # type: ignore[no-untyped-call]
            cohort.learnt += 1

    def _remember(self, cohort: Cohort, score: float) -> None:
        cohort.recent.append(score)
        bisect.insort(cohort.ordered, score)
        if len(cohort.recent) > self.reservoir:
            old = cohort.recent.popleft()
            del cohort.ordered[bisect.bisect_left(cohort.ordered, old)]
