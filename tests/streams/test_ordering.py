from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from distillwatch_native import EdgeCall, EdgeCalls
from hypothesis import given, settings
from hypothesis import strategies as st

from models.records import ApiCall
from streams.ordering import EventTimeMerger, OrderedRecords, order_key


def call(ts: float, account: str = "a") -> ApiCall:
    return ApiCall(f"{account}{ts}", ts, "t", account, "m", 200, 1, 1)


def test_releases_up_to_the_slowest_active_partition() -> None:
    merger = EventTimeMerger(idle_s=10, max_hold_s=100)
    merger.add(0, [call(1), call(5), call(9)], now=0)
    merger.add(1, [call(2), call(3)], now=0)
    assert [c.ts for c in merger.release(now=0)] == [1, 2, 3]  # partition 1 is at 3
    merger.add(1, [call(7)], now=1)
    assert [c.ts for c in merger.release(now=1)] == [5, 7]
    assert len(merger) == 1


def test_an_assigned_partition_holds_back_until_it_delivers_or_idles() -> None:
    merger = EventTimeMerger(idle_s=1, max_hold_s=100)
    merger.assign([0, 1], now=0)
    merger.add(0, [call(5)], now=0)
    assert merger.release(now=0.5) == []
    merger.add(1, [call(3)], now=0.6)
    assert [c.ts for c in merger.release(now=0.6)] == [3]
    merger.assign([0], now=0.7)  # partition 1 moved to another worker
    assert [c.ts for c in merger.release(now=0.7)] == [5]


def test_a_partition_s_progress_said_without_a_call_lets_the_others_go() -> None:
    merger = EventTimeMerger(idle_s=10, max_hold_s=100)
    merger.add(0, [call(1), call(5)], now=0)
    merger.add(1, [call(2)], now=0)
    assert [c.ts for c in merger.release(now=0)] == [1, 2]  # partition 1 is at 2
    merger.advance(1, 6.0, now=0.1)  # nothing more of it up to 6
    assert [c.ts for c in merger.release(now=0.1)] == [5]
    assert merger.released_to == 5
    merger.advance(1, 4.0, now=0.2)  # progress does not go back
    merger.add(0, [call(7)], now=0.2)
    assert merger.release(now=0.2) == []
    assert merger.released_to == 5


def test_idle_partition_stops_holding_the_others_back() -> None:
    merger = EventTimeMerger(idle_s=1, max_hold_s=100)
    merger.add(0, [call(10)], now=0)
    merger.add(1, [call(2)], now=0)
    assert [c.ts for c in merger.release(now=0.5)] == [2]
    assert [c.ts for c in merger.release(now=1.5)] == [10]  # both idle now


def test_nothing_waits_longer_than_the_hold_limit() -> None:
    merger = EventTimeMerger(idle_s=100, max_hold_s=2)
    merger.add(0, [call(10), call(11)], now=0)
    merger.add(1, [call(1)], now=0)
    assert [c.ts for c in merger.release(now=1)] == [1]
    merger.add(1, [call(2)], now=2.5)  # partition 1 keeps lagging but stays active
    assert [c.ts for c in merger.release(now=2.5)] == [2, 10, 11]


def test_a_lagging_partition_holds_the_others_back_however_long_it_is_silent() -> None:
    # A replay: partition 1 is read ahead, partition 0 has records left in the topic.
    merger = EventTimeMerger(idle_s=1, max_hold_s=2)
    merger.add(0, [call(1), call(2)], now=0)
    merger.add(1, [call(3), call(50), call(90)], now=0)
    assert [c.ts for c in merger.release(now=5, lagging=[0])] == [1, 2]
    assert merger.release(now=100, lagging=[0]) == []  # neither idle nor held too long
    merger.add(0, [call(60)], now=101)
    assert [c.ts for c in merger.release(now=101, lagging=[0])] == [3, 50, 60]
    # Caught up, partition 0 is an ordinary partition again: idle after idle_s.
    assert [c.ts for c in merger.release(now=102.5)] == [90]


