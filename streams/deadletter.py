"""Dead-letter records: the original bytes, the reason in headers, and the JSON envelope."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.deadletter import ENVELOPE_HEADER, REASON_HEADER, DeadLetter
from schemas.decode import Rejection

# A dead letter must itself fit in a Kafka record on clusters with the default 1 MB limit.
MAX_DEAD_LETTER_BYTES = 900_000


def dead_letter(
    rejection: Rejection, *, topic: str, partition: int, offset: int, now: datetime | None = None
) -> tuple[bytes, list[tuple[str, bytes]], DeadLetter]:
    """The value and headers to write to the dead-letter topic, and the envelope itself.

    The value is the rejected bytes; past `MAX_DEAD_LETTER_BYTES` it is cut, and the
    envelope says so (`truncated`, `original_size`).
    """
    raw = rejection.raw
    truncated = len(raw) > MAX_DEAD_LETTER_BYTES
    envelope = DeadLetter(
        kind=rejection.kind,
        reason=rejection.reason,
        source_topic=topic,
        partition=partition,
        offset=offset,
        batch_index=rejection.batch_index,
        original_size=len(raw),
        truncated=truncated,
        rejected_at=now or datetime.now(UTC),
    )
    headers = [
        (REASON_HEADER, rejection.reason.encode("utf-8")),
        (ENVELOPE_HEADER, envelope.model_dump_json().encode("utf-8")),
    ]
    return raw[:MAX_DEAD_LETTER_BYTES], headers, envelope
