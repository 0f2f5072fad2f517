"""One line of a labelled scenario's `labels.jsonl`: the truth about one account."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.fields import Rfc3339Datetime


class AccountLabel(BaseModel):
    """Whether an account is benign or attacking, and in which campaign."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: str
    account_id: str
    label: Literal["benign", "attack"]
    archetype: str
    campaign_id: str | None = None
    attack_start: Rfc3339Datetime | None = None