def test_the_partitions_to_read_first_are_the_lagging_ones_furthest_behind() -> None:
    merger = EventTimeMerger()
    merger.assign([0, 1, 2, 3], now=0)
    merger.add(0, [call(5)], now=0)
    merger.add(1, [call(2)], now=0)
    merger.add(2, [call(2)], now=0)
    assert merger.holding_back([0, 3]) == [3]  # 3 has delivered nothing yet
    assert sorted(merger.holding_back([0, 1, 2])) == [1, 2]
    assert merger.holding_back([]) == []


def test_the_hold_limit_lets_calls_go_only_up_to_a_lagging_partition() -> None:
    merger = EventTimeMerger(idle_s=100, max_hold_s=2)
    merger.add(0, [call(4)], now=0)
    merger.add(1, [call(3), call(10)], now=0)
    assert [c.ts for c in merger.release(now=1, lagging=[0])] == [3, 4]
    assert merger.release(now=3, lagging=[0]) == []  # held past max_hold_s: 10 waits
    assert [c.ts for c in merger.release(now=3)] == [10]  # not lagging: the hold limit


def test_input_offsets_are_committed_once_every_call_before_them_is_let_go() -> None:
    order = OrderedRecords(EventTimeMerger(idle_s=100, max_hold_s=100))
    order.add(0, 10, [call(1), call(7)], now=0)
    order.add(0, 11, [], now=0)  # a record of rejected events only
    order.add(1, 40, [call(2), call(3)], now=0)
    calls, done = order.release(now=0)
    assert [c.ts for c in calls] == [1, 2, 3]
    assert done == {1: 41}  # partition 0's record 10 still has its call at 7 waiting
    order.add(1, 41, [call(9)], now=1)
    calls, done = order.release(now=1)
    assert [c.ts for c in calls] == [7]
    assert done == {0: 12}  # record 10, then the empty record 11 behind it
    calls, done = order.release(now=1, lagging=[])
    assert calls == [] and done == {}
    order.merger.assign([1], now=2)  # partition 0 left: nothing holds 9 back
    calls, done = order.release(now=2)
    assert [c.ts for c in calls] == [9] and done == {1: 42}


def test_the_calls_of_a_revoked_input_partition_are_dropped_not_sent() -> None:
    order = OrderedRecords(EventTimeMerger(idle_s=100, max_hold_s=100))
    order.add(0, 5, [call(1, "a"), call(4, "a")], now=0)
    order.add(1, 8, [call(2, "b"), call(6, "b")], now=0)
    order.add(0, 6, [], now=0)
    order.add(0, 7, [call(5, "a")], now=0)
    order.add(2, 3, [call(3, "c")], now=0)
    calls, done = order.release(now=0)
    assert [c.ts for c in calls] == [1, 2, 3] and done == {2: 4}
    order.forget([0])  # partition 0 moved to another worker, which reads 4 and 5 again
    order.merger.assign([1, 2], now=1)
    calls, done = order.release(now=200)  # all idle: everything waiting goes
    assert [(c.ts, c.account_id) for c in calls] == [(6, "b")]
    assert done == {1: 9}  # nothing of partition 0 is committed here


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1e4)), max_size=200),
       st.randoms())
def test_output_is_the_input_in_event_time_order(items: list[tuple[int, float]],
                                                 rng: random.Random) -> None:
    merger = EventTimeMerger(idle_s=1e6, max_hold_s=1e6)
    merger.assign(range(4), now=0.0)
    by_partition: dict[int, list[ApiCall]] = {}
    for i, (p, ts) in enumerate(items):
        by_partition.setdefault(p, []).append(call(ts, f"acct{i % 7}"))
    for calls in by_partition.values():
        calls.sort(key=order_key)  # each partition delivers in its own order
    releases: list[list[ApiCall]] = []
    now = 0.0
    pending = {p: list(c) for p, c in by_partition.items()}
    while any(pending.values()):
        p = rng.choice([p for p, c in pending.items() if c])
        take, pending[p] = pending[p][:3], pending[p][3:]
        merger.add(p, take, now)
        releases.append(merger.release(now))
        now += 0.01
    releases.append(merger.release(now + 2e6))  # every partition idle: the rest goes
    out = [c for released in releases for c in released]
    # Event time never goes back; within a release, ties are in order_key order. (A call
    # of the event time just released may still arrive from another partition, so ties
    # across releases are in arrival order.)
    assert [c.ts for c in out] == sorted(c.ts for c in out)
    assert all(sorted(released, key=order_key) == released for released in releases)
    assert sorted(map(order_key, out)) == sorted(order_key(c) for cs in by_partition.values()
                                                 for c in cs)


