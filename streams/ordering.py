"""Event-time order across partitions, for the detection core.

Each partition of the by-account topic arrives in its own order, and partitions drift
apart: one may be minutes of event time ahead of another. The account-level state does
not care, but per-tenant and per-cohort models learn across accounts at event-time epochs,
so the order in which a worker sees accounts matters. `EventTimeMerger` hands calls on in
event-time order across the partitions a worker holds, released up to their low
watermark, which is the order `distillwatch score` uses. So a replay and a live run agree.

Waiting has limits: a partition that has sent nothing for `idle_s` (wall clock) no longer
holds the others back, nothing waits longer than `max_hold_s`, and at most `max_buffered`
calls wait at once.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from itertools import chain
from operator import attrgetter, itemgetter

from models.records import ApiCall


def order_key(call: ApiCall) -> tuple[float, str, str]:
    """Event time, then account: how calls are ordered here and in offline replay."""
    return (call.ts, call.tenant_id, call.account_id)


# A waiting call as (ts, tenant_id, account_id, arrival seq, call): order_key, then arrival
# order, compared as a plain tuple (seq is unique, so the call itself is never compared).
_Entry = tuple[float, str, str, int, ApiCall]
_event_time, _tenant, _account = attrgetter("ts"), attrgetter("tenant_id"), attrgetter("account_id")
_entry_time, _entry_call = itemgetter(0), itemgetter(4)


class EventTimeMerger:
    """Buffers calls per partition and releases them in event-time order.

    Each release is sorted by `order_key`, equal keys in the order they were added, so
    a replay of the same records, released at the same points, gives the same order.

    How the calls wait, so that a call costs a few tuple comparisons in C (a heap would
    cost a Python-level push and pop of log n comparisons each): those added since the
    last `release` in one list, in arrival order; the rest in runs, each sorted. A
    release sorts what arrived into a new run (`list.sort` finds the sorted stretches of
    the records and merges them), takes the prefix of each run up to the limit by
    bisection, and merges those prefixes (`list.sort` again). So a call is sorted on the
    first release after it arrives and merged once more on the one that lets it go.

    Many runs would make each release bisect many: from `_MANY_RUNS` on, the newest runs
    no larger than what is being sorted are folded into the new run. A fold at least
    doubles the run a call is in, so it is folded again only a few times.
    """

    _MANY_RUNS = 8

    def __init__(self, idle_s: float = 1.0, max_hold_s: float = 2.0,
                 max_buffered: int = 200_000) -> None:
        self.idle_s, self.max_hold_s, self.max_buffered = idle_s, max_hold_s, max_buffered
        self._arrived: list[_Entry] = []  # added since the last release, in arrival order
        self._runs: list[list[_Entry]] = []  # each sorted, none empty
        self._seq = 0  # keeps arrival order among equal keys
        self._progress: dict[int, float] = {}  # partition -> latest event time received
        self._last_seen: dict[int, float] = {}  # partition -> wall clock of its last record
        # Records not yet wholly released, oldest first: (arrival, latest event time in it).
        self._waiting: deque[tuple[float, float]] = deque()
        self._released_to = float("-inf")  # every buffered call at or before this is gone

    def __len__(self) -> int:
        return len(self._arrived) + sum(map(len, self._runs))

    def add(self, partition: int, calls: Iterable[ApiCall], now: float) -> None:
        """Take the calls of one record of `partition`, received at `now` (monotonic s)."""
        if not isinstance(calls, list | tuple):
            calls = list(calls)
        times = list(map(_event_time, calls))
        seq = self._seq
        self._seq = seq + len(calls)
        self._arrived += zip(times, map(_tenant, calls), map(_account, calls),
                             range(seq + 1, seq + 1 + len(calls)), calls, strict=True)
        latest = self._progress.get(partition, float("-inf"))
        record_latest = max(times, default=float("-inf"))
        self._progress[partition] = max(latest, record_latest)
        self._last_seen[partition] = now
        if record_latest > float("-inf"):
            self._waiting.append((now, record_latest))

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

    def low_watermark(self, now: float) -> float:
        """Event time up to which every active partition has delivered."""
        active = [ts for p, ts in self._progress.items()
                  if now - self._last_seen[p] < self.idle_s]
        return min(active) if active else float("inf")  # all idle: nothing more soon

    def release(self, now: float) -> list[ApiCall]:
        """The calls that may go on now, in event-time order."""
        arrived, runs, waiting = self._arrived, self._runs, self._waiting
        if not arrived and not runs:
            waiting.clear()
            return []
        limit = self.low_watermark(now)
        # Nothing waits past max_hold_s: the oldest record goes, with all that precedes it.
        while waiting and now - waiting[0][0] > self.max_hold_s:
            limit = max(limit, waiting.popleft()[1])
        overflow = len(self) > self.max_buffered
        if arrived:
            self._arrived = []
            first = len(runs)
            if first >= self._MANY_RUNS:
                batch = len(arrived)
                while first and len(runs[first - 1]) <= batch:
                    first -= 1
                    batch += len(runs[first])
            runs.append(arrived)
            self._merge_runs(0 if overflow else first)
        elif overflow:
            self._merge_runs(0)
        if overflow:
            # One run now, so its middle is the median: everything up to the median event
            # time goes, at least the older half.
            (run,) = runs
            limit = max(limit, run[len(run) // 2][0])
        out = self._take_through(limit)
        if out:
            self._released_to = max(self._released_to, out[-1].ts)
        while waiting and waiting[0][1] <= self._released_to:
            waiting.popleft()
        return out

    def _merge_runs(self, first: int) -> None:
        """Make the runs from index `first` on one sorted run."""
        runs = self._runs
        if len(runs) - first == 1:
            runs[first].sort()
        elif len(runs) - first > 1:
            merged = list(chain.from_iterable(runs[first:]))
            merged.sort()
            runs[first:] = [merged]

    def _take_through(self, limit: float) -> list[ApiCall]:
        """Remove and return every waiting call with event time <= `limit`, in order."""
        taken: list[list[_Entry]] = []
        kept: list[list[_Entry]] = []
        for run in self._runs:
            cut = bisect_right(run, limit, key=_entry_time)
            if cut == len(run):
                taken.append(run)
                continue
            if cut:
                taken.append(run[:cut])
                del run[:cut]
            kept.append(run)
        self._runs = kept
        if len(taken) > 1:
            merged = list(chain.from_iterable(taken))
            merged.sort()
            taken = [merged]
        return list(map(_entry_call, taken[0])) if taken else []
