"""A small structural checker of the wire contract's API-call event, independent of schemas/."""

from __future__ import annotations

import re
from typing import Any

TS_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
SIMHASH = re.compile(r"^[0-9a-f]{16}$")
STOP_REASONS = {None, "end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def contract_problems(event: dict[str, Any]) -> list[str]:
    """What is wrong with ``event`` per the contract (empty when valid)."""
    problems: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    check(event.get("schema_version") == 1, "schema_version")
    for name in ("event_id", "tenant_id", "account_id"):
        value = event.get(name)
        check(isinstance(value, str) and 1 <= len(value) <= 128, name)
    check(isinstance(event.get("ts"), str) and bool(TS_MS_Z.match(event["ts"])), "ts")

    request = event.get("request")
    check(isinstance(request, dict), "request")
    if isinstance(request, dict):
        check(isinstance(request.get("model"), str), "request.model")
        check(isinstance(request.get("endpoint"), str), "request.endpoint")
        check(_is_number(request.get("temperature")) and request["temperature"] >= 0, "temp")
        check(_is_int(request.get("max_tokens")) and request["max_tokens"] >= 0, "max_tokens")
        check(_is_int(request.get("n")) and request["n"] >= 1, "request.n")
        check(isinstance(request.get("logprobs"), bool), "request.logprobs")
        check(isinstance(request.get("stream"), bool), "request.stream")
        check(_is_int(request.get("tool_count")) and request["tool_count"] >= 0, "tool_count")
        check(_is_int(request.get("turn")) and request["turn"] >= 1, "request.turn")

    response = event.get("response")
    check(isinstance(response, dict), "response")
    if isinstance(response, dict):
        check(_is_int(response.get("status")) and 100 <= response["status"] <= 599, "status")
        for name in ("input_tokens", "output_tokens", "latency_ms"):
            check(_is_int(response.get(name)) and response[name] >= 0, f"response.{name}")
        check(response.get("stop_reason") in STOP_REASONS, "response.stop_reason")

    if "prompt" in event:
        prompt = event["prompt"]
        check(isinstance(prompt.get("simhash"), str) and bool(SIMHASH.match(prompt["simhash"])),
              "prompt.simhash")  # fmt: skip
        check(_is_int(prompt.get("chars")) and prompt["chars"] >= 0, "prompt.chars")
        check(isinstance(prompt.get("topic"), str), "prompt.topic")
        check(isinstance(prompt.get("cot_request"), bool), "prompt.cot_request")
        score = prompt.get("jailbreak_score")
        check(_is_number(score) and 0 <= score <= 1, "prompt.jailbreak_score")
        check(isinstance(prompt.get("sysprompt_probe"), bool), "prompt.sysprompt_probe")

    if "client" in event:
        client = event["client"]
        check(isinstance(client.get("ip"), str), "client.ip")
        check(_is_int(client.get("asn")), "client.asn")
        check(isinstance(client.get("country"), str) and len(client["country"]) == 2, "country")
        check(isinstance(client.get("user_agent"), str), "client.user_agent")
        check(isinstance(client.get("tls_fingerprint"), str), "client.tls_fingerprint")

    account = event.get("account")
    if account is not None:
        created = account.get("created_at")
        check(isinstance(created, str) and bool(RFC3339.match(created)), "account.created_at")
        check(isinstance(account.get("payment_fingerprint"), str), "payment_fingerprint")
    return problems
