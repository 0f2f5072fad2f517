"""Prototype of a batched worker, to price the recommendations in bench/PROFILE.md.

Same topology and output as `streams.pipeline` (input -> validated calls re-keyed by
account on the internal topic -> detection engine -> alerts + ClickHouse), with the
same detection core, ClickHouse sink and DDL, but without Faust's per-message machinery:

- raw aiokafka consumers, `getmany(max_records=...)` over large fetches;
- validation at the edge with msgspec structs that mirror `schemas.event.ApiCallEvent`;
  a record msgspec refuses goes through `schemas.decode.decode_api_calls` (pydantic) so
  rejections keep their exact reasons (dead-lettering is left out of the prototype: the
  benchmark sends none);
- the internal topic carries one record per destination partition per fetched batch
  (a msgpack array of `ApiCall`s, the partition chosen from the account like Kafka's
  default partitioner), produced with linger and large batches;
- input offsets are committed once the internal records are acknowledged.

Not production code: no dead letters, no verdicts, no rebalance handling beyond what
aiokafka's group does. Run like a worker::

    python -m bench._prototype_app worker
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2
from msgspec import Meta, Struct

from models.records import ApiCall
from schemas.decode import decode_api_calls
from streams.clickhouse import connect, migrate
from streams.pipeline import engine_from_settings, stamp
from streams.settings import Settings
from streams.sinks import ClickHouseSink

Id = Annotated[str, Meta(min_length=1, max_length=128)]
NonNeg = Annotated[int, Meta(ge=0)]
Ts = Annotated[datetime, Meta(tz=True)]


class _Req(Struct, frozen=True):
    model: str
    endpoint: str | None = None
    temperature: Annotated[float, Meta(ge=0)] | None = None
    max_tokens: NonNeg | None = None
    n: Annotated[int, Meta(ge=1)] = 1
    logprobs: bool = False
    stream: bool = False
    tool_count: NonNeg = 0
    turn: Annotated[int, Meta(ge=1)] = 1


class _Resp(Struct, frozen=True):
    status: Annotated[int, Meta(ge=100, le=599)]
    input_tokens: NonNeg
    output_tokens: NonNeg
    latency_ms: NonNeg | None = None
    stop_reason: str | None = None


class _Prompt(Struct, frozen=True):
    simhash: Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{16}$")] | None = None
    chars: NonNeg | None = None
    topic: str | None = None
    cot_request: bool = False
    jailbreak_score: Annotated[float, Meta(ge=0, le=1)] | None = None
    sysprompt_probe: bool = False


class _Client(Struct, frozen=True):
    ip: str | None = None
    asn: int | None = None
    country: Annotated[str, Meta(pattern=r"^[A-Z]{2}$")] | None = None
    user_agent: str | None = None
    tls_fingerprint: str | None = None


class _Account(Struct, frozen=True):
    created_at: Ts | None = None
    payment_fingerprint: str | None = None


class WireEvent(Struct, frozen=True):
    schema_version: Annotated[int, Meta(ge=1, le=1)]
    event_id: Id
    ts: Ts
    tenant_id: Id
    account_id: Id
    request: _Req
    response: _Resp
    prompt: _Prompt | None = None
    client: _Client | None = None
    account: _Account | None = None


_one = msgspec.json.Decoder(WireEvent).decode
_many = msgspec.json.Decoder(list[WireEvent]).decode
_encode_calls = msgspec.msgpack.Encoder().encode
_decode_calls = msgspec.msgpack.Decoder(list[ApiCall]).decode


def to_call(e: WireEvent) -> ApiCall:
    req, resp, prompt, client, account = e.request, e.response, e.prompt, e.client, e.account
    return ApiCall(
        e.event_id, e.ts.timestamp(), e.tenant_id, e.account_id, req.model, resp.status,
        resp.input_tokens, resp.output_tokens, req.endpoint, req.max_tokens, req.n,
        req.logprobs, req.tool_count, req.turn, resp.stop_reason, prompt is not None,
        int(prompt.simhash, 16) if prompt and prompt.simhash else None,
        prompt.topic if prompt else None, prompt.cot_request if prompt else False,
        prompt.jailbreak_score if prompt else None,
        prompt.sysprompt_probe if prompt else False, client is not None,
        client.ip if client else None, client.asn if client else None,
        client.user_agent if client else None, client.tls_fingerprint if client else None,
        account.created_at.timestamp() if account and account.created_at else None,
        account.payment_fingerprint if account else None,
    )


def decode_record(value: bytes) -> list[ApiCall]:
    """Valid calls of one input record: msgspec first, pydantic for the exact verdict."""
    try:
        if value[:1] == b"[":
            events = _many(value)
            if len(events) <= 10_000:
                return [to_call(e) for e in events]
        elif len(value) <= 64 * 1024:
            return [to_call(_one(value))]
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    good, _rejections = decode_api_calls(value)
    return [ApiCall.from_event(e) for e in good]


class Prototype:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.engine = engine_from_settings(settings)
        self.stats = {"records_in": 0, "events_valid": 0, "events_detected": 0, "alerts": 0}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        client = self.executor.submit(connect, settings).result()
        self.executor.submit(migrate, client, settings.clickhouse_database).result()
        self.sink = ClickHouseSink(client, settings.clickhouse_database)

    def _consumer(self, topic: str, group: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic, bootstrap_servers=self.s.kafka_bootstrap_servers, group_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False,
            fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_wait_ms=50,
        )

    async def ingest(self, producer: AIOKafkaProducer) -> None:
        consumer = self._consumer(self.s.topic_api_calls, self.s.app_id)
        await consumer.start()
        topic = self.s.internal_topic_by_account
        partitions = sorted(await producer.partitions_for(topic))
        n = len(partitions)
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=100, max_records=20_000)
                if not batches:
                    continue
                by_partition: list[list[ApiCall]] = [[] for _ in range(n)]
                records = 0
                for messages in batches.values():
                    records += len(messages)
                    for message in messages:
                        for call in decode_record(message.value):
                            p = (murmur2(call.account_id.encode()) & 0x7FFFFFFF) % n
                            by_partition[p].append(call)
                futures = []
                valid = 0
                for p, calls in enumerate(by_partition):
                    for i in range(0, len(calls), 5000):  # keep each record under ~1 MB
                        chunk = calls[i:i + 5000]
                        valid += len(chunk)
                        futures.append(await producer.send(
                            topic, _encode_calls(chunk), partition=partitions[p]))
                await asyncio.gather(*futures)
                await consumer.commit()
                self.stats["records_in"] += records
                self.stats["events_valid"] += valid
        finally:
            await consumer.stop()

    async def detect(self, producer: AIOKafkaProducer) -> None:
        consumer = self._consumer(self.s.internal_topic_by_account, self.s.app_id + "-detect")
        await consumer.start()
        engine, sink, stats = self.engine, self.sink, self.stats
        alerts_topic = self.s.topic_alerts
        watermark = 0.0
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=100, max_records=50)
                alerts = []
                for messages in batches.values():
                    for message in messages:
                        calls = _decode_calls(message.value)
                        for call in calls:
                            alerts.extend(engine.process(call))
                            sink.add_call(call, engine.last_score)
                            if call.ts > watermark:
                                watermark = call.ts
                        stats["events_detected"] += len(calls)
                if batches:
                    alerts.extend(engine.advance(watermark))
                for alert in alerts:
                    alert = stamp(alert)
                    await producer.send(alerts_topic, alert.model_dump_json().encode(),
                                        key=alert.dedup_key.encode())
                    sink.add_alert(alert)
                    stats["alerts"] += 1
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()

    async def flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.s.clickhouse_flush_interval_s)
            await loop.run_in_executor(self.executor, self.sink.flush)

    def health(self) -> dict[str, object]:
        return {**self.stats, "accounts_tracked": self.engine.accounts_tracked,
                "clickhouse_pending": self.sink.pending,
                "clickhouse_rows_written": dict(self.sink.rows_written),
                "started": datetime.now(UTC).isoformat()}

    async def run(self) -> None:
        app = web.Application()
        app.router.add_get("/health/", lambda _r: web.json_response(self.health()))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, self.s.web_host, self.s.web_port).start()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.s.kafka_bootstrap_servers, linger_ms=5,
            max_batch_size=4 * 1024 * 1024, max_request_size=17 * 1024 * 1024,
            compression_type="lz4",
        )
        await producer.start()
        try:
            await asyncio.gather(self.ingest(producer), self.detect(producer),
                                 self.flush_forever())
        finally:
            await producer.stop()


def main() -> None:
    if sys.argv[1:] != ["worker"]:
        sys.exit("usage: python -m bench._prototype_app worker")
    settings = Settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(Prototype(settings).run())


if __name__ == "__main__":
    main()
