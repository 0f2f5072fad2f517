"""The contract every per-account detector follows, and the `Signal` it reports.

Like river's anomaly detectors, a detector is a small class whose constructor arguments
are its whole configuration. Unlike them it holds no per-account data itself: the engine
keeps one compact state object per account and detector (`new_state()`), and hands it
back on every call, so that a million accounts cost a million small states and not a
million models. States must pickle (they go to a changelog), and must be small: an idle
account is budgeted well under 1 KiB across all detectors.

The engine drives a detector in this order for every API call of an account::

    signal = detector.score_one(state, call)   # read-only: the decision
    detector.observe_one(state, call)          # always: the evidence windows
    detector.learn_one(state, call)            # only when the call may teach baselines

`observe_one` and `learn_one` are split so that an account being flagged keeps counting
its own behaviour (its score can rise, fall and let the episode resolve) without
teaching its baseline that harvesting is normal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

from models.records import ApiCall

StateT = TypeVar("StateT")


@dataclass(frozen=True, slots=True)
class Signal:
    """What one detector concluded about one account at one API call.

    `score` is in [0, 1], high means suspicious, and is monotone in the evidence.
    `value` is the observed quantity the detector judged (for example a share of
    requests), `baseline` what is normal for the account (None when it has no
    history yet), and `detail` one sentence a responder understands without the code.
    """

    name: str
    score: float
    value: float
    baseline: float | None
    detail: str


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
        Called before `observe_one` and `learn_one` for the same call.
        """

    def observe_one(self, state: StateT, call: ApiCall) -> None:  # noqa: B027 - optional hook
        """Count `call` into the account's evidence windows. Called for every call.

        The default does nothing: detectors without windows only learn.
        """

    @abstractmethod
    def learn_one(self, state: StateT, call: ApiCall) -> None:
        """Teach the account's baseline that `call` is normal.

        The engine skips this for calls it judges suspicious, so a flagged account
        does not poison its own baseline.
        """
