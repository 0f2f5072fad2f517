"""The naive reference the throughput benchmark compares distillwatch with.

What a first streaming anomaly detector usually looks like: one Faust agent on the input
topic that validates every event with pydantic (`ApiCallEvent.model_validate_json`, a
batch with `TypeAdapter(list[ApiCallEvent])`), scores and learns it with a River
`HalfSpaceTrees` (defaults) on a few numeric fields, and sends an alert to the alert
topic. To alert on the benchmark's harvesters like distillwatch does (so that
event-to-alert latency compares like with like) it also counts each account's
reasoning-trace requests in a dict and alerts at the 50th; there is no ClickHouse sink,
no dead-letter topic and no re-keying, so it does strictly less work per event.

Run like a distillwatch worker, configured by the same environment variables::

    python -m bench.naive_app worker

`/health/` answers with the counters the benchmark reads (`events_detected`,
`accounts_tracked`, `clickhouse_pending` = 0, `clickhouse_rows_written` = {}).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import faust
from pydantic import TypeAdapter, ValidationError
from river.anomaly import HalfSpaceTrees

from schemas.event import ApiCallEvent
from streams.settings import Settings

COT_ALERT_AT = 50  # the 50th trace request of an account raises its alert

settings = Settings()
app = faust.App(
    settings.app_id,
    broker=[f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")],
    store="memory://",
    datadir=str(settings.state_dir / "faust"),
    topic_allow_declare=False,
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=True,
    web_bind=settings.web_host,
    web_host=settings.web_host,
    web_port=settings.web_port,
    consumer_max_fetch_size=16 * 1024 * 1024,
    producer_max_request_size=17 * 1024 * 1024,
    consumer_auto_offset_reset="earliest",
)
api_calls = app.topic(settings.topic_api_calls, value_serializer="raw")
alerts_topic = app.topic(settings.topic_alerts, value_serializer="raw")
_batch = TypeAdapter(list[ApiCallEvent])
model = HalfSpaceTrees(seed=7)
cot_requests: dict[tuple[str, str], int] = {}
stats = {"records_in": 0, "events_detected": 0, "rejected": 0, "alerts": 0}


def decode(value: bytes) -> list[ApiCallEvent]:
    if value.lstrip()[:1] == b"[":
        return _batch.validate_json(value)
    return [ApiCallEvent.model_validate_json(value)]


@app.agent(api_calls)
async def detect(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    async for value in stream:
        stats["records_in"] += 1
        try:
            events = decode(value)
        except ValidationError:
            stats["rejected"] += 1
            continue
        for event in events:
            x = {
                "input_tokens": event.response.input_tokens / 10_000,
                "output_tokens": event.response.output_tokens / 10_000,
                "turn": event.request.turn / 10,
                "cot": float(event.prompt.cot_request if event.prompt else 0),
            }
            score = model.score_one(x)
            model.learn_one(x)
            stats["events_detected"] += 1
            key = (event.tenant_id, event.account_id)
            count = cot_requests.get(key, 0)
            if event.prompt is not None and event.prompt.cot_request:
                count += 1
            cot_requests[key] = count
            if count == COT_ALERT_AT and event.prompt and event.prompt.cot_request:
                stats["alerts"] += 1
                alert = {
                    "dedup_key": f"account:{event.tenant_id}:{event.account_id}",
                    "kind": "account", "status": "firing", "score": score,
                    "tenant_id": event.tenant_id, "account_id": event.account_id,
                    "event_time": event.ts.isoformat(),
                }
                await alerts_topic.send(key=alert["dedup_key"].encode(),
                                        value=json.dumps(alert).encode())
        yield None


@app.page("/health/")
class Health(faust.web.View):
    async def get(self, request: Any) -> Any:
        return self.json({**stats, "accounts_tracked": len(cot_requests),
                          "clickhouse_pending": 0, "clickhouse_rows_written": {}})


if __name__ == "__main__":
    if sys.argv[1:] != ["worker"]:
        sys.exit("usage: python -m bench.naive_app worker")
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
