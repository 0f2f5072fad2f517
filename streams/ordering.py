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

import heapq
from collections import deque
from collections.abc import Iterable

from models.records import ApiCall


def order_key(call: ApiCall) -> tuple[float, str, str]:
    """Event time, then account: how calls are ordered here and in offline replay."""
    return (call.ts, call.tenant_id, call.account_id)


class EventTimeMerger:
    """Buffers calls per partition and releases them in event-time order."""

    def __init__(self, idle_s: float = 1.0, max_hold_s: float = 2.0,
                 max_buffered: int = 200_000) -> None:
        self.idle_s, self.max_hold_s, self.max_buffered = idle_s, max_hold_s, max_buffered
        self._heap: list[tuple[float, str, str, int, ApiCall]] = []
        self._seq = 0  # keeps arrival order among equal keys
        self._progress: dict[int, float] = {}  # partition -> latest event time received
        self._last_seen: dict[int, float] = {}  # partition -> wall clock of its last record
        # Records not yet wholly released, oldest first: (arrival, latest event time in it).
        self._waiting: deque[tuple[float, float]] = deque()
        self._released_to = float("-inf")  # every buffered call at or before this is gone

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, partition: int, calls: Iterable[ApiCall], now: float) -> None:
        """Take the calls of one record of `partition`, received at `now` (monotonic s)."""
        heap, push = self._heap, heapq.heappush
        latest = self._progress.get(partition, float("-inf"))
        record_latest = float("-inf")
        for call in calls:
            self._seq += 1
            push(heap, (call.ts, call.tenant_id, call.account_id, self._seq, call))
            if call.ts > record_latest:
                record_latest = call.ts
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
        heap, waiting = self._heap, self._waiting
        if not heap:
            waiting.clear()
            return []
        limit = self.low_watermark(now)
        # Nothing waits past max_hold_s: the oldest record goes, with all that precedes it.
        while waiting and now - waiting[0][0] > self.max_hold_s:
            limit = max(limit, waiting.popleft()[1])
        if len(heap) > self.max_buffered:
            limit = max(limit, heap[len(heap) // 2][0])  # roughly the older half
        out: list[ApiCall] = []
        pop = heapq.heappop
        while heap and heap[0][0] <= limit:
            out.append(pop(heap)[4])
        if out:
            self._released_to = max(self._released_to, out[-1].ts)
        while waiting and waiting[0][1] <= self._released_to:
            waiting.popleft()
        return out