class HeapEventTimeMerger(EventTimeMerger):
    """Reference for the differential tests: the merger's contract as a binary heap of
    (ts, tenant_id, account_id, arrival seq, call), popped while ts <= limit (partitions'
    progress, `assign` and `low_watermark` are the merger's own).

    Over `max_buffered` it lets go up to the event time of the heap's middle slot;
    `_overflow_limit` is a method so that `MedianOverflowHeapMerger` can swap in the
    overflow rule `EventTimeMerger` documents.
    """

    def __init__(self, idle_s: float = 1.0, max_hold_s: float = 2.0,
                 max_buffered: int = 200_000) -> None:
        super().__init__(idle_s, max_hold_s, max_buffered)
        self._heap: list[tuple[float, str, str, int, ApiCall]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, partition: int, calls: Iterable[ApiCall], now: float) -> None:
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

    def _overflow_limit(self) -> float:
        return self._heap[len(self._heap) // 2][0]  # roughly the older half

    def release(self, now: float) -> list[ApiCall]:
        heap, waiting = self._heap, self._waiting
        if not heap:
            waiting.clear()
            return []
        limit = self.low_watermark(now)
        while waiting and now - waiting[0][0] > self.max_hold_s:
            limit = max(limit, waiting.popleft()[1])
        if len(heap) > self.max_buffered:
            limit = max(limit, self._overflow_limit())
        out: list[ApiCall] = []
        pop = heapq.heappop
        while heap and heap[0][0] <= limit:
            out.append(pop(heap)[4])
        if out:
            self._released_to = max(self._released_to, out[-1].ts)
        while waiting and waiting[0][1] <= self._released_to:
            waiting.popleft()
        return out


class EagerlyFoldingMerger(EventTimeMerger):
    """Folds runs on every release: the same output, with the fold path always taken."""

    _MANY_RUNS = 0


class EdgeMerger(EventTimeMerger):
    """The edge's merger: calls as `EdgeCalls` rows, in an `EdgeBuffer`."""

    def __init__(self, idle_s: float = 1.0, max_hold_s: float = 2.0,
                 max_buffered: int = 200_000) -> None:
        super().__init__(idle_s, max_hold_s, max_buffered, edge=True)


class EagerlyFoldingEdgeMerger(EdgeMerger):
    _MANY_RUNS = 0


MERGERS = pytest.mark.parametrize("merger", [EventTimeMerger, EagerlyFoldingMerger,
                                             EdgeMerger, EagerlyFoldingEdgeMerger])


class MedianOverflowHeapMerger(HeapEventTimeMerger):
    """The reference with `EventTimeMerger`'s overflow rule: over `max_buffered`, every
    call up to the median event time of the buffer goes."""

    def _overflow_limit(self) -> float:
        return sorted(self._heap)[len(self._heap) // 2][0]


# Few distinct keys, so that equal (ts, tenant, account) keys, which only arrival order
# separates, are common; 0.0 and -0.0 are equal event times.
TIMES = st.one_of(st.sampled_from([-0.0, 0.0, 1.0, 2.0, 2.5, 3.0, 7.0]),
                  st.integers(0, 40).map(float), st.floats(0, 40))
KEY_PARTS = st.tuples(st.sampled_from(["t0", "t1"]), st.sampled_from(["a0", "a1", "a2"]))
# Wall-clock steps either side of idle_s = 1 and max_hold_s = 2.
CLOCK_STEPS = st.sampled_from([0.0, 0.01, 0.05, 0.4, 1.1, 2.1])


@st.composite
def records(draw: st.DrawFn) -> list[tuple[float, str, str]]:
    """A record's (ts, tenant, account) in arrival order: sorted, nearly sorted or not.
    Small and large ones, so that calls held back and calls just arrived vary in number
    relative to each other."""
    size = draw(st.sampled_from([3, 12, 40]))
    keys = [(ts, tenant, account)
            for ts, (tenant, account) in draw(st.lists(st.tuples(TIMES, KEY_PARTS),
                                                       max_size=size))]
    order = draw(st.sampled_from(["sorted", "one swap", "arbitrary"]))
    if order != "arbitrary":
        keys.sort(key=lambda k: k[0])
        if order == "one swap" and len(keys) > 1:
            i = draw(st.integers(0, len(keys) - 2))
            keys[i], keys[i + 1] = keys[i + 1], keys[i]
    return keys


STEP = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 4), records()),
    st.tuples(st.just("add"), st.integers(0, 4), records()),
    st.tuples(st.just("assign"), st.frozensets(st.integers(0, 4), max_size=5)),
    st.tuples(st.just("release")),
    st.tuples(st.just("release")),
    st.tuples(st.just("release everything")),
)


