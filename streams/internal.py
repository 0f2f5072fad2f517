"""Records on the internal by-account topic: API calls and analyst verdicts, tagged.

Both kinds are keyed by account, so a verdict lands on the partition, and therefore the
worker, that holds the account's state, in order with the account's events. The first
byte says which kind follows: `E` a msgpack-encoded `ApiCall`, `V` a JSON verdict.
"""

from __future__ import annotations

import msgspec

from models.records import ApiCall
from schemas.feedback import AnalystVerdict

CALL_TAG = b"E"
VERDICT_TAG = b"V"

_encode = msgspec.msgpack.Encoder().encode
_decode_call = msgspec.msgpack.Decoder(ApiCall).decode


class InternalRecordError(ValueError):
    """An internal record with an unknown tag: written by another version of distillwatch."""


def encode_call(call: ApiCall) -> bytes:
    return CALL_TAG + _encode(call)


def encode_verdict(verdict: AnalystVerdict) -> bytes:
    return VERDICT_TAG + verdict.model_dump_json().encode()


def decode_internal(value: bytes) -> ApiCall | AnalystVerdict:
    """The call or verdict in an internal record."""
    tag, body = value[:1], memoryview(value)[1:]
    if tag == CALL_TAG:
        return _decode_call(body)
    if tag == VERDICT_TAG:
        return AnalystVerdict.model_validate_json(bytes(body))
    raise InternalRecordError(f"unknown internal record tag {tag!r}")
