"""The contract every per-account detector follows, and what it reports.

Like river's anomaly detectors, a detector is a small class whose constructor arguments
are its whole configuration. Unlike them it holds no per-account data itself: the engine
keeps one compact state object per account and detector (`new_state()`), and hands it
back on every call, so that a million accounts cost a million small states and not a
million models. States must pickle (they go to a changelog), and must be small: an idle
account is budgeted well under 1 KiB across all detectors.

The engine drives a detector in this order for every API call of an account::

    finding = detector.assess_one(state, call)  # count the call, judge the account
    if the engine judged the call suspicious:
        detector.withhold_one(state, call)      # keep it out of the baseline
    else:
        detector.learn_one(state, call)         # teach the baseline that it is normal

`assess_one` defaults to `score_one` (read-only: the decision) then `observe_one` (the
evidence windows), the simple contract of a one-signal detector. Counting and learning
are split so that an account being flagged keeps counting its own behaviour (its score
can rise, fall and let the episode resolve) without teaching its baseline that
harvesting is normal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

from models.records import ApiCall

StateT = TypeVar("StateT")


class Signal(msgspec.Struct, frozen=True):
    """What one detector concluded about one account at one API call.

    `score` is in [0, 1], high means suspicious, and is monotone in the evidence.
    `value` is the observed quantity the detector judged (for example a share of
    requests), `baseline` what is normal for the account or its peers (None when there
    is no history yet), and `detail` one sentence a responder understands without the
    code.
    """

    name: str
    score: float
    value: float
    baseline: float | None
    detail: str


class Finding(msgspec.Struct, frozen=True):
    """One detector's judgement of one call: a score in [0, 1] and how to explain it.

    Building the sentences of `Signal.detail` costs more than scoring, and only alerts
    need them, so a finding keeps the numbers it was computed from (`evidence`, a
    snapshot that later calls cannot change) and `explain(evidence)` turns them into
    signals on demand, strongest first. (A struct: the engine makes one per call it
    judges, and a frozen dataclass costs several times as much to build.)
    """

    score: float
    evidence: object
    explain: Callable[[object], tuple[Signal, ...]]

    @property
    def signals(self) -> tuple[Signal, ...]:
        """The reasons behind `score`, strongest first."""
        return self.explain(self.evidence)

    @classmethod
    def of(cls, signal: Signal) -> Finding:
        """A finding of exactly one already-built signal."""
        return cls(signal.score, (signal,), _as_signals)


def _as_signals(evidence: object) -> tuple[Signal, ...]:
    assert isinstance(evidence, tuple)
    return evidence


class AccountDetector(ABC, Generic[StateT]):
    """Scores one account's recent behaviour from a compact, picklable per-account state.

    Subclasses set `name` (the signal name written into alert reasons) and read no
    clocks: the event time `call.ts` drives every window and decay.
    """

    name: str

    @abstractmethod
    def new_state(self) -> StateT:
        """A fresh state for an account never seen before."""

    @abstractmethod
    def score_one(self, state: StateT, call: ApiCall) -> Signal | None:
        """Judge the account as it would be with `call` counted, without changing `state`.

        Returns None when there is nothing to report: not enough evidence, ordinary
        behaviour, or a field this detector needs that the gateway did not send.
        """

    def observe_one(self, state: StateT, call: ApiCall) -> None:  # noqa: B027 - optional hook
        """Count `call` into the account's evidence windows.

        The default does nothing: detectors without windows only learn.
        """

    def assess_one(self, state: StateT, call: ApiCall) -> Finding | None:
        """Count `call` and judge the account with it counted. Called for every call.

        The default is `score_one` then `observe_one`; a detector whose windows make
        scoring cheap once counted overrides this with one fused pass.
        """
        signal = self.score_one(state, call)
        self.observe_one(state, call)
        return None if signal is None else Finding.of(signal)

    @abstractmethod
    def learn_one(self, state: StateT, call: ApiCall) -> None:
        """Teach the account's baseline that `call` is normal.

        The engine skips this for calls it judges suspicious, so a flagged account
        does not poison its own baseline.
        """

    def withhold_one(self, state: StateT, call: ApiCall) -> None:  # noqa: B027 - optional hook
        """`call` was judged suspicious: keep it out of the baseline.

        Called instead of `learn_one`. The default does nothing, which is right for a
        detector whose `learn_one` does the learning; a detector that derives its
        baseline from its windows subtracts the call here instead.
        """
