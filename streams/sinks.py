"""The ClickHouse sink: per-minute account aggregates, alerts and dead letters, batched.

Each detected call is counted into its account's row of its minute of event time
(`MinuteCounts`, in Rust in `native/`): a drain hands over thousands of calls, and
counting them field by field in Python took about 6 % of a worker's samples
(bench/PROFILE.md, "Twelfth pass"). `tests/streams/minutes_reference.py` keeps the Python
it replaced, and the tests hold the two equal.

Rows are buffered in memory and written when `flush()` runs (one insert per table, per
`MINUTE_ROWS_PER_INSERT` minute rows): on a wall-clock timer in the worker, and once more
on shutdown, so a clean stop loses nothing. A failed insert puts the rows not yet written
back into the buffer to be tried again at the next flush.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from distillwatch_native import MinuteCounts

from models.linking.clusters import CampaignMember
from models.records import ApiCall
from schemas.alert import Alert
from schemas.deadletter import DeadLetter

log = logging.getLogger(__name__)

MINUTE_COLUMNS = [
    "minute", "tenant_id", "account_id", "requests", "input_tokens", "output_tokens",
    "cot_requests", "logprob_requests", "errors", "refusals", "max_jailbreak_score",
    "prompt_templates", "max_score",
]
ALERT_COLUMNS = [
    "alert_id", "dedup_key", "kind", "status", "severity", "score", "tenant_id", "account_id",
    "campaign_id", "accounts", "event_time", "detected_at", "first_event_time", "signals",
    "reasons", "alert_json",
]
MEMBER_COLUMNS = [
    "campaign_id", "tenant_id", "account_id", "since", "until", "link_kinds", "updated",
]
DEAD_LETTER_COLUMNS = [
    "rejected_at", "kind", "reason", "source_topic", "partition", "offset", "batch_index",
    "original_size",
]


MINUTE_ROWS_PER_INSERT = 50_000


def alert_row(alert: Alert) -> list[Any]:
    return [
        alert.alert_id, alert.dedup_key, alert.kind, alert.status, alert.severity, alert.score,
        alert.tenant_id, alert.account_id, alert.campaign_id,
        [(a.tenant_id, a.account_id) for a in alert.accounts],
        alert.event_time, alert.detected_at, alert.first_event_time,
        [r.signal for r in alert.reasons],
        json.dumps([r.model_dump() for r in alert.reasons]),
        alert.model_dump_json(),
    ]


def member_row(member: CampaignMember, updated: float) -> list[Any]:
    def utc(ts: float | None) -> datetime | None:
        return None if ts is None else datetime.fromtimestamp(ts, UTC)

    return [
        member.campaign_id, member.tenant_id, member.account_id, utc(member.since),
        utc(member.until), list(member.link_kinds), utc(updated),
    ]


def dead_letter_row(letter: DeadLetter) -> list[Any]:
    return [
        letter.rejected_at, letter.kind, letter.reason, letter.source_topic, letter.partition,
        letter.offset, letter.batch_index, letter.original_size,
    ]


class ClickHouseSink:
    """Buffers rows for ClickHouse and writes them in batches.

    `add_*` are called from the event loop; `flush()` may run on another thread (the
    engine is synchronous): buffers are swapped under a lock, so adds never wait for I/O.
    """

    def __init__(self, client: Client, database: str) -> None:
        self.client = client
        self.database = database
        self._lock = threading.Lock()
        self._minutes = MinuteCounts()
        self._alerts: list[list[Any]] = []
        self._dead_letters: list[list[Any]] = []
        self._members: list[list[Any]] = []
        self.rows_written = {
            "account_minute": 0, "alerts": 0, "dead_letters": 0, "campaign_members": 0,
        }
        self.flushes = 0

    def add_call(self, call: ApiCall, score: float) -> None:
        self.add_calls((call,), (score,))

    def add_calls(self, calls: Sequence[ApiCall], scores: Sequence[float]) -> None:
        """Count calls with their combined scores (`scores[i]` is `calls[i]`'s) into the
        minute aggregates; one lock for the lot, as a drain hands over thousands."""
        if len(calls) != len(scores):
            raise ValueError(f"{len(calls)} calls but {len(scores)} scores")
        with self._lock:
            self._minutes.add(calls, scores)

    def add_alert(self, alert: Alert) -> None:
        with self._lock:
            self._alerts.append(alert_row(alert))

    def add_campaign_member(self, member: CampaignMember, updated: float) -> None:
        """A change of membership, as of event time `updated` (seconds)."""
        with self._lock:
            self._members.append(member_row(member, updated))

    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self._lock:
            self._dead_letters.append(dead_letter_row(letter))

    @property
    def pending(self) -> int:
        with self._lock:
            return (
                len(self._minutes) + len(self._alerts) + len(self._dead_letters)
                + len(self._members)
            )

    def flush(self) -> int:
        """Write everything buffered; return rows written. On failure, keep the rows."""
        with self._lock:
            # The next interval's counts start with room for as many rows as this one's
            # (up to an insert's): not grown and rehashed to them again.
            minutes = self._minutes
            self._minutes = MinuteCounts(min(len(minutes), MINUTE_ROWS_PER_INSERT))
            alerts, self._alerts = self._alerts, []
            dead_letters, self._dead_letters = self._dead_letters, []
            members, self._members = self._members, []
        written = 0
        try:
            while minutes:
                # In inserts of at most MINUTE_ROWS_PER_INSERT: a backlog's flush can hold
                # hundreds of thousands of rows, and their columns all at once would raise
                # the worker's heap for good. Rows leave `minutes` once inserted, so a
                # failure keeps (and retries) only those not written. Column by column, as
                # the native format is; minutes as epoch seconds, which a DateTime takes.
                part = minutes.columns(MINUTE_ROWS_PER_INSERT)
                self.client.insert(f"{self.database}.account_minute_in", part,
                                   column_names=MINUTE_COLUMNS, column_oriented=True)
                inserted = len(part[0])
                del part
                minutes.drop_first(inserted)
                self.rows_written["account_minute"] += inserted
                written += inserted
            for table, columns, rows in (
                ("alerts", ALERT_COLUMNS, alerts),
                ("dead_letters", DEAD_LETTER_COLUMNS, dead_letters),
                ("campaign_members", MEMBER_COLUMNS, members),
            ):
                if rows:
                    self.client.insert(f"{self.database}.{table}", rows, column_names=columns)
                    self.rows_written[table] += len(rows)
                    written += len(rows)
                    rows.clear()  # written: not to be restored if a later insert fails
        except Exception:
            self._restore(minutes, alerts, dead_letters, members)
            raise
        finally:
            self.flushes += 1
        return written

    def _restore(
        self,
        minutes: MinuteCounts,
        alerts: list[list[Any]],
        dead_letters: list[list[Any]],
        members: list[list[Any]],
    ) -> None:
        with self._lock:
            # Rows that arrived meanwhile come first; these add up with them or follow.
            self._minutes.merge(minutes)
            self._alerts[:0] = alerts
            self._dead_letters[:0] = dead_letters
            self._members[:0] = members
