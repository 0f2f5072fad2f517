"""Event-time order across partitions, for the detection core.

Each partition of the by-account topic arrives in its own order, and partitions drift
apart: one may be minutes of event time ahead of another. The account-level state does
not care, but per-tenant and per-cohort models learn across accounts at event-time epochs,
so the order in which a worker sees accounts matters. `EventTimeMerger` hands calls on in
event-time order across the partitions a worker holds, released up to their low
watermark, which is the order `distillwatch score` uses. So a replay and a live run agree.
A partition's progress is the latest event time it has delivered: that of its calls, or
that of a progress record of the edge (`advance`), which says the edge has let go of every
call up to then. With those, calls do not wait for a partition that has nothing to send.

Waiting has limits: a partition that has sent nothing for `idle_s` (wall clock) no longer
holds the others back, nothing waits longer than `max_hold_s`, and at most `max_buffered`
calls wait at once. Except for a partition known to be *lagging*: records wait in the
topic for it (its consumer is behind the partition's end). Wall-clock silence says nothing
then: in a replay of a backlog, partitions are fetched in turns, and one read hours ahead
of another would otherwise release calls the other has yet to deliver, out of order, and
the alerts would depend on the timing of fetches. A lagging partition holds the others
back until it delivers, however long that takes (the worker may be busy for seconds);
`max_buffered` still bounds memory, and `holding_back` names the partitions to read first
so that it is seldom reached.

The edge uses it too (`OrderedRecords`): input partitions merged in event time before the
calls are re-keyed, so that each by-account partition is written in event-time order, which
is what the merger here needs to know a partition's progress.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from distillwatch_native import CallBuffer, EdgeBuffer


class Timed(Protocol):
    """What orders a call: a `models.records.ApiCall` (detect) or a
    `streams.edge.EdgeCall` (the edge)."""

    @property
    def ts(self) -> float: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def account_id(self) -> str: ...


C = TypeVar("C", bound=Timed)


class _Buffer(Protocol):
    """Where calls wait: `CallBuffer`, or the edge's `EdgeBuffer` (`native/src/order.rs`)."""

    def __len__(self) -> int: ...

    @property
    def arrivals(self) -> int: ...

    def add(self, calls: list[Any]) -> float: ...

    def median_time(self) -> float: ...

    def take_through(self, limit: float) -> Sequence[Any]: ...

    def waiting_arrivals(self) -> list[int]: ...

    def drop(self, unwanted: Any) -> None: ...


def order_key(call: Timed) -> tuple[float, str, str]:
    """Event time, then account: how calls are ordered here and in offline replay."""
    return (call.ts, call.tenant_id, call.account_id)


