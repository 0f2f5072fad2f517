from __future__ import annotations

from typing import Any

import pytest
from distillwatch_native import MinuteCounts
from hypothesis import given
from hypothesis import strategies as st

from models.records import ApiCall
from streams.sinks import MINUTE_COLUMNS, ClickHouseSink
from tests.streams import minutes_reference as reference


def call(ts: float, account: str = "a", **fields: Any) -> ApiCall:
    base: dict[str, Any] = dict(event_id=f"e{ts}", ts=ts, tenant_id="t", account_id=account,
                                model="m", status=200, input_tokens=10, output_tokens=100)
    return ApiCall(**{**base, **fields})


def rows(counts: MinuteCounts) -> list[list[Any]]:
    columns = counts.columns(len(counts))
    assert len(columns) == len(MINUTE_COLUMNS)
    return [list(row) for row in zip(*columns, strict=True)]


def test_a_minute_row_counts_what_analysts_query() -> None:
    counts = MinuteCounts()
    counts.add([call(0, cot_request=True, simhash=1, jailbreak_score=0.2),
                call(1, status=429, logprobs=True, simhash=1, jailbreak_score=0.7),
                call(2, stop_reason="refusal", simhash=2)], [0.1, 0.6, 0.3])
    (row,) = rows(counts)
    got = dict(zip(MINUTE_COLUMNS, row, strict=True))
    assert (got["minute"], got["tenant_id"], got["account_id"]) == (0, "t", "a")
    assert (got["requests"], got["input_tokens"], got["output_tokens"]) == (3, 30, 300)
    assert (got["cot_requests"], got["logprob_requests"], got["errors"], got["refusals"]) == (
        1, 1, 1, 1)
    assert got["max_jailbreak_score"] == pytest.approx(0.7)
    assert got["prompt_templates"] == [1, 2] and got["max_score"] == pytest.approx(0.6)


def test_token_sums_past_64_bits_are_exact() -> None:
    counts = MinuteCounts()
    most = 2**64 - 1
    counts.add([call(0, input_tokens=most, output_tokens=most, simhash=most)] * 3, [0.0] * 3)
    (row,) = rows(counts)
    assert row[4] == row[5] == 3 * most and row[11] == [most]


def test_counts_made_with_room_for_rows_count_the_same() -> None:
    """The sink starts each interval's counts with room for the last one's rows."""
    calls = [call(60.0 * (i % 7), account=f"a{i % 5}", simhash=i % 3) for i in range(200)]
    scores = [i / 200 for i in range(200)]
    plain, roomy, cramped = MinuteCounts(), MinuteCounts(1_000), MinuteCounts(1)
    for counts in (plain, roomy, cramped):
        counts.add(calls, scores)
    assert len(plain) == 35
    assert rows(roomy) == rows(cramped) == rows(plain)


def test_equal_ids_that_are_not_one_object_count_in_one_row() -> None:
    # The by-account decoder gives equal ids as one object; calls read otherwise (msgspec,
    # the offline tools) bring a new object for each, and count in the same row.
    def fresh(text: str) -> str:
        return "".join(list(text))  # equal text, a new object each time

    calls = [call(float(i), account=fresh("acct-7"), tenant_id=fresh("org-ü"))
             for i in range(3)]
    assert calls[0].account_id is not calls[1].account_id
    counts = MinuteCounts()
    counts.add(calls[:1], [0.1])
    counts.add(calls[1:], [0.2, 0.3])
    counts.add([call(4.0, account=calls[0].account_id, tenant_id=calls[0].tenant_id)], [0.0])
    (row,) = rows(counts)
    assert (row[1], row[2], row[3]) == ("org-ü", "acct-7", 4)


def test_an_event_time_no_minute_holds_is_refused_not_miscounted() -> None:
    counts = MinuteCounts()
    with pytest.raises(OverflowError):
        counts.add([call(float("inf"))], [0.0])
    assert len(counts) == 0


