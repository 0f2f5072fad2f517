"""The committed JSON Schema files are what the models generate, and they accept the contract."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from schemas.generate import SCHEMA_DIR, main, rendered
from tests.schemas.documents import (
    CONTRACT_ALERT,
    CONTRACT_EVENT,
    CONTRACT_VERDICT,
    DEAD_LETTER,
    LABEL,
    MINIMAL_EVENT,
)
from tests.schemas.test_contract import FIELDS, REQUIRED

EXAMPLES: dict[str, list[object]] = {
    "api-call-event.schema.json": [CONTRACT_EVENT, MINIMAL_EVENT],
    "api-calls-record.schema.json": [CONTRACT_EVENT, [CONTRACT_EVENT, MINIMAL_EVENT], []],
    "alert.schema.json": [CONTRACT_ALERT],
    "analyst-verdict.schema.json": [CONTRACT_VERDICT],
    "account-label.schema.json": [LABEL],
    "dead-letter.schema.json": [DEAD_LETTER],
}
NOT_ACCEPTED: dict[str, list[object]] = {
    "api-call-event.schema.json": [
        {k: v for k, v in CONTRACT_EVENT.items() if k != "ts"},
        {**CONTRACT_EVENT, "schema_version": 2},
        {**CONTRACT_EVENT, "response": {"status": 200, "input_tokens": 1}},
        {**CONTRACT_EVENT, "prompt": {"jailbreak_score": 1.5}},
        {**CONTRACT_EVENT, "client": {"country": "sg"}},
        [CONTRACT_EVENT],
    ],
    "api-calls-record.schema.json": [5, [5], [{**CONTRACT_EVENT, "event_id": ""}]],
    "alert.schema.json": [{**CONTRACT_ALERT, "severity": "info"}],
    "analyst-verdict.schema.json": [{**CONTRACT_VERDICT, "verdict": "maybe"}],
}


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text())
    return loaded


def test_the_schema_set_is_complete() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(rendered())
    assert sorted(EXAMPLES) == sorted(rendered())


@pytest.mark.parametrize("name", sorted(rendered()))
def test_committed_schema_matches_the_models(name: str) -> None:
    assert (SCHEMA_DIR / name).read_text() == rendered()[name], (
        f"schemas/json/{name} is stale: run `python -m schemas.generate`")


def test_generate_check_passes() -> None:
    assert main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_schema_is_valid_and_accepts_the_examples(name: str) -> None:
    schema = _schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for example in EXAMPLES[name]:
        validator.validate(example)


@pytest.mark.parametrize(("name", "doc"),
                         [(n, d) for n, docs in NOT_ACCEPTED.items() for d in docs])
def test_each_schema_refuses_what_the_model_refuses(name: str, doc: object) -> None:
    assert not jsonschema.Draft202012Validator(_schema(name)).is_valid(doc)


def test_the_event_schema_states_the_contracts_required_fields_and_defaults() -> None:
    schema = _schema("api-call-event.schema.json")
    groups = {name.removesuffix("Info").lower(): body for name, body in schema["$defs"].items()}
    for path, default in FIELDS.items():
        if "." not in path:
            assert path in schema["properties"]
            assert (path in schema["required"]) == (default is REQUIRED), path
            continue
        group, field = path.split(".")
        body = groups[group]
        assert field in body["properties"], path
        assert (field in body.get("required", [])) == (default is REQUIRED), path
        if default is not REQUIRED:
            assert body["properties"][field]["default"] == default, path