class EventTimeMerger(Generic[C]):
    """Buffers calls per partition and releases them in event-time order.

    Each release is sorted by `order_key`, equal keys in the order they were added, so
    a replay of the same records, released at the same points, gives the same order.

    The calls wait in a `CallBuffer` (`native/src/order.rs`), or at the edge in an
    `EdgeBuffer` (`edge=True`: rows of `EdgeCalls`, no Python object per call, released
    as `EdgeCalls`): those added since the last release in arrival order, the rest in
    runs, each sorted. A release sorts what arrived into a new run, takes the prefix of
    each run up to the limit and merges those prefixes, so a call is sorted on the first
    release after it arrives and merged once more on the one that lets it go. Many runs
    would make each release cut many: from `_MANY_RUNS` on, the newest runs no larger than
    what is being sorted are folded into the new run. A fold at least doubles the run a
    call is in, so it is folded again only a few times. This was Python on tuples of each
    call's key until the fifteenth pass of bench/PROFILE.md;
    `tests/streams/test_ordering.py` holds it to a heap of those tuples.
    """

    _MANY_RUNS = 8

    def __init__(self, idle_s: float = 1.0, max_hold_s: float = 2.0,
                 max_buffered: int = 200_000, edge: bool = False) -> None:
        self.idle_s, self.max_hold_s, self.max_buffered = idle_s, max_hold_s, max_buffered
        self._buffer: _Buffer = (
            EdgeBuffer(self._MANY_RUNS) if edge else CallBuffer(self._MANY_RUNS))
        self._progress: dict[int, float] = {}  # partition -> latest event time received
        self._last_seen: dict[int, float] = {}  # partition -> wall clock of its last record
        # Records not yet wholly released, oldest first: (arrival, latest event time in it).
        self._waiting: deque[tuple[float, float]] = deque()
        self._released_to = float("-inf")  # every buffered call at or before this is gone
        self.limit = float("-inf")  # event time through which the last release let calls go

    def __len__(self) -> int:
        return len(self._buffer)

    @property
    def arrivals(self) -> int:
        """How many calls were added so far, which is the arrival number of the latest
        (they number from 1, in the order `add` took them; `drop` is given them)."""
        return self._buffer.arrivals

    def add(self, partition: int, calls: Iterable[C], now: float) -> float:
        """Take the calls of one record of `partition`, received at `now` (monotonic s);
        returns the latest event time among them (-inf for none). At the edge, `calls`
        is a list of `EdgeCalls` (each record's) and `EdgeCall`s."""
        record_latest = self._buffer.add(calls if isinstance(calls, list) else list(calls))
        latest = self._progress.get(partition, float("-inf"))
        self._progress[partition] = max(latest, record_latest)
        self._last_seen[partition] = now
        if record_latest > float("-inf"):
            self._waiting.append((now, record_latest))
        return record_latest

    @property
    def released_to(self) -> float:
        """The latest event time of the calls released so far (-inf before any)."""
        return self._released_to

    def advance(self, partition: int, ts: float, now: float) -> None:
        """`partition` has delivered every call up to event time `ts`, said at `now`
        (monotonic s) without a call: its progress, as a call of that time would be."""
        if ts > self._progress.get(partition, float("-inf")):
            self._progress[partition] = ts
        self._last_seen[partition] = now

    def assign(self, partitions: Iterable[int], now: float) -> None:
        """The partitions this worker holds: a new one holds the others back until it
        delivers or stays silent for `idle_s`; one no longer held stops holding back."""
        held = set(partitions)
        for partition in held - self._progress.keys():
            self._progress[partition] = float("-inf")
            self._last_seen[partition] = now
        for partition in self._progress.keys() - held:
            del self._progress[partition]
            del self._last_seen[partition]

    def low_watermark(self, now: float, lagging: Collection[int] = ()) -> float:
        """Event time up to which every active partition has delivered: those that sent
        a record in the last `idle_s`, and the `lagging` ones (see the module)."""
        active = [ts for p, ts in self._progress.items()
                  if now - self._last_seen[p] < self.idle_s or p in lagging]
        return min(active) if active else float("inf")  # all idle: nothing more soon

    def holding_back(self, lagging: Collection[int]) -> list[int]:
        """Of the `lagging` partitions, those furthest behind in event time: the ones to
        read next when calls pile up waiting for them (a consumer left to itself reads a
        backlog one partition after another)."""
        progress = self._progress
        behind = [(progress.get(p, float("-inf")), p) for p in lagging]
        if not behind:
            return []
        least = min(behind)[0]
        return [p for ts, p in behind if ts == least]

    def release(self, now: float, lagging: Collection[int] = ()) -> Sequence[C]:
        """The calls that may go on now, in event-time order (a list, or `EdgeCalls` at
        the edge). `lagging`: partitions whose consumer has not reached their end
        (records wait in the topic for them)."""
        buffer, waiting = self._buffer, self._waiting
        if not len(buffer):
            waiting.clear()
            self.limit = float("inf")
            return buffer.take_through(self.limit)  # (none, of the buffer's kind)
        limit = self.low_watermark(now, lagging)
        # Nothing waits past max_hold_s: the oldest record goes, with all that precedes it,
        # but not past a lagging partition (what it has yet to deliver is in the topic).
        behind = min((ts for p, ts in self._progress.items() if p in lagging),
                     default=float("inf"))
        while waiting and now - waiting[0][0] > self.max_hold_s:
            if waiting[0][1] > behind:
                limit = max(limit, behind)
                break
            limit = max(limit, waiting.popleft()[1])
        if len(buffer) > self.max_buffered:
            # Everything up to the median event time goes, at least the older half.
            limit = max(limit, buffer.median_time())
        self.limit = limit
        out: Sequence[C] = buffer.take_through(limit)
        if out:
            self._released_to = max(self._released_to, out[-1].ts)
        while waiting and waiting[0][1] <= self._released_to:
            waiting.popleft()
        return out

    def waiting_arrivals(self) -> Iterator[int]:
        """The arrival numbers of the calls waiting, in no particular order."""
        return iter(self._buffer.waiting_arrivals())

    def drop(self, unwanted: Callable[[int], bool]) -> None:
        """Forget the waiting calls whose arrival numbers (as `add` gave them) are
        `unwanted`."""
        self._buffer.drop(unwanted)


