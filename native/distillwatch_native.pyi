"""Type stubs of the Rust extension built from native/src/lib.rs (see streams/edge.py)."""

from collections.abc import Sequence
from typing import Any

class EdgeCall:
    """One valid call at the edge: what orders it, its by-account partition, its payload."""

    def __init__(self, ts: float, tenant_id: str, account_id: str, partition: int,
                 payload: bytes) -> None: ...
    @property
    def ts(self) -> float: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def payload(self) -> bytes:
        """The msgpack of the call's `models.records.ApiCall`."""

class EdgeCalls(Sequence[EdgeCall]):
    """Calls at the edge as Rust rows (a record's, or a release of `EdgeBuffer`); an
    `EdgeCall` is made for each one Python takes out."""

    @staticmethod
    def of(calls: list[EdgeCalls | EdgeCall]) -> EdgeCalls:
        """The calls of `calls`, in order."""
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> EdgeCall: ...  # type: ignore[override]
    def by_destination(self, tag: bytes, max_items: int) -> dict[int, list[bytes]]:
        """For each by-account partition (in the order of its first call), its internal
        records: `tag`, then a msgpack array of up to `max_items` payloads."""

class EdgeDecoder:
    """Reads `api-calls` records into `EdgeCalls`, within the contract's size limits."""

    def __init__(self, partitions: int, max_message_bytes: int, max_event_bytes: int,
                 max_batch_events: int) -> None: ...
    @property
    def partitions(self) -> int: ...
    def decode(self, value: bytes) -> EdgeCalls | None:
        """The calls of one record, or None when the Python edge must read it."""
    def decode_many(self, values: list[bytes | None]) -> list[EdgeCalls | None]:
        """`decode` of each value (None for None), parsed in one release of the GIL."""

def encode_calls(tag: bytes, calls: list[EdgeCall]) -> bytes:
    """`tag`, then a msgpack array of the calls' payloads."""

class ObserverCore:
    """`models.linking.observe.LinkObserver.observe` on the observer's account arrays."""

    def __init__(self, refresh_s: float, step_q: int, template_calls: int,
                 signup_bucket_s: float, onset_bucket_s: float, blank: Any,
                 observation: Any, identities_max: int) -> None: ...
    def observe(self, accounts: dict[str, Any], call: Any, suspicion: float) -> list[Any]:
        """The observations of one call (instances of `observation`)."""
    def observe_many(self, accounts: dict[str, Any], share: ShareCore,
                     share_accounts: dict[str, Any], calls: list[Any],
                     engine_suspicions: list[float],
                     out: list[Any] | ObservationRecords) -> tuple[int, Exception | None]:
        """For each call: `share.update`, the larger of it and the engine's suspicion,
        `observe` into `out` (objects appended to a list, or encoded into records); stops
        at the first call that raises (how many were done, the error)."""

class ObservationRecords:
    """Link observations encoded into the internal records of their link-key partitions
    (`tag`, then a msgpack array of up to `max_items` of them)."""

    def __init__(self, tag: bytes, partitions: int, max_items: int) -> None: ...
    def __len__(self) -> int:
        """Observations written since the last `take`."""
    def take(self) -> dict[int, list[bytes]]:
        """Their records by partition (in the order of each one's first observation);
        none are left."""

class EvidenceCore:
    """`models.linking.evidence.KeyEvidence`'s state and rules (the class checks the
    parameters)."""
    def __init__(self, edge_type: type, kind_weights: dict[str, float],
                 purity_exponents: dict[str, float], max_members: int, member_ttl_s: float,
                 suspicious_from: float, calm_below: float, calm_tolerance: float,
                 emit_min: float, weight_step: float, suspicion_step: float,
                 edge_refresh_s: float, sketch_size: int) -> None: ...
    def __len__(self) -> int: ...
    @property
    def members_tracked(self) -> int: ...
    def weight(self, kind: str, key: str) -> float: ...
    def expire(self, watermark: float) -> int: ...
    def add(self, obs: Any) -> list[Any]: ...
    def add_record(self, value: bytes, start: int, edges: list[Any]) -> float | None:
        """`add_many` of a record's observations read from its bytes, if they are as the
        link observer writes them; None (nothing counted) otherwise."""
    def add_many(self, observations: list[Any], edges: list[Any]) -> float:
        """Observations counted in order, their edges appended to `edges`; their latest
        event time (-inf for none)."""

class MinuteCounts:
    """`streams.sinks.ClickHouseSink`'s per-minute rows of each account, in arrival order."""

    def __init__(self, capacity: int = 0) -> None:
        """Room for `capacity` rows from the start."""
    def __len__(self) -> int: ...
    def add(self, calls: Sequence[Any], scores: Sequence[float]) -> None:
        """Count each `models.records.ApiCall` with its score into its account's minute."""
    def columns(self, limit: int) -> list[list[Any]]:
        """The first `limit` rows as the columns of `streams.sinks.MINUTE_COLUMNS`."""
    def drop_first(self, n: int) -> None:
        """Forget the first `n` rows."""
    def merge(self, other: MinuteCounts) -> None:
        """Add `other`'s rows: the same account and minute adds up, others follow."""

