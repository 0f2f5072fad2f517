from __future__ import annotations

from typing import Any

import pytest

from models.records import ApiCall
from streams.sinks import ClickHouseSink, MinuteAggregate


def call(ts: float, account: str = "a", **fields: Any) -> ApiCall:
    base: dict[str, Any] = dict(event_id=f"e{ts}", ts=ts, tenant_id="t", account_id=account,
                                model="m", status=200, input_tokens=10, output_tokens=100)
    return ApiCall(**{**base, **fields})


def test_minute_aggregate_counts_what_analysts_query() -> None:
    agg = MinuteAggregate()
    agg.add(call(0, cot_request=True, simhash=1, jailbreak_score=0.2), 0.1)
    agg.add(call(1, status=429, logprobs=True, simhash=1, jailbreak_score=0.7), 0.6)
    agg.add(call(2, stop_reason="refusal", simhash=2), 0.3)
    assert (agg.requests, agg.input_tokens, agg.output_tokens) == (3, 30, 300)
    assert (agg.cot_requests, agg.logprob_requests, agg.errors, agg.refusals) == (1, 1, 1, 1)
    assert agg.max_jailbreak_score == pytest.approx(0.7)
    assert agg.prompt_templates == {1, 2} and agg.max_score == pytest.approx(0.6)


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
    assert drained._minutes == one_by_one._minutes
    assert len(drained._minutes) == 12  # 3 accounts x 4 minutes
    with pytest.raises(ValueError):  # a score for every call, or nothing is counted
        drained.add_calls(calls, scores[:-1])
    assert drained._minutes == one_by_one._minutes


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
