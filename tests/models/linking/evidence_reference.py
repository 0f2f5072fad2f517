"""`KeyEvidence` as it was in Python before it moved to Rust (commit 164877a, verbatim
from `class _Member` on), on top of today's class for its parameters and their checks.

`test_evidence_differential.py` runs it side by side with `models.linking.KeyEvidence`
(the Rust of `native/src/evidence.rs`): the same observations in, the same edges,
weights and sizes must come out. Do not "improve" it; it is the specification the Rust
is checked against.
"""

from __future__ import annotations

import math
import zlib
from array import array
from bisect import bisect_left
from typing import Any

from models.linking import evidence
from models.linking.evidence import LinkEdge
from models.linking.observe import LinkObservation


class _Member:
    __slots__ = ("tenant_id", "suspicion", "first_seen", "last_ts", "edge_ts", "edge_suspicion")

    def __init__(self, tenant_id: str, suspicion: float, first_seen: float, ts: float) -> None:
        self.tenant_id = tenant_id
        self.suspicion = suspicion
        self.first_seen = first_seen
        self.last_ts = ts
        self.edge_ts = -math.inf  # no edge emitted for this member yet
        self.edge_suspicion = suspicion


class _KeyState:
    """One link key: its members oldest first (by last observation), counts, sketches."""

    __slots__ = (
        "kind",
        "key",
        "members",
        "suspicious",
        "others",
        "calm",
        "tenants",
        "sketch",
        "previous_sketch",
        "sketch_window",
        "last_ts",
        "seq",
        "sent_weight",
        "linkable",
    )

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self.members: dict[str, _Member] = {}
        self.suspicious = 0
        self.others = 0  # members below suspicious_from
        self.calm = 0  # of them, members below calm_below
        self.tenants: dict[str, int] = {}  # tenant -> suspicious members of it
        self.sketch: array[int] | None = None  # calm accounts, once members overflowed
        self.previous_sketch: array[int] | None = None
        self.sketch_window = 0
        self.last_ts = -math.inf
        self.seq = 0
        self.sent_weight = 0.0
        self.linkable = False


def _account_hash(account_id: str) -> int:
    return zlib.crc32(account_id.encode()) or 1


def _kmv_add(sketch: array[int], value: int, size: int) -> None:
    at = bisect_left(sketch, value)
    if at < len(sketch) and sketch[at] == value:
        return
    if len(sketch) >= size:
        if at >= size:
            return
        sketch.pop()
    sketch.insert(at, value)


def _kmv_estimate(sketch: array[int] | None, size: int) -> float:
    if sketch is None:
        return 0.0
    if len(sketch) < size:
        return float(len(sketch))
    return (size - 1) / (sketch[-1] / 2.0**32)