class ShareCore:
    """`models.linking.suspicion.ExtractionShareSuspicion.update` on its account arrays."""

    def __init__(self, decay_per_s: float, prior: float, prior_weight: float,
                 blank: Any) -> None: ...
    def update(self, accounts: dict[str, Any], call: Any) -> float:
        """Count the call into its account's array; the account's suspicion after it."""

class BehaviourCore:
    """`models.behaviour.BehaviourDetector`'s counting, suspicion and judging on its states."""

    def __init__(self, renormalise_after: float, no_templates: Any, zero_templates: Any,
                 judging: tuple[Any, ...] | None = None) -> None:
        """`judging`: the detector's (min_harvest, min_multi, min_probe, max_amplification,
        young_account_days, Finding, explain), which `judge` needs."""
    def judge(self, state: Any, ts: float, created_at: float | None) -> Any:
        """`BehaviourDetector._judge`: the account's finding at event time `ts`, or None."""
    def count(self, state: Any, call: Any) -> bool:
        """Count the call into the state; True when the call must be judged."""
    def suspicion(self, state: Any, ts: float) -> float:
        """The account's suspicion at event time `ts`, in [0, 1]."""
    def process_many(self, engine: Any, calls: list[Any], start: int, stop: int,
                     until_ts: float, known: set[Any] | None, prepare: Any | None,
                     suspicions: list[float], scores: list[float],
                     alerts: list[Any]) -> tuple[int, BaseException | None]:
        """`models.engine.DetectionEngine.process_many` for the usual engine."""

def register_call_type(call_type: type) -> None:
    """Read the slot offsets of `models.records.ApiCall` once: the cores then read a call's
    fields by its slots (`native/src/fields.rs`), and any other object's by `getattr`."""

def register_state_types(state_type: type, account_type: type) -> bool:
    """Read the slot offsets of `models.behaviour.BehaviourState` and
    `models.engine.AccountState` once: the behaviour core then reads and writes those
    states by their slots, and any other object's through `getattr` and `setattr`.
    Returns whether a state's slots are written in place (a non-frozen msgspec Struct
    without GC tracking and without a `__setattr__` of its own), else by `setattr`."""

class CallDecoder:
    """Reads by-account records' calls into `call_type` objects (`models.records.ApiCall`,
    which it registers as `register_call_type` does), equal strings shared through a cache
    of `slots` (a power of two) strings (`native/src/calls.rs`)."""

    def __init__(self, call_type: type, slots: int = 65536) -> None: ...
    @property
    def slots(self) -> int: ...
    @property
    def cached(self) -> int:
        """How many strings the cache holds (at most `slots`)."""
    def decode(self, value: bytes, start: int = 0) -> list[Any] | None:
        """The calls of the msgpack array at `value[start:]`, as msgspec's decoder of
        `list[call_type]` gives them; None when that decoder must read it."""

class CallBuffer:
    """`streams.ordering.EventTimeMerger`'s waiting calls, in event-time order."""

    def __init__(self, many_runs: int = 8) -> None: ...
    def __len__(self) -> int: ...
    @property
    def arrivals(self) -> int:
        """Calls added so far: the arrival number of the latest (from 1)."""
    def add(self, calls: list[Any]) -> float:
        """Take calls in arrival order; the latest event time among them (-inf for none)."""
    def median_time(self) -> float:
        """The event time in the middle of everything waiting (-inf for nothing)."""
    def take_through(self, limit: float) -> list[Any]:
        """Remove and return every waiting call with event time <= `limit`, in order."""
    def waiting_arrivals(self) -> list[int]: ...
    def drop(self, unwanted: Any) -> None:
        """Forget the waiting calls whose arrival numbers `unwanted` is true of."""

class EdgeBuffer:
    """The edge's waiting calls (`EdgeCalls` rows), in event-time order; as `CallBuffer`,
    without a Python object per call."""

    def __init__(self, many_runs: int = 8) -> None: ...
    def __len__(self) -> int: ...
    @property
    def arrivals(self) -> int:
        """Calls added so far: the arrival number of the latest (from 1)."""
    def add(self, calls: list[EdgeCalls | EdgeCall]) -> float:
        """Take calls in arrival order; the latest event time among them (-inf for none)."""
    def median_time(self) -> float:
        """The event time in the middle of everything waiting (-inf for nothing)."""
    def take_through(self, limit: float) -> EdgeCalls:
        """Remove and return every waiting call with event time <= `limit`, in order."""
    def waiting_arrivals(self) -> list[int]: ...
    def drop(self, unwanted: Any) -> None:
        """Forget the waiting calls whose arrival numbers `unwanted` is true of."""
