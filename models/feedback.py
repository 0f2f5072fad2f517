"""Analyst feedback: which signal combinations analysts confirm, learnt online.

A small `river.linear_model.LogisticRegression` over the signal scores of an account
(`{signal name: score}`, every value in [0, 1]) learns from each verdict: `confirmed`
is 1, `benign` is 0. Its probability `p` blends into the engine's calibrated score only
once it has seen `min_verdicts` verdicts in all, of both kinds: the score's log-odds
move by `weight * logit(p)`, at most `max_shift` either way, so a combination analysts
confirm is boosted, one they dismiss is damped, and an undecided model (`p = 0.5`)
changes nothing. Only accounts that already show pattern evidence are blended:
feedback re-ranks what the detectors found, it never raises an alert from nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from river import linear_model, optim

from models.errors import ConfigurationError


class FeedbackModel:
    """Online logistic regression from analyst verdicts to P(confirmed | signals).

    >>> model = FeedbackModel(min_verdicts=4)
    >>> for _ in range(3):
    ...     model.learn({"cot_request_rate": 0.9, "account_age": 1.0}, confirmed=True)
    ...     model.learn({"multi_sample_logprobs": 0.7}, confirmed=False)
    >>> model.ready
    True
    >>> model.predict({"cot_request_rate": 0.9, "account_age": 1.0}) > 0.5
    True
    """

    def __init__(
        self,
        min_verdicts: int = 20,
        weight: float = 0.5,
        max_shift: float = 1.5,
        learning_rate: float = 0.5,
    ) -> None:
        if min_verdicts < 1:
            raise ConfigurationError(f"min_verdicts must be at least 1, got {min_verdicts}")
        if not (weight >= 0.0 and max_shift >= 0.0):
            raise ConfigurationError(
                f"weight and max_shift must be non-negative, got {weight}, {max_shift}"
            )
        if not learning_rate > 0:
            raise ConfigurationError(f"learning_rate must be positive, got {learning_rate}")
        self.min_verdicts = min_verdicts
        self.weight = weight
        self.max_shift = max_shift
        self.learning_rate = learning_rate
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate))
        self.confirmed = 0
        self.benign = 0

    @property
    def ready(self) -> bool:
        """Enough verdicts of both kinds for the model's output to count."""
        return (
            self.confirmed + self.benign >= self.min_verdicts
            and self.confirmed > 0
            and self.benign > 0
        )

    def learn(self, signals: Mapping[str, float], confirmed: bool) -> None:
        """Learn one verdict about an account whose signals scored `signals`."""
        self.model.learn_one(dict(signals), confirmed)
        if confirmed:
            self.confirmed += 1
        else:
            self.benign += 1

    def predict(self, signals: Mapping[str, float]) -> float:
        """P(an analyst confirms | signals), whether or not the model is `ready`."""
        return float(self.model.predict_proba_one(dict(signals)).get(True, 0.0))  # type: ignore[no-untyped-call]

    def blend(self, score: float, signals: Mapping[str, float]) -> float:
        """`score` moved towards the analysts' verdict, once the model is `ready`."""
        if not self.ready or not 0.0 < score < 1.0:
            return score
        p = min(max(self.predict(signals), 1e-6), 1.0 - 1e-6)
        shift = self.weight * math.log(p / (1.0 - p))
        shift = max(-self.max_shift, min(self.max_shift, shift))
        return 1.0 / (1.0 + math.exp(-(math.log(score / (1.0 - score)) + shift)))
