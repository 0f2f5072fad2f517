"""The event model agrees with contract.md field by field: names, required, defaults, types, ranges.

`FIELDS` is the contract's table transcribed; when the contract changes, change it here first.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import BaseModel

from schemas import ApiCallEvent, decode_api_calls
from tests.schemas.documents import Factory, encode, set_path

REQUIRED = object()  # sentinel: no default, the field must be sent
ABSENT = None  # optional fields without a contract default decode to None

# path -> default when not sent (REQUIRED for required fields); from contract.md.
FIELDS: dict[str, Any] = {
    "schema_version": REQUIRED,
    "event_id": REQUIRED,
    "ts": REQUIRED,
    "tenant_id": REQUIRED,
    "account_id": REQUIRED,
    "request.model": REQUIRED,
    "request.endpoint": ABSENT,
    "request.temperature": ABSENT,
    "request.max_tokens": ABSENT,
    "request.n": 1,
    "request.logprobs": False,
    "request.stream": False,
    "request.tool_count": 0,
    "request.turn": 1,
    "response.status": REQUIRED,
    "response.input_tokens": REQUIRED,
    "response.output_tokens": REQUIRED,
    "response.latency_ms": ABSENT,
    "response.stop_reason": ABSENT,
    "prompt.simhash": ABSENT,
    "prompt.chars": ABSENT,
    "prompt.topic": ABSENT,
    "prompt.cot_request": False,
    "prompt.jailbreak_score": ABSENT,
    "prompt.sysprompt_probe": False,
    "client.ip": ABSENT,
    "client.asn": ABSENT,
    "client.country": ABSENT,
    "client.user_agent": ABSENT,
    "client.tls_fingerprint": ABSENT,
    "account.created_at": ABSENT,
    "account.payment_fingerprint": ABSENT,
}
GROUPS = ("request", "response", "prompt", "client", "account")
REQUIRED_GROUPS = ("request", "response")
REQUIRED_PATHS = [*REQUIRED_GROUPS, *(p for p, d in FIELDS.items() if d is REQUIRED)]

# (path, value, accepted?): the type and range of every field, at and past its bounds.
TS_OK = ["2026-11-26T18:00:00Z", "2026-11-26T18:00:00.123456+05:30", "2026-11-26T18:00:00-08:00"]
TS_BAD = ["2026-11-26T18:00:00", "2026-11-26", "2026-11-26T18:00Z", "2026-11-26T18:00:00+0530",
          "1764180000", 1764180000, "2026-13-01T00:00:00Z", "", None]
ID_OK = ["x", "x" * 128, "é" * 128]
ID_BAD = ["", "x" * 129, 5, None, ["x"]]
BAD_STR = [5, 1.5, True, {"a": 1}]
CASES: list[tuple[str, object, bool]] = [
    *[("schema_version", v, ok) for v, ok in [(1, True), (0, False), (2, False),
                                              (True, False), (1.0, False), ("1", False)]],
    *[(p, v, True) for p in ("event_id", "tenant_id", "account_id") for v in ID_OK],
    *[(p, v, False) for p in ("event_id", "tenant_id", "account_id") for v in ID_BAD],
    *[(p, v, True) for p in ("ts", "account.created_at") for v in TS_OK],
    *[(p, v, False) for p in ("ts", "account.created_at") for v in TS_BAD if v is not None],
    ("ts", None, False),
    ("account.created_at", None, True),
    ("request.model", "frontier-large", True),
    ("request.model", "", True),  # contract: "string", no length bounds
    *[("request.model", v, False) for v in [*BAD_STR, None]],
    *[(p, v, True) for p in ("request.endpoint", "response.stop_reason", "prompt.topic",
                             "client.ip", "client.user_agent", "client.tls_fingerprint",
                             "account.payment_fingerprint") for v in ["any text", None]],
    *[(p, v, False) for p in ("request.endpoint", "response.stop_reason", "prompt.topic",
                              "client.ip", "client.user_agent", "client.tls_fingerprint",
                              "account.payment_fingerprint") for v in BAD_STR],
    *[("request.temperature", v, True) for v in [0, 0.0, 1, 2.5, None]],
    *[("request.temperature", v, False) for v in [-0.1, -1, "1.0", True]],
    *[(p, v, True) for p in ("request.max_tokens", "response.latency_ms", "prompt.chars")
      for v in [0, 4096, 2**40, None]],
    *[(p, v, False) for p in ("request.max_tokens", "response.latency_ms", "prompt.chars")
      for v in [-1, 1.5, 4096.0, "4096", True]],
    *[(p, v, True) for p in ("request.n", "request.turn") for v in [1, 2, 1000]],
    *[(p, v, False) for p in ("request.n", "request.turn") for v in [0, -1, 1.0, "1", True, None]],
    *[("request.tool_count", v, True) for v in [0, 1, 128]],
    *[("request.tool_count", v, False) for v in [-1, 0.0, "0", False, None]],
    *[(p, v, True) for p in ("request.logprobs", "request.stream", "prompt.cot_request",
                             "prompt.sysprompt_probe") for v in [True, False]],
    *[(p, v, False) for p in ("request.logprobs", "request.stream", "prompt.cot_request",
                              "prompt.sysprompt_probe") for v in [0, 1, "true", "false", None]],
    *[("response.status", v, True) for v in [100, 200, 429, 599]],
    *[("response.status", v, False) for v in [99, 600, 0, -200, 200.0, "200", True, None]],
    *[(p, v, True) for p in ("response.input_tokens", "response.output_tokens")
      for v in [0, 1, 2**40]],
    *[(p, v, False) for p in ("response.input_tokens", "response.output_tokens")
      for v in [-1, 1.5, 10.0, "812", True, None]],
    *[("prompt.simhash", v, True) for v in ["a3f09c1d22e4b7f0", "A3F09C1D22E4B7F0",
                                            "0000000000000000", None]],
    *[("prompt.simhash", v, False) for v in ["a3f09c1d22e4b7f", "a3f09c1d22e4b7f00",
                                             "g3f09c1d22e4b7f0", "a3f09c1d22e4b7f0\n",
                                             "0xa3f09c1d22e4b7", 0xA3F09C1D22E4B7F0]],
    *[("prompt.jailbreak_score", v, True) for v in [0, 0.0, 0.5, 1, 1.0, None]],
    *[("prompt.jailbreak_score", v, False) for v in [-0.01, 1.01, 2, "0.5", True]],
    *[("client.asn", v, True) for v in [64500, 0, 4_294_967_295, None]],
    *[("client.asn", v, False) for v in [64500.0, "64500", True]],
    *[("client.country", v, True) for v in ["SG", "US", None]],
    *[("client.country", v, False) for v in ["sg", "Sg", "SGP", "S", "", "S1", "SG\n", 65]],
]


def _group_model(annotation: object) -> type[BaseModel]:
    """The model inside `Group` or `Group | None`."""
    return next(t for t in (annotation, *get_args(annotation))
                if isinstance(t, type) and issubclass(t, BaseModel))


def _paths(model: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    """Dotted path -> required, for every field of the model and of its groups."""
    out: dict[str, bool] = {}
    for name, field in model.model_fields.items():
        out[f"{prefix}{name}"] = field.is_required()
        if name in GROUPS:
            out.update(_paths(_group_model(field.annotation), f"{prefix}{name}."))
    return out


def test_the_model_has_every_contract_field() -> None:
    missing = set(FIELDS) - set(_paths(ApiCallEvent))
    assert not missing


def test_required_fields_are_exactly_the_contracts() -> None:
    required = {path for path, req in _paths(ApiCallEvent).items() if req}
    assert required == set(REQUIRED_PATHS)


def test_defaults_are_the_contracts(full_event: Factory) -> None:
    doc = full_event()
    for group in GROUPS:
        doc[group] = {k: v for k, v in doc[group].items() if FIELDS[f"{group}.{k}"] is REQUIRED}
    events, rejections = decode_api_calls(encode(doc))
    assert rejections == []
    (event,) = events
    for path, default in FIELDS.items():
        if default is REQUIRED:
            continue
        group, name = path.split(".")
        assert getattr(getattr(event, group), name) == default, path
        assert type(getattr(getattr(event, group), name)) is type(default), path


@pytest.mark.parametrize("group", ["prompt", "client", "account"])
def test_a_missing_optional_group_decodes_to_none(minimal_event: Factory, group: str) -> None:
    (event,), _ = decode_api_calls(encode(minimal_event()))
    assert getattr(event, group) is None


@pytest.mark.parametrize(("path", "value", "accepted"), CASES, ids=lambda x: repr(x)[:40])
def test_field_type_and_range(full_event: Factory, path: str, value: object,
                              accepted: bool) -> None:
    events, rejections = decode_api_calls(encode(set_path(full_event(), path, value)))
    if accepted:
        assert rejections == [], rejections[0].reason
        assert len(events) == 1
    else:
        assert events == []
        (rejection,) = rejections
        assert rejection.kind == "invalid"
        assert rejection.reason.startswith(f"{path}: "), rejection.reason