Steps = list[tuple[tuple[object, ...], float]]


def replay(merger: EventTimeMerger | HeapEventTimeMerger, steps: Steps,
           drift: float = 0.0) -> list[object]:
    """Drive `merger` through `steps` (each with the wall-clock seconds to advance first)
    and return what a caller can observe after each step: the event ids each release
    gives, `len`, `low_watermark`, and the internals `_released_to` and `_waiting`.

    With `drift`, the event times of the n-th step's record are moved `n * drift` later,
    so that a partition which delivers nothing for a while falls behind the others."""
    seen: list[object] = []
    now = 0.0
    edge = isinstance(merger, EdgeMerger)

    def ids(out: Sequence[Any]) -> list[str]:
        return [c.payload.decode() if edge else c.event_id for c in out]

    for n, (step, tick) in enumerate(steps):
        now += tick
        what = step[0]
        if what == "add":
            _, partition, keys = step
            calls = [ApiCall(f"e{n}.{i}", ts + n * drift if drift else ts,
                             tenant, account, "m", 200, 1, 1)
                     for i, (ts, tenant, account) in enumerate(keys)]
            if edge:  # as the edge adds a record: its calls as rows
                merger.add(partition, [EdgeCalls.of([
                    EdgeCall(c.ts, c.tenant_id, c.account_id, 0, c.event_id.encode())
                    for c in calls])], now)
            else:
                merger.add(partition, calls, now)
        elif what == "assign":
            merger.assign(step[1], now)
        else:
            seen.append(ids(merger.release(math.inf if what == "release everything" else now)))
        seen.append((len(merger), merger.low_watermark(now), merger._released_to,
                     list(merger._waiting)))
    seen.append(ids(merger.release(math.inf)))
    seen.append(len(merger))
    return seen


DRIFTS = st.sampled_from([0.0, 0.5, 3.0])


@MERGERS
@settings(max_examples=150)
@given(st.lists(st.tuples(STEP, CLOCK_STEPS), min_size=20, max_size=80), DRIFTS)
def test_releases_what_the_heap_reference_releases(merger: type[EventTimeMerger],
                                                   steps: Steps, drift: float) -> None:
    # max_buffered well above anything drawn: the overflow rule is tested below.
    assert (replay(merger(idle_s=1, max_hold_s=2), steps, drift)
            == replay(HeapEventTimeMerger(idle_s=1, max_hold_s=2), steps, drift))


@MERGERS
@settings(max_examples=100)
@given(st.lists(st.tuples(STEP, CLOCK_STEPS), min_size=20, max_size=80), DRIFTS,
       st.integers(0, 40))