class OrderedRecords(Generic[C]):
    """The edge's input: the calls of input records merged in event time across the input
    partitions, and for each partition the offset through which every record's calls have
    been let go (what may be committed: a record whose calls still wait is read again
    after a crash, never lost).
    """

    def __init__(self, merger: EventTimeMerger[C] | None = None) -> None:
        self.merger: EventTimeMerger[C] = merger if merger is not None else EventTimeMerger()
        # partition -> (offset after the records, their latest event time, the arrival
        # numbers of their calls from, to, and where each record's calls start: (offset,
        # index among the calls) for each, None for a single record), oldest first, of
        # the records added whose calls have not all been let go
        self._records: dict[int, deque[_Records]] = {}

    def __len__(self) -> int:
        return len(self.merger)

    def add(self, partition: int, offset: int, calls: list[C], now: float,
            starts: Sequence[tuple[int, int]] | None = None) -> None:
        """Take the valid calls of the records of `partition` through `offset`, those
        after the records added before (none: they are done as soon as those before them
        are). `starts`: each record's offset and the index in `calls` of its first call,
        when they are several records (what `forget` can then tell apart)."""
        first = self.merger.arrivals + 1
        latest = self.merger.add(partition, calls, now)
        records = self._records.get(partition)
        if records is None:
            records = self._records[partition] = deque()
        records.append((offset + 1, latest, first, self.merger.arrivals, starts))

    def forget(self, partitions: Iterable[int]) -> dict[int, int]:
        """Drop the waiting calls of `partitions`, which this consumer no longer holds:
        their new owner reads them again, and sending them here too would count them
        twice. Returns, for each of them with records here, the offset to commit before it
        moves: that of the first record with a call dropped, or the end of the records
        added if none was. Every call before it was let go; the caller commits it once
        those are sent, so the new owner reads again only what was dropped here (when a
        partition's calls come in event-time order: else a record after the first one
        dropped may have been let go already, and is read again)."""
        groups = {p: records for p in partitions if (records := self._records.pop(p, None))}
        spans = sorted((first, last, partition) for partition, records in groups.items()
                       for _, _, first, last, _ in records if first <= last)
        earliest: dict[int, int] = {}  # partition -> arrival number of its first call dropped
        if spans:
            starts = [first for first, _, _ in spans]

            def owner(seq: int) -> int | None:
                at = bisect_right(starts, seq) - 1
                return spans[at][2] if at >= 0 and seq <= spans[at][1] else None

            for seq in self.merger.waiting_arrivals():
                held_by = owner(seq)
                if held_by is not None and seq < earliest.get(held_by, seq + 1):
                    earliest[held_by] = seq
            self.merger.drop(lambda seq: owner(seq) is not None)
        resume: dict[int, int] = {}
        for partition, records in groups.items():
            dropped = earliest.get(partition)
            resume[partition] = (records[-1][0] if dropped is None
                                 else _record_of(records, dropped))
        return resume

    def release(self, now: float, lagging: Collection[int] = ()) -> tuple[Sequence[C],
                                                                             dict[int, int]]:
        """The calls that may go on now, in event-time order, and the offsets through
        which the records of each partition are wholly let go (partitions with news)."""
        calls = self.merger.release(now, lagging)
        limit, done = self.merger.limit, {}
        for partition, records in self._records.items():
            while records and records[0][1] <= limit:
                done[partition] = records.popleft()[0]
        return calls, done


# (offset after the records, latest event time, first and last arrival number, starts)
_Records = tuple[int, float, int, int, "Sequence[tuple[int, int]] | None"]


def _record_of(records: Iterable[_Records], seq: int) -> int:
    """The offset of the record whose calls include arrival number `seq`."""
    for after, _, first, last, starts in records:
        if first <= seq <= last:
            if starts is None:
                return after - 1
            at = bisect_right([first + index for _, index in starts], seq) - 1
            return starts[at][0]
    raise ValueError(f"no record holds arrival {seq}")
