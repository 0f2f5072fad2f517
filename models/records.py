"""The cheap record the detection core works on: one API call, flattened, times as floats.

The wire model (`schemas.event.ApiCallEvent`) is validated once at the edge; past it the
core carries `ApiCall`, a frozen record with event times in seconds since the Unix epoch,
so the hot path touches no pydantic objects and no datetimes. It is a msgspec `Struct`:
built several times faster than a frozen dataclass, invisible to the garbage collector
(`gc=False`: it holds only atoms), and sent between workers as a compact msgpack array
(`array_like`), in field order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from schemas.event import ApiCallEvent


def _timestamp(when: datetime) -> float:
    return when.timestamp()


class ApiCall(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One API request. Fields a gateway did not send are None (or their contract default)."""

    event_id: str
    ts: float  # event time, seconds since the Unix epoch
    tenant_id: str
    account_id: str
    model: str
    status: int
    input_tokens: int
    output_tokens: int
    endpoint: str | None = None
    max_tokens: int | None = None
    n: int = 1
    logprobs: bool = False
    tool_count: int = 0
    turn: int = 1
    stop_reason: str | None = None
    has_prompt: bool = False  # the gateway sent a `prompt` group
    simhash: int | None = None
    topic: str | None = None
    cot_request: bool = False
    jailbreak_score: float | None = None
    sysprompt_probe: bool = False
    has_client: bool = False  # the gateway sent a `client` group
    ip: str | None = None
    asn: int | None = None
    user_agent: str | None = None
    tls_fingerprint: str | None = None
    created_at: float | None = None  # account creation, seconds since the Unix epoch
    payment_fingerprint: str | None = None

    @classmethod
    def from_event(
        cls, event: ApiCallEvent | Any, seconds: Callable[[Any], float] = _timestamp
    ) -> ApiCall:
        """Flatten a validated wire event.

        `seconds` turns the event's timestamps into seconds since the epoch: datetimes for
        the pydantic model; the edge decoder (`streams/fast_decode.py`) passes RFC 3339
        strings and its parser.
        """
        req, resp, prompt, client, account = (
            event.request, event.response, event.prompt, event.client, event.account,
        )
        created_at = account.created_at if account else None
        return cls(
            event_id=event.event_id,
            ts=seconds(event.ts),
            tenant_id=event.tenant_id,
            account_id=event.account_id,
            model=req.model,
            status=resp.status,
            input_tokens=resp.input_tokens,
            output_tokens=resp.output_tokens,
            endpoint=req.endpoint,
            max_tokens=req.max_tokens,
            n=req.n,
            logprobs=req.logprobs,
            tool_count=req.tool_count,
            turn=req.turn,
            stop_reason=resp.stop_reason,
            has_prompt=prompt is not None,
            simhash=int(prompt.simhash, 16) if prompt and prompt.simhash else None,
            topic=prompt.topic if prompt else None,
            cot_request=prompt.cot_request if prompt else False,
            jailbreak_score=prompt.jailbreak_score if prompt else None,
            sysprompt_probe=prompt.sysprompt_probe if prompt else False,
            has_client=client is not None,
            ip=client.ip if client else None,
            asn=client.asn if client else None,
            user_agent=client.user_agent if client else None,
            tls_fingerprint=client.tls_fingerprint if client else None,
            # `is not None`, not truthiness: "" is no timestamp, and the schema says so.
            created_at=seconds(created_at) if created_at is not None else None,
            payment_fingerprint=account.payment_fingerprint if account else None,
        )
