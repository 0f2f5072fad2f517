"""ClickHouse through clickhouse-connect: the embedded chDB engine or a server, same code.

`CLICKHOUSE_URL` decides: `chdb:///abs/path` opens the engine in this process (one process
per data path), `http(s)://...` talks to a server. The DDL is versioned: each migration is
applied once, in order, and recorded in `schema_migrations`; every statement is idempotent
so that two workers starting together do no harm.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from streams.errors import ServerUnavailable
from streams.settings import Settings, redact_url

log = logging.getLogger(__name__)

# Each migration: (version, description, statements). `{db}` is the database name.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "per-minute account aggregates, alerts, dead letters",
        [
            """CREATE TABLE IF NOT EXISTS {db}.account_minute_agg (
                minute DateTime('UTC'),
                tenant_id LowCardinality(String),
                account_id String,
                requests SimpleAggregateFunction(sum, UInt64),
                input_tokens SimpleAggregateFunction(sum, UInt64),
                output_tokens SimpleAggregateFunction(sum, UInt64),
                cot_requests SimpleAggregateFunction(sum, UInt64),
                logprob_requests SimpleAggregateFunction(sum, UInt64),
                errors SimpleAggregateFunction(sum, UInt64),
                refusals SimpleAggregateFunction(sum, UInt64),
                max_jailbreak_score SimpleAggregateFunction(max, Float32),
                prompt_templates AggregateFunction(uniqExact, UInt64),
                max_score SimpleAggregateFunction(max, Float32)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMMDD(minute)
            ORDER BY (tenant_id, account_id, minute)""",
            # The worker inserts partial per-minute rows here; the view below folds them into
            # the aggregating table, so a minute flushed twice still adds up.
            """CREATE TABLE IF NOT EXISTS {db}.account_minute_in (
                minute DateTime('UTC'),
                tenant_id String,
                account_id String,
                requests UInt64,
                input_tokens UInt64,
                output_tokens UInt64,
                cot_requests UInt64,
                logprob_requests UInt64,
                errors UInt64,
                refusals UInt64,
                max_jailbreak_score Float32,
                prompt_templates Array(UInt64),
                max_score Float32
            ) ENGINE = Null""",
            """CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.account_minute_mv
            TO {db}.account_minute_agg AS
            SELECT minute, tenant_id, account_id,
                sum(requests) AS requests, sum(input_tokens) AS input_tokens,
                sum(output_tokens) AS output_tokens, sum(cot_requests) AS cot_requests,
                sum(logprob_requests) AS logprob_requests, sum(errors) AS errors,
                sum(refusals) AS refusals, max(max_jailbreak_score) AS max_jailbreak_score,
                uniqExactArrayState(prompt_templates) AS prompt_templates,
                max(max_score) AS max_score
            FROM {db}.account_minute_in
            GROUP BY minute, tenant_id, account_id""",
            # What analysts query: one finished row per tenant, account and minute.
            """CREATE VIEW IF NOT EXISTS {db}.account_minute AS
            SELECT minute, tenant_id, account_id,
                sum(requests) AS requests, sum(input_tokens) AS input_tokens,
                sum(output_tokens) AS output_tokens, sum(cot_requests) AS cot_requests,
                sum(logprob_requests) AS logprob_requests, sum(errors) AS errors,
                sum(refusals) AS refusals, max(max_jailbreak_score) AS max_jailbreak_score,
                uniqExactMerge(prompt_templates) AS distinct_prompt_templates,
                max(max_score) AS max_score
            FROM {db}.account_minute_agg
            GROUP BY minute, tenant_id, account_id""",
            """CREATE TABLE IF NOT EXISTS {db}.alerts (
                alert_id String,
                dedup_key String,
                kind LowCardinality(String),
                status LowCardinality(String),
                severity LowCardinality(String),
                score Float32,
                tenant_id Nullable(String),
                account_id Nullable(String),
                campaign_id Nullable(String),
                accounts Array(Tuple(tenant_id String, account_id String)),
                event_time DateTime64(3, 'UTC'),
                detected_at DateTime64(3, 'UTC'),
                first_event_time DateTime64(3, 'UTC'),
                signals Array(String),
                reasons String,
                alert_json String
            ) ENGINE = ReplacingMergeTree
            PARTITION BY toYYYYMMDD(event_time)
            ORDER BY (alert_id)""",
            """CREATE TABLE IF NOT EXISTS {db}.dead_letters (
                rejected_at DateTime64(3, 'UTC'),
                kind LowCardinality(String),
                reason String,
                source_topic String,
                partition Int32,
                offset Int64,
                batch_index Nullable(UInt32),
                original_size UInt64
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMMDD(rejected_at)
            ORDER BY (source_topic, partition, offset)""",
        ],
    ),
]

MIGRATIONS.append(
    (
        2,
        "campaign membership",
        [
            # One row per change of an account's membership; FINAL (or argMax on `updated`)
            # gives the current state: which accounts a campaign has, since when, how linked.
            """CREATE TABLE IF NOT EXISTS {db}.campaign_members (
                campaign_id String,
                tenant_id String,
                account_id String,
                since DateTime64(3, 'UTC'),
                until Nullable(DateTime64(3, 'UTC')),
                link_kinds Array(LowCardinality(String)),
                updated DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(updated)
            ORDER BY (campaign_id, tenant_id, account_id)""",
        ],
    )
)

SCHEMA_VERSION = MIGRATIONS[-1][0]


def connect(settings: Settings) -> Client:
    """A client for the configured ClickHouse; raises ServerUnavailable if it cannot open."""
    url = settings.resolved_clickhouse_url
    try:
        if settings.clickhouse_embedded:
            path = url.removeprefix("chdb://")
            if path.startswith("/"):
                from pathlib import Path

                Path(path).parent.mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(dsn=url)
        client.command("SELECT 1")
    except Exception as exc:  # the drivers raise many types; all mean "not reachable"
        raise ServerUnavailable(f"ClickHouse at {redact_url(url)} is not reachable: {exc}") from exc
    return client


def migrate(client: Client, database: str) -> int:
    """Apply the migrations not yet recorded; return the schema version now in force."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"""CREATE TABLE IF NOT EXISTS {database}.schema_migrations (
            version UInt32, description String, applied_at DateTime('UTC') DEFAULT now()
        ) ENGINE = ReplacingMergeTree ORDER BY version"""
    )
    current = int(client.command(f"SELECT max(version) FROM {database}.schema_migrations") or 0)
    for version, description, statements in MIGRATIONS:
        if version <= current:
            continue
        for statement in statements:
            client.command(statement.format(db=database))
        client.insert(
            f"{database}.schema_migrations",
            [[version, description]],
            column_names=["version", "description"],
        )
        log.info("ClickHouse schema migrated to version %d: %s", version, description)
        current = version
    return current


def prepare_inserts() -> None:
    """Import now what clickhouse-connect imports at a process's first insert: pandas
    (installed with chDB), to test whether the rows are a DataFrame. The import takes
    0.3-0.7 s here and holds the GIL. A worker restarted on an existing database inserts
    nothing while it starts, so without this its first flush would stall the event loop
    mid-stream."""
    with contextlib.suppress(ImportError):
        import pandas  # noqa: F401


def query_rows(
    client: Client, sql: str, *, readonly: bool = True
) -> tuple[list[str], list[list[Any]]]:
    """Column names and rows of a query; `readonly` refuses anything that writes."""
    settings = {"readonly": 1} if readonly else {}
    result = client.query(sql, settings=settings)
    return list(result.column_names), [list(row) for row in result.result_rows]
