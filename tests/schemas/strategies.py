"""Hypothesis strategies for wire documents: valid API-call events and ways to break them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

ids = st.text(min_size=1, max_size=128)
strings = st.text(max_size=40)
non_negative = st.integers(min_value=0, max_value=2**64)
counts_from_one = st.integers(min_value=1, max_value=10_000)


@st.composite
def rfc3339_instants(draw: st.DrawFn) -> tuple[str, datetime]:
    """An RFC 3339 timestamp (`Z` or an offset, 0-9 fraction digits, T, t or space) and the
    aware datetime it names, computed without parsing the text."""
    moment = draw(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)))
    minutes = draw(st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59))
    sep = draw(st.sampled_from("Tt "))
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    digits = f"{moment.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:draw(st.integers(0, 9))]
    if digits:
        text += "." + digits
    moment = moment.replace(microsecond=int(digits[:6].ljust(6, "0")) if digits else 0)
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    if minutes == 0 and draw(st.booleans()):
        return text + draw(st.sampled_from("Zz")), aware
    sign = "-" if minutes < 0 else "+"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}", aware


def rfc3339() -> st.SearchStrategy[str]:
    """An RFC 3339 timestamp with `Z` or an offset."""
    return rfc3339_instants().map(lambda pair: pair[0])


def _group(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {k: st.just(v) if not isinstance(v, st.SearchStrategy) else v
         for k, v in required.items()},
        optional=optional,
    )


unknown = st.dictionaries(st.text(min_size=1, max_size=8).map(lambda k: f"x_{k}"),
                          st.none() | st.integers() | strings | st.lists(st.booleans()),
                          max_size=2)

request = _group({"model": strings}, {
    "endpoint": st.none() | strings,
    "temperature": st.none() | st.floats(min_value=0, max_value=1e6) | st.integers(0, 5),
    "max_tokens": st.none() | non_negative,
    "n": counts_from_one,
    "logprobs": st.booleans(),
    "stream": st.booleans(),
    "tool_count": non_negative,
    "turn": counts_from_one,
})
response = _group(
    {"status": st.integers(100, 599), "input_tokens": non_negative, "output_tokens": non_negative},
    {"latency_ms": st.none() | non_negative, "stop_reason": st.none() | strings},
)
prompt = _group({}, {
    "simhash": st.none() | st.from_regex(r"\A[0-9a-fA-F]{16}\Z"),
    "chars": st.none() | non_negative,
    "topic": st.none() | strings,
    "cot_request": st.booleans(),
    "jailbreak_score": st.none() | st.floats(min_value=0, max_value=1) | st.sampled_from([0, 1]),
    "sysprompt_probe": st.booleans(),
})
client = _group({}, {
    "ip": st.none() | strings,
    "asn": st.none() | st.integers(-(2**40), 2**40),
    "country": st.none() | st.from_regex(r"\A[A-Z]{2}\Z"),
    "user_agent": st.none() | strings,
    "tls_fingerprint": st.none() | strings,
})
account = _group({}, {
    "created_at": st.none() | rfc3339(),
    "payment_fingerprint": st.none() | strings,
})


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A contract-valid event as a JSON-ready dict, sometimes with unknown fields added."""
    doc = draw(_group(
        {"schema_version": 1, "event_id": ids, "ts": rfc3339(), "tenant_id": ids,
         "account_id": ids, "request": request, "response": response},
        {"prompt": st.none() | prompt, "client": st.none() | client,
         "account": st.none() | account},
    ))
    if draw(st.booleans()):
        doc.update(draw(unknown))
    return doc


REQUIRED_PATHS = ["schema_version", "event_id", "ts", "tenant_id", "account_id", "request",
                  "response", "request.model", "response.status", "response.input_tokens",
                  "response.output_tokens"]
WRONG_VALUES = {  # path -> a value of the wrong type or out of range
    "schema_version": 2, "event_id": "", "ts": "2026-11-26T18:00:00", "tenant_id": 5,
    "account_id": "x" * 129, "request": [], "response": "ok", "request.model": None,
    "response.status": 600, "response.input_tokens": -1, "response.output_tokens": 1.5,
}


@st.composite
def invalid_elements(draw: st.DrawFn) -> object:
    """A batch element that is not a valid event: broken event, or JSON that is no object."""
    how = draw(st.sampled_from(["drop", "wrong", "not_object"]))
    if how == "not_object":
        return draw(st.none() | st.booleans() | st.integers() | strings
                    | st.lists(st.integers(), max_size=3))
    doc = draw(valid_events())
    path = draw(st.sampled_from(REQUIRED_PATHS))
    *groups, leaf = path.split(".")
    target = doc
    for group in groups:
        target = target[group]
    if how == "drop":
        del target[leaf]
    else:
        target[leaf] = WRONG_VALUES[path]
    return doc
