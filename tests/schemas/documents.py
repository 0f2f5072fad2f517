"""Valid wire documents (the contract's examples and a minimal event) and helpers to edit them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Doc = dict[str, Any]

# The examples from contract.md (wire contract, version 1), verbatim apart from the
# alert's and verdict's "…" ids, which are filled in.
CONTRACT_EVENT: Doc = {
    "schema_version": 1,
    "event_id": "01JDX3V5M8Q2W7E9R4T6Y1U3I5",
    "ts": "2026-11-26T18:00:00.123Z",
    "tenant_id": "org_12345",
    "account_id": "key_456789",
    "request": {"model": "frontier-large", "endpoint": "messages", "temperature": 1.0,
                "max_tokens": 4096, "n": 1, "logprobs": False, "stream": True,
                "tool_count": 0, "turn": 1},
    "response": {"status": 200, "input_tokens": 812, "output_tokens": 2048,
                 "latency_ms": 5400, "stop_reason": "max_tokens"},
    "prompt": {"simhash": "a3f09c1d22e4b7f0", "chars": 2310, "topic": "math",
               "cot_request": True, "jailbreak_score": 0.02, "sysprompt_probe": False},
    "client": {"ip": "203.0.113.0/24", "asn": 64500, "country": "SG",
               "user_agent": "python-httpx/0.27",
               "tls_fingerprint": "t13d1516h2_8daaf6152771_02713d6af862"},
    "account": {"created_at": "2026-11-20T00:00:00Z", "payment_fingerprint": "pf_9a8b7c"},
}

CONTRACT_ALERT: Doc = {
    "schema_version": 1,
    "alert_id": "alr_01JDX4",
    "dedup_key": "account:org_12345:key_456789",
    "kind": "account",
    "status": "firing",
    "severity": "high",
    "score": 0.93,
    "tenant_id": "org_12345",
    "account_id": "key_456789",
    "campaign_id": None,
    "accounts": [{"tenant_id": "org_12345", "account_id": "key_456789"}],
    "event_time": "2026-11-26T18:04:10.000Z",
    "detected_at": "2026-11-26T18:04:10.512Z",
    "first_event_time": "2026-11-26T17:51:00.000Z",
    "reasons": [{"signal": "cot_request_rate", "value": 0.92, "baseline": 0.03,
                 "detail": "92% of 1,240 requests in 10 min asked for full reasoning traces"}],
}

CONTRACT_VERDICT: Doc = {
    "schema_version": 1, "alert_id": "alr_01JDX4", "tenant_id": "org_12345",
    "account_id": "key_456789", "verdict": "confirmed", "analyst": "a.lee",
    "ts": "2026-11-26T19:00:00Z", "note": "proxy reseller",
}

# Only what the contract marks "required: yes".
MINIMAL_EVENT: Doc = {
    "schema_version": 1,
    "event_id": "evt-1",
    "ts": "2026-11-26T18:00:00Z",
    "tenant_id": "org_1",
    "account_id": "key_1",
    "request": {"model": "frontier-large"},
    "response": {"status": 200, "input_tokens": 10, "output_tokens": 20},
}

LABEL: Doc = {
    "tenant_id": "org_12345", "account_id": "key_456789", "label": "attack",
    "archetype": "cot_harvester", "campaign_id": "camp_7",
    "attack_start": "2026-11-26T17:50:00Z",
}

DEAD_LETTER: Doc = {
    "schema_version": 1, "kind": "invalid", "reason": "response.status: Field required",
    "source_topic": "api-calls", "partition": 3, "offset": 1_234_567, "batch_index": 17,
    "original_size": 812, "truncated": False, "rejected_at": "2026-11-26T18:00:01.250Z",
}

Factory = Callable[[], Doc]


def encode(doc: object) -> bytes:
    """Compact UTF-8 JSON, as a gateway would write it."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def set_path(doc: Doc, path: str, value: object) -> Doc:
    """Set a dotted path (`request.model`) in place, creating groups on the way; return doc."""
    *groups, leaf = path.split(".")
    target = doc
    for group in groups:
        target = target.setdefault(group, {})
    target[leaf] = value
    return doc


def drop_path(doc: Doc, path: str) -> Doc:
    """Delete a dotted path in place; return doc."""
    *groups, leaf = path.split(".")
    target = doc
    for group in groups:
        target = target[group]
    del target[leaf]
    return doc
