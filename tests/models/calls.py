"""Builders of `ApiCall` records: ordinary traffic of several kinds, and harvesting.

Plain functions, so hypothesis tests can use them too; `conftest.py` wraps them as
fixtures.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from models.records import ApiCall

T0 = 1_800_000_000.0  # a whole hour, so buckets and windows start on it

CallFactory = Callable[..., ApiCall]

_event_ids = itertools.count()


def build_call(
    ts: float = T0, *, tenant_id: str = "org_1", account_id: str = "key_1", **fields: Any
) -> ApiCall:
    """An ordinary chat request; `fields` override any `ApiCall` field."""
    values: dict[str, Any] = {
        "model": "frontier-large",
        "status": 200,
        "input_tokens": 900,
        "output_tokens": 350,
        "endpoint": "messages",
        "max_tokens": 4096,
        "stop_reason": "end_turn",
        "turn": 3,
        "has_prompt": True,
        "topic": "chat",
        "has_client": True,
    }
    values.update(fields)
    return ApiCall(
        event_id=f"evt_{next(_event_ids)}",
        ts=ts,
        tenant_id=tenant_id,
        account_id=account_id,
        **values,
    )


def build_harvest_call(ts: float = T0, **fields: Any) -> ApiCall:
    """A single-turn request for a full reasoning trace that runs into max_tokens."""
    values: dict[str, Any] = {
        "input_tokens": 250,
        "output_tokens": 4096,
        "stop_reason": "max_tokens",
        "turn": 1,
        "topic": "math",
        "cot_request": True,
    }
    values.update(fields)
    return build_call(ts, **values)


def build_coding_call(ts: float = T0, **fields: Any) -> ApiCall:
    """An agentic coding request: deep in a conversation, tools declared."""
    values: dict[str, Any] = {
        "input_tokens": 12_000,
        "output_tokens": 600,
        "stop_reason": "tool_use",
        "turn": 14,
        "tool_count": 6,
        "topic": "coding",
    }
    values.update(fields)
    return build_call(ts, **values)


def spread(start: float, seconds: float, count: int) -> list[float]:
    """`count` event times evenly spaced over [start, start + seconds)."""
    return [start + seconds * i / count for i in range(count)]
