"""distillwatch wire formats: pydantic models of the contract and their decoders."""

from schemas.alert import AccountRef, Alert, AlertReason
from schemas.deadletter import DeadLetter
from schemas.decode import Rejection, decode_api_calls, decode_verdict
from schemas.event import ApiCallEvent
from schemas.feedback import AnalystVerdict
from schemas.labels import AccountLabel

__all__ = [
    "AccountLabel",
    "AccountRef",
    "Alert",
    "AlertReason",
    "AnalystVerdict",
    "ApiCallEvent",
    "DeadLetter",
    "Rejection",
    "decode_api_calls",
    "decode_verdict",
]