# Few tenants, accounts, minutes and SimHashes, so that rows collect several calls.
minute_calls = st.builds(
    ApiCall,
    event_id=st.just("e"),
    ts=st.floats(-120.0, 300.0, allow_nan=False) | st.sampled_from([59.999999, 60.0, -0.0]),
    tenant_id=st.sampled_from(["t", "org_ü"]),
    account_id=st.sampled_from(["a", "b", "キー", ""]),
    model=st.just("m"),
    status=st.sampled_from([200, 399, 400, 429, 500]),
    input_tokens=st.integers(0, 2**64 - 1),
    output_tokens=st.integers(0, 2**64 - 1),
    cot_request=st.booleans(),
    logprobs=st.booleans(),
    stop_reason=st.sampled_from([None, "refusal", "max_tokens", "stop", "Refusal"]),
    jailbreak_score=st.none() | st.floats(0.0, 1.0),
    simhash=st.none() | st.sampled_from([0, 1, 7, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1),
)
scored_calls = st.lists(st.tuples(minute_calls, st.floats(0.0, 1.0)), max_size=40)


def _counted(batches: list[list[tuple[ApiCall, float]]]) -> tuple[MinuteCounts, dict[Any, Any]]:
    counts: MinuteCounts = MinuteCounts()
    expected: dict[Any, Any] = {}
    for batch in batches:
        calls, scores = [c for c, _ in batch], [s for _, s in batch]
        counts.add(calls, scores)
        reference.add_calls(expected, calls, scores)
    return counts, expected


@given(st.lists(scored_calls, max_size=4))
def test_counts_are_the_python_sinks_rows(batches: list[list[tuple[ApiCall, float]]]) -> None:
    counts, expected = _counted(batches)
    assert len(counts) == len(expected)
    assert rows(counts) == reference.rows(expected)


@given(st.lists(scored_calls, max_size=3), st.lists(scored_calls, max_size=3),
       st.integers(0, 50))
def test_merged_and_dropped_rows_are_the_python_sinks(
    first: list[list[tuple[ApiCall, float]]], second: list[list[tuple[ApiCall, float]]],
    written: int,
) -> None:
    counts, expected = _counted(first)
    more, more_expected = _counted(second)
    counts.merge(more)
    reference.merge(expected, more_expected)
    assert rows(counts) == reference.rows(expected)
    assert rows(more) == reference.rows(more_expected)  # merging leaves the other as it was
    counts.drop_first(written)
    assert rows(counts) == reference.rows(expected)[written:]
    # Counting goes on after the drop: rows of dropped keys start again at the end.
    kept = dict(list(expected.items())[written:])
    calls = [c for batch in second for c, _ in batch]
    scores = [s for batch in second for _, s in batch]
    counts.add(calls, scores)
    reference.add_calls(kept, calls, scores)
    assert rows(counts) == reference.rows(kept)


class FailingClient:
    def __init__(self) -> None:
        self.fail = True
        self.inserted: list[tuple[str, list[list[Any]]]] = []

    def insert(self, table: str, data: list[list[Any]], column_names: list[str],
               column_oriented: bool = False) -> None:
        if self.fail:
            raise ConnectionError("ClickHouse went away")
        self.inserted.append((table, [list(row) for row in zip(*data, strict=True)]
                              if column_oriented else data))


def test_failed_flush_keeps_rows_for_the_next_one() -> None:
    client = FailingClient()
    sink = ClickHouseSink(client, "db")  # type: ignore[arg-type]
    sink.add_call(call(0), 0.1)
    sink.add_call(call(30), 0.2)  # same minute: one row
    sink.add_call(call(61), 0.3)  # next minute
    with pytest.raises(ConnectionError):
        sink.flush()
    sink.add_call(call(5), 0.9)  # arrives while the rows wait: merged, not duplicated
    assert sink.pending == 2
    client.fail = False
    assert sink.flush() == 2
    (table, rows), = client.inserted
    assert table == "db.account_minute_in"
    by_minute = {row[0]: row for row in rows}
    assert by_minute[0][3] == 3 and by_minute[0][-1] == pytest.approx(0.9)
    assert by_minute[60][3] == 1
    assert sink.pending == 0


def test_a_drain_of_calls_aggregates_as_the_calls_one_by_one() -> None:
    calls = [call(float(ts), account=f"a{ts % 3}", simhash=ts % 5, cot_request=ts % 2 == 0)
             for ts in range(0, 200, 7)]
    scores = [(ts % 10) / 10 for ts in range(len(calls))]
    one_by_one = ClickHouseSink(FailingClient(), "db")  # type: ignore[arg-type]
    for c, score in zip(calls, scores, strict=True):
        one_by_one.add_call(c, score)
    drained = ClickHouseSink(FailingClient(), "db")  # type: ignore[arg-type]
    drained.add_calls(calls[:10], scores[:10])
    drained.add_calls(calls[10:], scores[10:])
    assert rows(drained._minutes) == rows(one_by_one._minutes)
    assert len(drained._minutes) == 12  # 3 accounts x 4 minutes
    with pytest.raises(ValueError):  # a score for every call, or nothing is counted
        drained.add_calls(calls, scores[:-1])
    assert rows(drained._minutes) == rows(one_by_one._minutes)


def test_a_large_flush_inserts_in_parts_and_a_failure_keeps_only_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("streams.sinks.MINUTE_ROWS_PER_INSERT", 2)

    class FailsAtTheSecondInsert(FailingClient):
        calls = 0

        def insert(self, table: str, data: list[list[Any]], column_names: list[str],
                   column_oriented: bool = False) -> None:
            self.calls += 1
            self.fail = self.calls == 2
            super().insert(table, data, column_names, column_oriented)

    client = FailsAtTheSecondInsert()
    sink = ClickHouseSink(client, "db")  # type: ignore[arg-type]
    sink.add_calls([call(60.0 * m, account=f"a{m}") for m in range(5)], [0.5] * 5)
    with pytest.raises(ConnectionError):  # the second insert fails
        sink.flush()
    assert [len(rows) for _, rows in client.inserted] == [2]
    assert sink.pending == 3  # what the first insert wrote is not kept to be written again
    assert sink.flush() == 3
    assert [len(rows) for _, rows in client.inserted] == [2, 2, 1]
    written = sorted(row[2] for _, rows in client.inserted for row in rows)
    assert written == ["a0", "a1", "a2", "a3", "a4"]
    assert sink.rows_written["account_minute"] == 5 and sink.pending == 0
