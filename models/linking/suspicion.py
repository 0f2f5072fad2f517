"""A stand-in behavioural suspicion per account, until the engine exposes its own.

Campaign linking needs, for every call, how suspicious the calling account's behaviour
is, independently of its volume: a swarm key sending two requests an hour must be able
to look as suspicious as a hydra key sending two a minute. `DetectionEngine` will expose
that as `engine.last_suspicion`; until then tests and the bench use this helper. It is
deliberately small and separate: swap it out by passing the engine's value to
`CampaignLinker.observe` instead.

The suspicion is a smoothed share of *extraction-shaped* requests: harvest-shaped
reasoning-trace requests (asks for the trace, first turn, no tools, long answer), several
samples or log-probabilities, a likely jailbreak or a hidden-instruction probe. Counts
decay in event time, and a prior (`prior` as if seen over `prior_weight` requests) keeps
an account with one or two requests near the prior instead of at 0 or 1.

`ExtractionShareSuspicion.update` runs in Rust (`native/`, `ShareCore`) on the same
per-account arrays with the same arithmetic, as it runs once per call on the worker's hot
path; `tests/models/linking/reference.py` keeps the Python it replaced, and
`tests/models/linking/test_differential.py` holds the two equal.
"""

from __future__ import annotations

import math
from array import array

from distillwatch_native import ShareCore

from models.errors import ConfigurationError
from models.native import RebuiltCore
from models.records import ApiCall


class ExtractionShareSuspicion(RebuiltCore[ShareCore]):
    """Per-account suspicion in [0, 1]: the decayed, smoothed share of extraction-shaped calls.

    With `s` shaped calls among `n` (both decayed with half-life `half_life_s` seconds of
    event time) the suspicion is `(s + prior * prior_weight) / (n + prior_weight)`. With
    the defaults an account's first call moves it from 0.2 to 0.6 (shaped) or 0.1 (not),
    ten shaped calls in a row give 0.93 and ten ordinary ones 0.02.

    >>> suspicion = ExtractionShareSuspicion()
    >>> harvest = ApiCall(event_id="e1", ts=1_800_000_000.0, tenant_id="org_1",
    ...                   account_id="key_1", model="frontier-large", status=200,
    ...                   input_tokens=300, output_tokens=4096, stop_reason="max_tokens",
    ...                   has_prompt=True, cot_request=True)
    >>> round(suspicion.update(harvest), 2)
    0.6
    """

    def __init__(
        self, half_life_s: float = 6 * 3600.0, prior: float = 0.2, prior_weight: float = 1.0
    ) -> None:
        if not half_life_s > 0:
            raise ConfigurationError(f"half_life_s must be positive, got {half_life_s}")
        if not 0.0 <= prior <= 1.0 or not prior_weight > 0:
            raise ConfigurationError(
                f"need 0 <= prior <= 1 and prior_weight > 0, got {prior}, {prior_weight}"
            )
        self.half_life_s = half_life_s
        self.prior = prior
        self.prior_weight = prior_weight
        self._decay_per_s = math.log(2.0) / half_life_s
        # account_id -> [shaped, calls, last ts]: three doubles, 88 bytes
        self._accounts: dict[str, array[float]] = {}
        self._core = self._new_core()

    def _new_core(self) -> ShareCore:
        return ShareCore(self._decay_per_s, self.prior, self.prior_weight, array("d", bytes(24)))

    def __len__(self) -> int:
        return len(self._accounts)

    def export_account(self, account_id: str) -> array[float] | None:
        """The account's state, for a snapshot; None if it has none."""
        return self._accounts.get(account_id)

    def import_account(self, account_id: str, state: array[float]) -> None:
        """Take over an account's state from a snapshot."""
        self._accounts[account_id] = state

    def forget_account(self, account_id: str) -> None:
        """Drop an account's state from memory (its snapshot holds it)."""
        self._accounts.pop(account_id, None)

    def shrink(self) -> None:
        """Rebuild the per-account table after many accounts left it: a dict keeps the
        table of its largest size (tens of MB at 10^6 accounts) however many remain."""
        self._accounts = dict(self._accounts)

    def update(self, call: ApiCall) -> float:
        """Count `call` into its account and return the account's suspicion after it."""
        return self._core.update(self._accounts, call)

    def native(self) -> tuple[ShareCore, dict[str, array[float]]]:
        """The Rust core and the account arrays it updates, for the link observer's run over
        many calls (`LinkObserver.observe_many`)."""
        return self._core, self._accounts


class LinkingSuspicion:
    """The suspicion the linker is told about an account after each of its calls.

    The engine's behavioural suspicion is earned over tens of requests, which a swarm key
    sending two an hour takes a day to reach. The linker needs a verdict per key sooner,
    so it takes the larger of the engine's value and this account's share of
    extraction-shaped calls (`ExtractionShareSuspicion`, which a single shaped call moves).
    Link weights already discount accounts of one tenant and popular infrastructure, so an
    early, noisy per-key value cannot build a campaign out of benign accounts alone.
    """

    def __init__(self, share: ExtractionShareSuspicion | None = None) -> None:
        self.share = ExtractionShareSuspicion() if share is None else share

    def update(self, call: ApiCall, engine_suspicion: float) -> float:
        """Count `call` and return the account's suspicion in [0, 1] for linking."""
        share = self.share.update(call)
        return share if share > engine_suspicion else engine_suspicion
