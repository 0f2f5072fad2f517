"""The DDL and the sink against the real ClickHouse engine (embedded chDB, in this process)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from models.records import ApiCall
from schemas.alert import AccountRef, Alert, AlertReason
from streams.clickhouse import SCHEMA_VERSION, connect, migrate, query_rows
from streams.settings import Settings
from streams.sinks import ClickHouseSink

pytestmark = pytest.mark.integration


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    settings = Settings.model_validate({"DISTILLWATCH_STATE_DIR": str(tmp_path)})
    ch = connect(settings)
    yield ch
    ch.close()


def test_migrations_apply_once_and_are_idempotent(client: Any) -> None:
    assert migrate(client, "dw") == SCHEMA_VERSION
    assert migrate(client, "dw") == SCHEMA_VERSION
    _, rows = query_rows(client, "SELECT version FROM dw.schema_migrations FINAL ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    _, tables = query_rows(client, "SELECT name FROM system.tables WHERE database = 'dw'")
    assert {"account_minute", "alerts", "dead_letters"} <= {t[0] for t in tables}


def test_partial_minutes_add_up_and_alerts_fold(client: Any) -> None:
    migrate(client, "dw")
    sink = ClickHouseSink(client, "dw")
    t0 = datetime(2026, 11, 26, 18, 0, tzinfo=UTC).timestamp()
    for i in range(30):
        sink.add_call(ApiCall(f"e{i}", t0 + i, "t", "a", "m", 200, 5, 50, simhash=i % 4,
                              cot_request=i % 2 == 0), score=i / 100)
        if i == 14:
            sink.flush()  # the same minute, written in two pieces
    alert = Alert(
        alert_id="x1", dedup_key="account:t:a", kind="account", status="firing", severity="high",
        score=0.9, tenant_id="t", account_id="a", accounts=[AccountRef(tenant_id="t",
                                                                       account_id="a")],
        event_time=datetime.fromtimestamp(t0 + 29, UTC), detected_at=datetime.now(UTC),
        first_event_time=datetime.fromtimestamp(t0, UTC),
        reasons=[AlertReason(signal="cot_request_rate", value=0.5, baseline=0.0, detail="d")],
    )
    sink.add_alert(alert)
    sink.add_alert(alert)  # re-delivered: the table folds it by alert_id
    sink.flush()
    cols, rows = query_rows(
        client, "SELECT toUnixTimestamp(minute), requests, cot_requests, "
                "distinct_prompt_templates, max_score FROM dw.account_minute")
    assert rows == [[int(t0), 30, 15, 4, pytest.approx(0.29, abs=1e-6)]]
    _, alerts = query_rows(client, "SELECT alert_id, signals FROM dw.alerts FINAL")
    assert alerts == [["x1", ["cot_request_rate"]]]


def test_readonly_queries_refuse_writes(client: Any) -> None:
    migrate(client, "dw")
    with pytest.raises(Exception, match="readonly|READONLY"):
        query_rows(client, "INSERT INTO dw.dead_letters (reason) VALUES ('x')")


def test_a_worker_on_an_existing_database_imports_the_insert_path_before_input(
    tmp_path: Path,
) -> None:
    """clickhouse-connect imports pandas at a process's first insert (0.3-0.7 s holding the
    GIL). A worker restarted on a migrated database inserts nothing while it starts, so
    `open_clickhouse` imports it there, not at the first flush in the middle of input."""
    import subprocess
    import sys

    script = """
import sys
from pathlib import Path
from streams.pipeline import Pipeline
from streams.settings import Settings

settings = Settings(state_dir=Path(sys.argv[1]), state_store=False)
assert "pandas" not in sys.modules, "imported before the test could tell"
pipeline = Pipeline(settings)
pipeline.open_clickhouse()
print("pandas" in sys.modules)
"""
    first = Settings(state_dir=tmp_path, state_store=False)
    client = connect(first)
    migrate(client, first.clickhouse_database)  # the database exists: no insert at start
    client.close()
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "True"
