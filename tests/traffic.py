"""Hand-made API-call traffic with known answers, for tests of the pipeline.

`harvester` is an account coercing reasoning traces (every request asks for the full
trace, single-turn, cut at max_tokens); `chatter` is an ordinary chat account.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(
    tenant_id: str, account_id: str, ts: datetime, seq: int, *, cot: bool = False,
    turn: int = 1, output_tokens: int = 300, stop_reason: str = "end_turn", **prompt: Any,
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": f"{account_id}-{seq}",
        "ts": iso(ts),
        "tenant_id": tenant_id,
        "account_id": account_id,
        "request": {"model": "frontier-large", "max_tokens": 4096, "turn": turn},
        "response": {"status": 200, "input_tokens": 400, "output_tokens": output_tokens,
                     "stop_reason": stop_reason},
        "prompt": {"simhash": f"{seq * 7919 % 2**64:016x}", "topic": "math",
                   "cot_request": cot, **prompt},
        "client": {"ip": "198.51.100.0/24", "asn": 64501, "user_agent": "python-httpx/0.27"},
    }


def harvester(tenant_id: str, account_id: str, n: int = 120, every_s: float = 5.0,
              start: datetime = START) -> list[dict[str, Any]]:
    return [
        event(tenant_id, account_id, start + timedelta(seconds=i * every_s), i, cot=True,
              output_tokens=4096, stop_reason="max_tokens")
        for i in range(n)
    ]


def chatter(tenant_id: str, account_id: str, n: int = 30, every_s: float = 20.0,
            start: datetime = START) -> list[dict[str, Any]]:
    return [
        event(tenant_id, account_id, start + timedelta(seconds=i * every_s + 3), i,
              cot=(i % 10 == 0), turn=1 + i % 4)
        for i in range(n)
    ]


def by_time(*accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All events of the accounts, in event-time order."""
    return sorted((e for events in accounts for e in events), key=lambda e: e["ts"])


def encode(event_dict: dict[str, Any]) -> bytes:
    return json.dumps(event_dict, separators=(",", ":")).encode()
