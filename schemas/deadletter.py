"""The dead-letter envelope: why a record on an input topic was rejected, and where it was.

`processing_error` marks a valid event that the worker failed to process (a defect of
distillwatch, not of the producer): it is dead-lettered rather than lost or left to stop
the pipeline.

A dead-letter record on `api-calls-dlq` carries the original key, the original bytes as
its value (for one bad element of a batch: that element, re-encoded as compact JSON),
the reason in the `distillwatch-reason` header, and this envelope, as JSON, in the
`distillwatch-envelope` header. The envelope is also what `DeadLetter.model_dump_json()`
gives for tools that want one JSON document per rejection.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.fields import Rfc3339Datetime, SchemaVersion1

RejectionKind = Literal[
    "empty",
    "too_large",
    "not_utf8",
    "not_json",
    "not_an_event",
    "batch_too_large",
    "invalid",
    "processing_error",
]

REASON_HEADER = "distillwatch-reason"
ENVELOPE_HEADER = "distillwatch-envelope"


class DeadLetter(BaseModel):
    """Where a rejected record came from and why it was rejected."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: SchemaVersion1 = 1
    kind: RejectionKind
    reason: str
    source_topic: str
    partition: int  # -1 when the record is no longer known (a failure after reordering)
    offset: int
    batch_index: int | None = None
    original_size: int
    truncated: bool = False
    rejected_at: Rfc3339Datetime
