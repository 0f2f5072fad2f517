"""The alert (`schema_version: 1`) that distillwatch writes to `distillation-alerts`."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.fields import Rfc3339Datetime, SchemaVersion1

AlertKind = Literal["account", "campaign"]
AlertStatus = Literal["firing", "resolved"]
Severity = Literal["low", "medium", "high", "critical"]

SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")


class AccountRef(BaseModel):
    """One account an alert is about."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: str
    account_id: str


class AlertReason(BaseModel):
    """A signal that drove the score: what was observed, against which baseline, in words."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    signal: str
    value: float
    baseline: float | None = None
    detail: str


class Alert(BaseModel):
    """One alert. An episode keeps its `dedup_key` across escalations and its resolution."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: SchemaVersion1 = 1
    alert_id: str
    dedup_key: str
    kind: AlertKind
    status: AlertStatus
    severity: Severity
    score: Annotated[float, Field(ge=0, le=1)]
    tenant_id: str | None = None
    account_id: str | None = None
    campaign_id: str | None = None
    accounts: list[AccountRef]
    event_time: Rfc3339Datetime = Field(description="ts of the latest event the decision used.")
    detected_at: Rfc3339Datetime = Field(description="Wall-clock time the alert was emitted.")
    first_event_time: Rfc3339Datetime = Field(
        description="Event time of the first suspicious event of this episode."
    )
    reasons: list[AlertReason]

    @model_validator(mode="after")
    def _ids_match_kind(self) -> Self:
        # The contract: account alerts name their one account; campaign alerts their campaign.
        if self.kind == "account":
            if self.tenant_id is None or self.account_id is None:
                raise ValueError("an account alert needs tenant_id and account_id")
            own = AccountRef(tenant_id=self.tenant_id, account_id=self.account_id)
            if self.accounts != [own]:
                raise ValueError("an account alert lists exactly its own account in accounts")
        elif self.campaign_id is None:
            raise ValueError("a campaign alert needs campaign_id")
        return self