class KeyEvidence(evidence.KeyEvidence):
    """Today's class for its parameters and their checks; the Python state and rules
    below in place of the Rust core."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._keys: dict[tuple[str, str], _KeyState] = {}
        self._solo: dict[tuple[str, str], tuple[str, _Member]] = {}  # keys of one member

    def add_many(self, observations: list[LinkObservation], edges: list[LinkEdge]) -> float:
        """`add` for each, as the link agent once called it (not the Rust core's)."""
        latest = -math.inf
        for obs in observations:
            edges.extend(self.add(obs))
            latest = max(latest, obs.ts)
        return latest

    def __len__(self) -> int:
        """Link keys with state."""
        return len(self._keys) + len(self._solo)

    @property
    def members_tracked(self) -> int:
        """Members held across all keys."""
        return sum(len(state.members) for state in self._keys.values()) + len(self._solo)

    def weight(self, kind: str, key: str) -> float:
        """The current weight of a key (0 for a key without state or with one member)."""
        state = self._keys.get((kind, key))
        return 0.0 if state is None else self._weight(state)

    def expire(self, watermark: float) -> int:
        """Drop keys that would start afresh at their next observation after `watermark`
        (event time): idle for more than `member_ttl_s`, or two of it once they keep a
        popularity sketch. Output-neutral. Returns the number of keys dropped."""
        ttl = self.member_ttl_s
        cutoff_solo = watermark - ttl
        stale = [
            ident
            for ident, state in self._keys.items()
            if state.last_ts < watermark - (ttl if state.sketch is None else 2 * ttl)
        ]
        for ident in stale:
            del self._keys[ident]
        lone = [ident for ident, (_, member) in self._solo.items() if member.last_ts < cutoff_solo]
        for ident in lone:
            del self._solo[ident]
        return len(stale) + len(lone)

    def add(self, obs: LinkObservation) -> list[LinkEdge]:
        """Count one observation into its key and return the edges it causes."""
        ident = (obs.kind, obs.key)
        state = self._keys.get(ident)
        ts = obs.ts
        account_id = obs.account_id
        if state is None:
            solo = self._solo.get(ident)
            if solo is None or solo[0] == account_id or solo[1].last_ts < ts - self.member_ttl_s:
                # one member links nothing: most keys (one-off prompts) stay this compact
                if solo is not None and solo[0] == account_id:
                    solo[1].suspicion = obs.suspicion
                    solo[1].last_ts = max(ts, solo[1].last_ts)
                else:
                    lone = _Member(obs.tenant_id, obs.suspicion, obs.first_seen, ts)
                    self._solo[ident] = (account_id, lone)
                return []
            del self._solo[ident]
            state = _KeyState(obs.kind, obs.key)
            self._keys[ident] = state
            solo_id, solo_member = solo
            state.members[solo_id] = solo_member
            state.last_ts = solo_member.last_ts
            self._count(state, solo_member)
        else:
            self._evict_stale(state, ts)
        if ts > state.last_ts:
            state.last_ts = ts
        members = state.members
        member = members.pop(account_id, None)
        if member is None:
            if len(members) >= self.max_members:
                self._evict_oldest(state)
            member = _Member(obs.tenant_id, obs.suspicion, obs.first_seen, ts)
        else:
            self._uncount(state, member)
            member.suspicion = obs.suspicion
            if ts > member.last_ts:
                member.last_ts = ts
        members[account_id] = member  # most recently seen last
        self._count(state, member)
        if state.sketch is not None and member.suspicion < self.calm_below:
            _kmv_add(state.sketch, _account_hash(account_id), self.sketch_size)
        return self._edges(state, account_id, member, ts)

    # ---------------------------------------------------------------- internals

    def _edges(
        self, state: _KeyState, account_id: str, member: _Member, ts: float
    ) -> list[LinkEdge]:
        weight = self._weight(state)
        floor = self.emit_min / 2 if state.linkable else self.emit_min
        linkable = len(state.members) >= 2 and weight >= floor
        edges: list[LinkEdge] = []
        if linkable:
            if not state.linkable:  # newly qualifying: every member gets its edge
                for other_id, other in state.members.items():
                    edges.append(self._edge(state, other_id, other, weight, ts))
            elif (
                member.edge_ts == -math.inf
                or abs(member.suspicion - member.edge_suspicion) >= self.suspicion_step
                or ts - member.edge_ts >= self.edge_refresh_s
                or abs(weight - state.sent_weight) >= self.weight_step
            ):
                edges.append(self._edge(state, account_id, member, weight, ts))
        elif state.linkable:  # stopped qualifying: say so once, re-send all when it's back
            edges.append(self._edge(state, account_id, member, weight, ts))
            for other in state.members.values():
                other.edge_ts = -math.inf
        state.linkable = linkable
        return edges

    def _edge(
        self, state: _KeyState, account_id: str, member: _Member, weight: float, ts: float
    ) -> LinkEdge:
        state.seq += 1
        state.sent_weight = weight
        member.edge_ts = ts
        member.edge_suspicion = member.suspicion
        return LinkEdge(
            kind=state.kind,
            key=state.key,
            tenant_id=member.tenant_id,
            account_id=account_id,
            weight=weight,
            suspicion=member.suspicion,
            ts=ts,
            seq=state.seq,
            members=len(state.members),
            first_seen=member.first_seen,
        )

    def _weight(self, state: _KeyState) -> float:
        tenants = len(state.tenants)
        if tenants == 0:
            return 0.0
        suspicious = state.suspicious
        others = float(state.others)
        calm = float(state.calm)
        if state.sketch is not None:
            size = self.sketch_size
            calm = max(
                calm,
                _kmv_estimate(state.sketch, size),
                _kmv_estimate(state.previous_sketch, size),
            )
            others = max(others, calm)
        kind = state.kind
        support = 1.0 - 0.5 ** (tenants - 1)
        purity = math.pow(suspicious / (suspicious + others), self.purity_exponents.get(kind, 1.0))
        rarity = 1.0 / (1.0 + (calm / self.calm_tolerance) ** 2)
        weight = self.kind_weights.get(kind, 0.0) * support * purity * rarity
        return round(weight, 4)

    def _count(self, state: _KeyState, member: _Member) -> None:
        if member.suspicion >= self.suspicious_from:
            state.suspicious += 1
            state.tenants[member.tenant_id] = state.tenants.get(member.tenant_id, 0) + 1
        else:
            state.others += 1
            if member.suspicion < self.calm_below:
                state.calm += 1

    def _uncount(self, state: _KeyState, member: _Member) -> None:
        if member.suspicion >= self.suspicious_from:
            state.suspicious -= 1
            left = state.tenants[member.tenant_id] - 1
            if left:
                state.tenants[member.tenant_id] = left
            else:
                del state.tenants[member.tenant_id]
        else:
            state.others -= 1
            if member.suspicion < self.calm_below:
                state.calm -= 1

    def _evict_stale(self, state: _KeyState, ts: float) -> None:
        members = state.members
        cutoff = ts - self.member_ttl_s
        while members:
            oldest_id = next(iter(members))
            oldest = members[oldest_id]
            if oldest.last_ts >= cutoff:
                break
            del members[oldest_id]
            self._uncount(state, oldest)
        window = int(ts // self.member_ttl_s)
        if state.sketch is not None and window != state.sketch_window:
            moved = window - state.sketch_window
            state.previous_sketch = state.sketch if moved == 1 else None
            state.sketch = array("I")
            state.sketch_window = window
        if not members and not state.sketch and not state.previous_sketch:
            # nothing left that a fresh key would not also lack: start afresh
            state.sketch = state.previous_sketch = None
            state.seq = 0
            state.sent_weight = 0.0
            state.linkable = False

    def _evict_oldest(self, state: _KeyState) -> None:
        members = state.members
        oldest_id = next(iter(members))
        oldest = members.pop(oldest_id)
        self._uncount(state, oldest)
        if state.sketch is None:
            # from now on calm popularity outgrows the member map: count it in a sketch
            state.sketch = array("I")
            state.previous_sketch = None
            state.sketch_window = int(state.last_ts // self.member_ttl_s)
            size = self.sketch_size
            for account_id, member in members.items():
                if member.suspicion < self.calm_below:
                    _kmv_add(state.sketch, _account_hash(account_id), size)
        if oldest.suspicion < self.calm_below:
            _kmv_add(state.sketch, _account_hash(oldest_id), self.sketch_size)
