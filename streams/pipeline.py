"""The Faust application: agents that move API-call events through the detection core.

    api-calls ──ingest──► <app>-api-calls-by-account ──detect──► distillation-alerts
         │                 (valid events, keyed by account)   └──► ClickHouse (aggregates, alerts)
         └──► api-calls-dlq (rejected input, with its reason)      ClickHouse (dead letters)

`ingest` validates at the edge and re-keys valid events by account, so that whichever
partition a producer wrote to, every event of an account meets that account's state on
one worker. `detect` runs the detection core in event time and emits alerts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from clickhouse_connect.driver.client import Client

from models.engine import DetectionEngine
from models.records import ApiCall
from schemas.alert import Alert
from schemas.decode import Rejection, decode_api_calls, decode_verdict
from schemas.feedback import AnalystVerdict
from streams.clickhouse import connect, migrate, query_rows
from streams.deadletter import dead_letter
from streams.internal import decode_internal, encode_call, encode_verdict
from streams.kafka import faust_credentials
from streams.settings import Settings, redact_url
from streams.sinks import ClickHouseSink

log = logging.getLogger(__name__)

TAKE_MAX = 2_000  # records handed to an agent at once
TAKE_WITHIN_S = 0.05  # ... or whatever arrived within this many seconds (wall clock)
LOG_FIRST_DEAD_LETTERS = 20


@dataclass
class PipelineStats:
    """Counters a worker reports on /health and in its logs."""

    records_in: int = 0
    events_valid: int = 0
    rejected: int = 0
    events_detected: int = 0
    alerts: int = 0
    verdicts: int = 0
    failed: int = 0  # valid events the worker failed to process (dead-lettered)
    started_at: float = field(default_factory=lambda: datetime.now(UTC).timestamp())


def engine_from_settings(settings: Settings) -> DetectionEngine:
    """The detection core configured as this deployment wants it."""
    return DetectionEngine(fire_threshold=settings.fire_threshold, quiet_s=settings.quiet_s)


def stamp(alert: Alert) -> Alert:
    """The alert with `detected_at` set to now (wall clock): the moment it is emitted."""
    return alert.model_copy(update={"detected_at": datetime.now(UTC)})


class Pipeline:
    """One worker's Faust app, its topics, the detection engine and the ClickHouse sink."""

    def __init__(self, settings: Settings, engine: DetectionEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine or engine_from_settings(settings)
        self.stats = PipelineStats()
        self.watermark = 0.0  # max event time (epoch seconds) this worker has seen
        self._dead_lettered = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Client | None = None
        self.sink: ClickHouseSink | None = None
        self.app = self._build_app()

    # -- wiring ---------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        s = self.settings
        brokers = [f"kafka://{server.strip()}" for server in s.kafka_bootstrap_servers.split(",")]
        app = faust.App(
            s.app_id,
            broker=brokers,
            broker_credentials=faust_credentials(s),
            store="memory://",
            datadir=str(s.state_dir / "faust"),
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.topic_replication,
            topic_allow_declare=False,  # `distillwatch topics create` owns topic creation
            key_serializer="raw",
            value_serializer="raw",
            web_enabled=True,
            web_bind=s.web_host,
            web_host=s.web_host,
            web_port=s.web_port,
            producer_max_request_size=17 * 1024 * 1024,
            consumer_max_fetch_size=16 * 1024 * 1024,
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=True,
        )
        self.api_calls = app.topic(s.topic_api_calls, value_serializer="raw")
        self.by_account = app.topic(s.internal_topic_by_account, value_serializer="raw")
        self.alerts_topic = app.topic(s.topic_alerts, value_serializer="raw")
        self.dead_letters = app.topic(s.topic_dead_letters, value_serializer="raw")
        self.feedback = app.topic(s.topic_feedback, value_serializer="raw")

        app.agent(self.api_calls, name="ingest")(self._ingest)
        app.agent(self.by_account, name="detect")(self._detect)
        app.agent(self.feedback, name="feedback")(self._feedback)
        app.timer(s.clickhouse_flush_interval_s)(self._flush_timer)
        pipeline = self

        class HealthView(faust.web.View):
            async def get(self, request: Any) -> Any:
                return self.json(pipeline.health())

        class SqlView(faust.web.View):
            async def post(self, request: Any) -> Any:
                return await pipeline._sql(self, request)

        app.page("/health/")(HealthView)
        app.page("/sql/")(SqlView)
        app.on_before_shutdown.connect(self._on_before_shutdown)
        return app

    # -- agents ---------------------------------------------------------------------------

    async def _ingest(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        stats, topic = self.stats, self.settings.topic_api_calls
        send_event = self.by_account.send
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            for record in batch:
                stats.records_in += 1
                message = record.message
                events, rejections = decode_api_calls(record.value)
                for rejection in rejections:
                    await self._dead_letter(rejection, topic, message)
                stats.rejected += len(rejections)
                stats.events_valid += len(events)
                for event in events:
                    call = ApiCall.from_event(event)
                    await send_event(key=call.account_id.encode(), value=encode_call(call))
            yield None

    async def _detect(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        engine, stats = self.engine, self.stats
        topic = self.settings.internal_topic_by_account
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            sink = self.sink
            watermark = self.watermark
            for record in batch:
                try:
                    call = decode_internal(record.value)
                    if isinstance(call, AnalystVerdict):
                        for alert in engine.apply_verdict(
                            call.tenant_id, call.account_id, call.verdict, call.ts.timestamp()
                        ):
                            await self._emit(alert)
                        stats.verdicts += 1
                        continue
                    stats.events_detected += 1
                    alerts = engine.process(call)
                except Exception as exc:  # a defect must not stop the pipeline or lose the event
                    log.exception("failed to process an event; dead-lettering it")
                    await self._dead_letter(
                        Rejection("processing_error", f"{type(exc).__name__}: {exc}",
                                  record.value or b""),
                        topic, record.message,
                    )
                    continue
                for alert in alerts:
                    await self._emit(alert)
                if sink is not None:
                    sink.add_call(call, engine.last_score)
                if call.ts > watermark:
                    watermark = call.ts
            self.watermark = watermark
            for alert in engine.advance(watermark):
                await self._emit(alert)
            yield None

    async def _feedback(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Analyst verdicts, re-keyed by account to meet the account's state in `detect`."""
        topic = self.settings.topic_feedback
        async for record in stream.events():
            verdict = decode_verdict(record.value)
            if isinstance(verdict, Rejection):
                await self._dead_letter(verdict, topic, record.message)
                continue
            await self.by_account.send(
                key=verdict.account_id.encode(), value=encode_verdict(verdict)
            )
            yield None

    async def _dead_letter(self, rejection: Rejection, topic: str, message: Any) -> None:
        value, headers, envelope = dead_letter(
            rejection, topic=topic, partition=message.partition, offset=message.offset
        )
        await self.dead_letters.send(key=message.key, value=value, headers=headers)
        if self.sink is not None:
            self.sink.add_dead_letter(envelope)
        if rejection.kind == "processing_error":
            self.stats.failed += 1
        self._dead_lettered += 1
        # Name the first ones in full; after that a running count, so a flood of bad input
        # cannot flood the log too. Every one of them is in the topic and in ClickHouse.
        if self._dead_lettered <= LOG_FIRST_DEAD_LETTERS:
            log.warning(
                "dead-lettered %s[%d]@%d%s: %s", topic, message.partition, message.offset,
                "" if rejection.batch_index is None else f" #{rejection.batch_index}",
                rejection.reason,
            )
        elif self._dead_lettered % 1000 == 0:
            log.warning("%d records dead-lettered so far", self._dead_lettered)

    async def _emit(self, alert: Alert) -> None:
        alert = stamp(alert)
        self.stats.alerts += 1
        await self.alerts_topic.send(
            key=alert.dedup_key.encode(), value=alert.model_dump_json().encode()
        )
        if self.sink is not None:
            self.sink.add_alert(alert)
        log.info(
            "alert %s %s %s score=%.2f %s", alert.status, alert.severity, alert.dedup_key,
            alert.score, "; ".join(r.detail for r in alert.reasons),
        )

    # -- ClickHouse -----------------------------------------------------------------------

    def open_clickhouse(self) -> None:
        """Connect, apply the DDL, and start buffering rows. Call before the worker starts.

        The client lives on the sink's one thread, which every later ClickHouse call uses.
        """
        client = self._executor.submit(connect, self.settings).result()
        version = self._executor.submit(
            migrate, client, self.settings.clickhouse_database
        ).result()
        self._client = client
        self.sink = ClickHouseSink(client, self.settings.clickhouse_database)
        log.info(
            "ClickHouse %s ready (schema version %d)",
            redact_url(self.settings.resolved_clickhouse_url), version,
        )
        self._write_registry()

    async def _flush(self) -> None:
        if self.sink is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.sink.flush)
        except Exception as exc:  # keep running: the rows stay buffered for the next flush
            log.error("ClickHouse flush failed, will retry: %s", exc)

    async def _flush_timer(self) -> None:
        await self._flush()

    async def _on_before_shutdown(self, app: faust.App, **_: Any) -> None:
        # Streams are drained by now: what is buffered is all there will be.
        await self._flush()
        if self.sink is not None and self.sink.pending:
            log.error("ClickHouse rows still pending at shutdown: %d", self.sink.pending)
        self._registry_path.unlink(missing_ok=True)
        log.info(
            "stopped: %d records in, %d valid, %d rejected, %d alerts, rows written %s",
            self.stats.records_in, self.stats.events_valid, self.stats.rejected,
            self.stats.alerts, self.sink.rows_written if self.sink else {},
        )

    # -- HTTP: health and SQL routed to this process's embedded engine --------------------

    @property
    def _registry_path(self) -> Path:
        return self.settings.state_dir / "worker.json"

    def _write_registry(self) -> None:
        """Tell `distillwatch sql` that this process holds the embedded engine, and where."""
        self._registry_path.parent.mkdir(parents=True, exist_ok=True)
        self._registry_path.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "url": f"http://{self.settings.web_host}:{self.settings.web_port}",
                    "clickhouse": redact_url(self.settings.resolved_clickhouse_url),
                }
            )
        )

    def assigned_partitions(self) -> list[int]:
        """Partitions of the by-account topic this worker holds (its accounts' state)."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # not started, or rebalancing
            return []
        name = self.settings.internal_topic_by_account
        return sorted(tp.partition for tp in assignment if tp.topic == name)

    def health(self) -> dict[str, Any]:
        s = self.stats
        return {
            "partitions": self.assigned_partitions(),
            "records_in": s.records_in,
            "events_valid": s.events_valid,
            "rejected": s.rejected,
            "events_detected": s.events_detected,
            "alerts": s.alerts,
            "verdicts": s.verdicts,
            "failed": s.failed,
            "accounts_tracked": self.engine.accounts_tracked,
            "watermark": self.watermark,
            "clickhouse_rows_written": dict(self.sink.rows_written) if self.sink else {},
            "clickhouse_pending": self.sink.pending if self.sink else None,
        }

    async def _sql(self, web: Any, request: Any) -> Any:
        """Run a read-only query on this worker's ClickHouse client for `distillwatch sql`."""
        try:
            body = json.loads(await web.read_request_content(request))
        except ValueError:
            body = None
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query.strip():
            return web.json({"error": "body must be {\"query\": \"SELECT ...\"}"}, status=400)
        client = self._client
        if client is None:
            return web.json({"error": "ClickHouse is not open yet"}, status=503)
        loop = asyncio.get_running_loop()
        try:
            columns, rows = await loop.run_in_executor(
                self._executor, lambda: query_rows(client, query, readonly=True)
            )
        except Exception as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.bytes(
            json.dumps({"columns": columns, "rows": rows}, default=str).encode(),
            content_type="application/json",
        )
