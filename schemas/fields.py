"""Field types shared by the wire formats: RFC 3339 timestamps and `schema_version: 1`."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, Field, Strict

# RFC 3339 section 5.6 `date-time`, with the space separator its note allows. pydantic's own
# parser also takes "18:00Z" (no seconds), "+0530", "18:00:00,5" and unix seconds as a string.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def parse_rfc3339(text: str) -> datetime:
    """The aware datetime an RFC 3339 `date-time` names; ValueError if `text` is not one.

    Fractions beyond microseconds are truncated; a leap second (`:60`) is refused.

    >>> parse_rfc3339("2026-11-26T18:00:00.123+05:30").isoformat()
    '2026-11-26T18:00:00.123000+05:30'
    """
    if _RFC3339.fullmatch(text) is None:
        raise ValueError(
            f"expected an RFC 3339 timestamp with an offset or Z, like 2026-11-26T18:00:00Z; "
            f"got {text!r:.64}"
        )
    # The pattern admits only what fromisoformat (3.11+) reads the same way, once upper-cased.
    return datetime.fromisoformat(text.upper())


def _rfc3339(value: object) -> object:
    # Parse here: in strict mode pydantic's datetime refuses a str handed on by a validator.
    if isinstance(value, str):
        return parse_rfc3339(value)
    if isinstance(value, datetime):
        return value
    raise ValueError(f"expected an RFC 3339 timestamp string, got {type(value).__name__}")


Rfc3339Datetime = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
"""An aware datetime; from JSON, only an RFC 3339 string with `Z` or a `±HH:MM` offset."""

SchemaVersion1 = Annotated[int, Strict(), Field(ge=1, le=1, json_schema_extra={"const": 1})]
"""The integer 1. Not `Literal[1]`: that takes `true` and `1.0`, which equal 1 in Python."""