def test_over_max_buffered_everything_up_to_the_median_event_time_goes(
        merger: type[EventTimeMerger], steps: Steps, drift: float, max_buffered: int) -> None:
    assert (replay(merger(1, 2, max_buffered), steps, drift)
            == replay(MedianOverflowHeapMerger(1, 2, max_buffered), steps, drift))


def random_steps(rng: random.Random, lagging: bool) -> Steps:
    """Steps at the pipeline's scale: records of up to 300 calls from 4 partitions, each
    mostly in event-time order, millisecond times (so equal keys), a release after every
    few records, and now and then a reassignment, a stall or a partition far behind."""
    position = [rng.uniform(0, 5) for _ in range(4)]  # partitions drift apart
    if lagging:
        position[0] -= 60
    steps: Steps = []
    for _ in range(rng.randint(20, 120)):
        partition = rng.randrange(4)
        size = rng.choice([0, 1, 50, 300])
        times = [round(position[partition] + rng.uniform(0, 0.5), 3) for _ in range(size)]
        times.sort()
        for _ in range(size // 20):  # a few calls out of order
            i, j = rng.randrange(size), rng.randrange(size)
            times[i], times[j] = times[j], times[i]
        position[partition] += 0.5
        keys = [(ts, f"t{rng.randrange(2)}", f"a{rng.randrange(3)}") for ts in times]
        steps.append((("add", partition, keys), rng.choice([0.0, 0.0125])))
        roll = rng.random()
        if roll < 0.3:
            steps.append((("release",), rng.choice([0.0, 0.0125, 0.05])))
        elif roll < 0.33:
            steps.append((("release",), rng.choice([1.1, 2.1])))  # a stall
        elif roll < 0.35:
            held = frozenset(p for p in range(4) if rng.random() < 0.8)
            steps.append((("assign", held), 0.0))
    return steps


@MERGERS
@pytest.mark.parametrize("lagging", [False, True])
@pytest.mark.parametrize("max_buffered", [200_000, 2_000])
def test_releases_what_the_reference_releases_at_scale(merger: type[EventTimeMerger],
                                                       lagging: bool,
                                                       max_buffered: int) -> None:
    rng = random.Random(20240611)
    for _ in range(40):
        steps = random_steps(rng, lagging)
        assert (replay(merger(1, 2, max_buffered), steps)
                == replay(MedianOverflowHeapMerger(1, 2, max_buffered), steps))


def test_a_revoked_partition_is_committed_through_every_call_let_go_records_partly_sent_too(
) -> None:
    order = OrderedRecords(EventTimeMerger(idle_s=100, max_hold_s=100))
    # Partition 0: records 10, 11, 12 (calls at 1, 2, 6) taken together, then 13 (at 8).
    order.add(0, 12, [call(1, "a"), call(2, "a"), call(6, "a")], now=0,
              starts=[(10, 0), (11, 1), (12, 2)])
    order.add(0, 13, [call(8, "a")], now=0)
    # Partition 1: records 40 (at 3), 41 (rejected events only), 42 (at 4), 43 (at 9).
    order.add(1, 43, [call(3, "b"), call(4, "b"), call(9, "b")], now=0,
              starts=[(40, 0), (41, 1), (42, 1), (43, 2)])
    # Partition 2: records 7 and 8, all let go below.
    order.add(2, 8, [call(0, "c"), call(5, "c")], now=0, starts=[(7, 0), (8, 1)])
    calls, done = order.release(now=0)  # through 5, partition 2's latest
    assert [c.ts for c in calls] == [0, 1, 2, 3, 4, 5]
    assert done == {2: 9}  # the groups of 0 and 1 are only partly let go
    resume = order.forget([0, 1, 2])
    # 0: records 10 and 11 sent, 12 onwards dropped; 1: everything before 43 sent (41 had
    # no valid call); 2: nothing left here, so nothing to say beyond `done`.
    assert resume == {0: 12, 1: 43}
    assert len(order) == 0 and order.release(now=200) == ([], {})


def test_a_revoked_partition_with_nothing_let_go_resumes_at_its_first_record() -> None:
    order = OrderedRecords(EventTimeMerger(idle_s=100, max_hold_s=100))
    order.add(1, 5, [call(1, "x")], now=0)
    order.add(0, 21, [call(7, "a"), call(8, "a")], now=0, starts=[(20, 0), (21, 1)])
    order.add(0, 22, [call(9, "a")], now=0)  # one record: no starts
    calls, _ = order.release(now=0)
    assert [c.ts for c in calls] == [1]
    assert order.forget([0]) == {0: 20}
    order2 = OrderedRecords(EventTimeMerger(idle_s=100, max_hold_s=100))
    order2.add(0, 22, [call(9, "a")], now=0)
    order2.add(1, 5, [call(1, "x")], now=0)
    order2.release(now=0)
    assert order2.forget([0]) == {0: 22}  # a record given alone is its own start


def test_keys_compare_as_python_compares_them_for_calls_of_either_kind() -> None:
    """Tenants and accounts order by code point (non-ASCII and lone surrogates too), at
    equal event times, whether the calls are `ApiCall`s (detect), `EdgeCall`s or the
    edge's rows (`EdgeCalls`); equal keys keep their arrival order."""
    names = ["a", "B", "é", "z", "\ud800", "\U0001f600", "aa", "", "ß"]
    rng = random.Random(7)
    keys = [(rng.choice([1.0, 2.0]), rng.choice(names), rng.choice(names)) for _ in range(300)]
    api = [ApiCall(f"e{n}", ts, tenant, account, "m", 200, 1, 1)
           for n, (ts, tenant, account) in enumerate(keys)]
    edge = [EdgeCall(ts, tenant, account, 0, str(n).encode())
            for n, (ts, tenant, account) in enumerate(keys)]
    expected = sorted(range(len(keys)), key=lambda n: keys[n])  # stable: arrival order
    for calls, name in ((api, lambda c: int(c.event_id[1:])),
                        (edge, lambda c: int(c.payload))):
        merger: EventTimeMerger = EventTimeMerger()
        merger.assign([0, 1], 0.0)
        merger.add(0, calls[:150], 0.0)
        merger.add(1, calls[150:], 0.0)
        assert [name(c) for c in merger.release(math.inf)] == expected
    rows = EventTimeMerger(edge=True)
    rows.assign([0, 1], 0.0)
    rows.add(0, [EdgeCalls.of(edge[:100]), *edge[100:150]], 0.0)
    rows.add(1, [EdgeCalls.of(edge[150:])], 0.0)
    released = rows.release(math.inf)
    assert isinstance(released, EdgeCalls)
    assert [int(c.payload) for c in released] == expected
    assert [(c.tenant_id, c.account_id) for c in released] == [keys[n][1:] for n in expected]


def test_a_record_with_a_call_the_merger_cannot_order_is_refused_whole() -> None:
    merger: EventTimeMerger = EventTimeMerger()
    bad = ApiCall("e2", 2.0, "t", 5, "m", 200, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        merger.add(0, [call(1.0), bad], 0.0)
    assert len(merger) == 0 and merger.arrivals == 0
    merger.add(0, [call(3.0)], 0.0)
    assert merger.arrivals == 1


def test_a_drop_that_fails_drops_nothing() -> None:
    merger: EventTimeMerger = EventTimeMerger()
    merger.assign([0, 1], 0.0)
    merger.add(0, [call(float(n)) for n in range(10)], 0.0)
    assert merger.release(0.0) == []  # partition 1 holds them back, sorted into a run
    merger.add(0, [call(20.0), call(21.0)], 0.0)

    def unwanted(seq: int) -> bool:
        if seq == 11:
            raise RuntimeError("no")
        return True

    with pytest.raises(RuntimeError):
        merger.drop(unwanted)
    assert len(merger) == 12
    merger.drop(lambda seq: seq % 2 == 0)
    assert [c.ts for c in merger.release(math.inf)] == [0.0, 2.0, 4.0, 6.0, 8.0, 20.0]
