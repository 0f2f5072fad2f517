"""The API-call event (`schema_version: 1`): one model API request as the gateway saw it.

Prompts and completions never leave the gateway; the event carries counts, hashes and
classifier outputs. Unknown fields are ignored so that gateways can add fields before
distillwatch knows them; a missing optional group means "not supplied by this gateway".
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.fields import Rfc3339Datetime, SchemaVersion1

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
SimHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{16}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
NonNegativeInt = Annotated[int, Field(ge=0)]


class _Group(BaseModel):
    # JSON has no NaN or Infinity, and 1e400 overflows to inf: neither is a valid number here.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False, allow_inf_nan=False)


class RequestInfo(_Group):
    """What the client asked for."""

    model: str
    endpoint: str | None = None
    temperature: Annotated[float, Field(ge=0)] | None = None
    max_tokens: NonNegativeInt | None = None
    n: Annotated[int, Field(ge=1)] = 1
    logprobs: bool = False
    stream: bool = False
    tool_count: NonNegativeInt = 0
    turn: Annotated[int, Field(ge=1)] = 1


class ResponseInfo(_Group):
    """What the API answered."""

    status: Annotated[int, Field(ge=100, le=599)]
    input_tokens: NonNegativeInt
    output_tokens: NonNegativeInt
    latency_ms: NonNegativeInt | None = None
    stop_reason: str | None = None


class PromptInfo(_Group):
    """Gateway-side summaries of the prompt: a SimHash, a length and classifier outputs."""

    simhash: SimHash | None = None
    chars: NonNegativeInt | None = None
    topic: str | None = None
    cot_request: bool = False
    jailbreak_score: Annotated[float, Field(ge=0, le=1)] | None = None
    sysprompt_probe: bool = False


class ClientInfo(_Group):
    """Where the request came from."""

    ip: str | None = None
    asn: int | None = None
    country: CountryCode | None = None
    user_agent: str | None = None
    tls_fingerprint: str | None = None


class AccountInfo(_Group):
    """Facts about the account that the gateway knows."""

    created_at: Rfc3339Datetime | None = None
    payment_fingerprint: str | None = None


class ApiCallEvent(BaseModel):
    """One model API request (`schema_version: 1`), as written by the API gateway."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    schema_version: SchemaVersion1
    event_id: Id
    ts: Rfc3339Datetime = Field(description="When the request arrived at the gateway (event time).")
    tenant_id: Id
    account_id: Id
    request: RequestInfo
    response: ResponseInfo
    prompt: PromptInfo | None = None
    client: ClientInfo | None = None
    account: AccountInfo | None = None


def ts_seconds(ts: datetime) -> float:
    """Seconds since the Unix epoch of an aware timestamp."""
    return ts.timestamp()
