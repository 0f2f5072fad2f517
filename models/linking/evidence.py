"""Stage 2 of campaign linking, partitioned by link key: how much one shared key means.

`KeyEvidence` holds, for each link key `(kind, key)` it is given, the recent accounts
that showed it (capped, evicted in event time) and a popularity sketch, and turns the
stream of `LinkObservation`s into a much smaller stream of `LinkEdge`s: "account A is
linked through key K, which now weighs w". Edges form a star around each key (account
to key, never account to account), so a key shared by n accounts costs n edges, not
n^2 pairs.

The weight of a key says how much sharing it suggests a common operator:

    weight = kind_weight * support * purity ** purity_exponent[kind] * rarity

- `kind_weight` by kind (`DEFAULT_KIND_WEIGHTS`): a payment card or a TLS client build
  shared across tenants is strong evidence, a prompt template medium, a network prefix
  with user agent, a signup burst or a common onset weak;
- `support = 1 - 2 ** -(t - 1)` for `t` distinct tenants among the key's *suspicious*
  members (suspicion >= `suspicious_from`): sharing within one tenant is ordinary (an
  enterprise's keys share its card and egress), sharing across tenants is the hydra's
  tell. One tenant gives 0, two 0.5, three 0.75;
- `purity = s / (s + n)` for `s` suspicious and `n` other members: a key mostly used by
  accounts that do not look suspicious weighs less. The exponent is per kind
  (`DEFAULT_PURITY_EXPONENTS`): a TLS fingerprint is a product of the client software,
  so a stock library's is shared by everyone using that library, suspicious or not, and
  only a near-exclusive membership means a campaign's own build (exponent 3); a card
  or a prompt template shared across tenants is unusual whoever shares it (exponent 1);
- `rarity = 1 / (1 + (c / calm_tolerance) ** 2)` for `c` *calm* members (suspicion
  below `calm_below`: established ordinary accounts): popularity among ordinary
  accounts. A corporate egress or a stock client used by hundreds of calm keys weighs
  next to nothing whoever else uses it, while a TLS build shared by 200 fresh suspicious
  keys keeps its full weight. Beyond `max_members` the count of calm accounts comes from
  a k-minimum-values sketch over the last two `member_ttl_s` windows.

Per-key state: at most `max_members` members and, for keys that overflowed, two
sketches of `sketch_size` 32-bit hashes. A key with a single member (most keys: one-off
prompt templates, one account's own card) is held as just that member.

The state and the arithmetic are in Rust (`native/src/evidence.rs`, `EvidenceCore`): the
link agent counts about one observation per two calls, which took 2 µs each in Python
(bench/PROFILE.md, "Sixteenth pass"). This class checks the parameters and holds the
core; `tests/models/linking/evidence_reference.py` keeps the Python it was ported from,
and `test_evidence_differential.py` holds the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from distillwatch_native import EvidenceCore

from models.errors import ConfigurationError
from models.linking.keys import KINDS
from models.linking.observe import LinkObservation

DEFAULT_KIND_WEIGHTS: dict[str, float] = {
    "payment": 1.0,
    "tls": 0.9,
    "template": 0.7,
    "netua": 0.4,
    "signup": 0.3,
    "onset": 0.2,
}

DEFAULT_PURITY_EXPONENTS: dict[str, float] = {"tls": 3.0, "netua": 2.0}


@dataclass(frozen=True, slots=True)
class LinkEdge:
    """Account `account_id` of `tenant_id` is linked through key `(kind, key)`.

    `weight` is the key's weight in [0, 1] when the edge was emitted: the latest edge of a
    key by `(ts, seq)` carries its current weight for all its members. `suspicion` and
    `first_seen` are the account's (see `LinkObservation`), `members` how many accounts the
    key holds now. `ts` is event time in seconds. Plain fields only (msgspec round-trips it).
    """

    kind: str
    key: str
    tenant_id: str
    account_id: str
    weight: float
    suspicion: float
    ts: float
    seq: int
    members: int
    first_seen: float

    @property
    def hub(self) -> str:
        """`f"{kind}:{key}"`: the key as a node of the cluster graph."""
        return f"{self.kind}:{self.key}"


class KeyEvidence:
    """Weighs link keys from observations and emits the account-to-key edges that matter.

    Keys are independent: any split of keys across workers gives the same edges per key,
    provided each key's observations arrive in event-time order. Edges are emitted only
    for keys with at least two members whose weight reaches `emit_min` (keeping it until
    it falls under half of that), and then only for a member that is new to the key, whose
    suspicion moved by `suspicion_step`, whose last edge is `edge_refresh_s` old, or when
    the key's weight moved by `weight_step` since the key's last edge. When a key stops
    qualifying, one edge with its new weight says so.

    >>> evidence = KeyEvidence()
    >>> def seen(account, tenant, suspicion, ts):
    ...     obs = LinkObservation("tls", "t13d_campaign_build", tenant, account, ts,
    ...                           suspicion, ts)
    ...     return evidence.add(obs)
    >>> seen("key_1", "org_1", 0.8, 0.0)  # a key with one member links nothing
    []
    >>> seen("key_2", "org_2", 0.8, 1.0) == []  # two tenants share it: support 0.5
    False
    >>> round(evidence.weight("tls", "t13d_campaign_build"), 2)
    0.45
    """

    def __init__(
        self,
        kind_weights: Mapping[str, float] | None = None,
        purity_exponents: Mapping[str, float] | None = None,
        max_members: int = 256,
        member_ttl_s: float = 5400.0,
        suspicious_from: float = 0.4,
        calm_below: float = 0.1,
        calm_tolerance: float = 10.0,
        emit_min: float = 0.1,
        weight_step: float = 0.05,
        suspicion_step: float = 0.1,
        edge_refresh_s: float = 900.0,
        sketch_size: int = 64,
    ) -> None:
        weights = dict(DEFAULT_KIND_WEIGHTS if kind_weights is None else kind_weights)
        unknown = sorted(set(weights) - set(KINDS))
        if unknown or not all(0.0 <= w <= 1.0 for w in weights.values()):
            raise ConfigurationError(
                f"kind_weights must map kinds of {KINDS} to [0, 1], got {weights}"
            )
        if max_members < 2 or sketch_size < 2:
            raise ConfigurationError(
                f"max_members and sketch_size must be >= 2, got {max_members}, {sketch_size}"
            )
        if not member_ttl_s > 0 or not edge_refresh_s > 0 or not calm_tolerance > 0:
            raise ConfigurationError(
                "member_ttl_s, edge_refresh_s and calm_tolerance must be positive, got "
                f"{member_ttl_s}, {edge_refresh_s}, {calm_tolerance}"
            )
        if not 0.0 <= calm_below <= suspicious_from <= 1.0:
            raise ConfigurationError(
                f"need 0 <= calm_below <= suspicious_from <= 1, got {calm_below}, {suspicious_from}"
            )
        exponents = dict(DEFAULT_PURITY_EXPONENTS if purity_exponents is None else purity_exponents)
        if set(exponents) - set(KINDS) or not all(e >= 0 for e in exponents.values()):
            raise ConfigurationError(
                f"purity_exponents must map kinds of {KINDS} to >= 0, got {exponents}"
            )
        self.kind_weights = weights
        self.purity_exponents = exponents
        self.max_members = max_members
        self.member_ttl_s = member_ttl_s
        self.suspicious_from = suspicious_from
        self.calm_below = calm_below
        self.calm_tolerance = calm_tolerance
        self.emit_min = emit_min
        self.weight_step = weight_step
        self.suspicion_step = suspicion_step
        self.edge_refresh_s = edge_refresh_s
        self.sketch_size = sketch_size
        self._core = EvidenceCore(
            LinkEdge, weights, exponents, max_members, member_ttl_s, suspicious_from,
            calm_below, calm_tolerance, emit_min, weight_step, suspicion_step, edge_refresh_s,
            sketch_size,
        )

    def add(self, obs: LinkObservation) -> list[LinkEdge]:
        """Count one observation into its key and return the edges it causes."""
        return self._core.add(obs)

    def add_many(self, observations: list[LinkObservation], edges: list[LinkEdge]) -> float:
        """Count `observations` in order, appending the edges they cause to `edges`;
        returns their latest event time (-inf for none). Raises on one it cannot read,
        with those before it counted and their edges appended."""
        return self._core.add_many(observations, edges)

    def add_record(self, value: bytes, start: int, edges: list[LinkEdge]) -> float | None:
        """`add_many` of the observations of a link-observations record (`value[start:]`,
        a msgpack list of them) read straight from its bytes, when they are as the link
        observer writes them; None, with nothing counted, for any other form (decode it
        with msgspec then: `streams.internal.count_observations_or_tick`)."""
        return self._core.add_record(value, start, edges)

    def expire(self, watermark: float) -> int:
        """Drop keys that would start afresh at their next observation after `watermark`
        (event time): idle for more than `member_ttl_s`, or two of it once they keep a
        popularity sketch. Output-neutral. Returns the number of keys dropped."""
        return self._core.expire(watermark)

    def weight(self, kind: str, key: str) -> float:
        """The current weight of a key (0 for a key without state or with one member)."""
        return self._core.weight(kind, key)

    def __len__(self) -> int:
        """Link keys with state."""
        return len(self._core)

    @property
    def members_tracked(self) -> int:
        """Members held across all keys."""
        return self._core.members_tracked

