from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from models.records import ApiCall
from streams.ordering import EventTimeMerger, order_key


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
    out: list[ApiCall] = []
    now = 0.0
    pending = {p: list(c) for p, c in by_partition.items()}
    while any(pending.values()):
        p = rng.choice([p for p, c in pending.items() if c])
        take, pending[p] = pending[p][:3], pending[p][3:]
        merger.add(p, take, now)
        out.extend(merger.release(now))
        now += 0.01
    out.extend(merger.release(now + 2e6))  # every partition idle: the rest goes
    assert sorted(out, key=order_key) == out
    assert sorted(map(order_key, out)) == sorted(order_key(c) for cs in by_partition.values()
                                                 for c in cs)
