"""The analyst verdict (`schema_version: 1`) read from `alert-feedback`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.fields import Rfc3339Datetime, SchemaVersion1

Verdict = Literal["confirmed", "benign"]


class AnalystVerdict(BaseModel):
    """An analyst's judgement on an alert: a real extraction attempt, or benign."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: SchemaVersion1
    alert_id: str | None = None
    tenant_id: str
    account_id: str
    verdict: Verdict
    analyst: str
    ts: Rfc3339Datetime
    note: str | None = None
