"""Write (or check) the JSON Schema files generated from the wire models.

    python -m schemas.generate          # rewrite schemas/json/*.schema.json
    python -m schemas.generate --check  # exit 1 if the committed files differ from the models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.alert import Alert
from schemas.deadletter import DeadLetter
from schemas.event import ApiCallEvent
from schemas.feedback import AnalystVerdict
from schemas.labels import AccountLabel

SCHEMA_DIR = Path(__file__).parent / "json"

MODELS: dict[str, type[BaseModel]] = {
    "api-call-event": ApiCallEvent,
    "alert": Alert,
    "analyst-verdict": AnalystVerdict,
    "dead-letter": DeadLetter,
    "account-label": AccountLabel,
}


def api_call_batch_schema() -> dict[str, object]:
    """A record on `api-calls`: one event, or an array of up to 10,000 of them."""
    event = ApiCallEvent.model_json_schema(mode="validation")
    defs = event.pop("$defs", {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ApiCallsRecord",
        "description": "One API-call event, or a batch of up to 10,000 events from one flush.",
        "$defs": {**defs, "ApiCallEvent": event},
        "oneOf": [
            {"$ref": "#/$defs/ApiCallEvent"},
            {"type": "array", "maxItems": 10_000, "items": {"$ref": "#/$defs/ApiCallEvent"}},
        ],
    }


def rendered() -> dict[str, str]:
    """File name -> file text for every schema, exactly as committed."""
    out = {}
    for name, model in MODELS.items():
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  **model.model_json_schema(mode="validation")}
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    out["api-calls-record.schema.json"] = (
        json.dumps(api_call_batch_schema(), indent=2, sort_keys=True) + "\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if files are out of date")
    args = parser.parse_args(argv)
    files = rendered()
    if args.check:
        stale = [
            name for name, text in files.items()
            if not (SCHEMA_DIR / name).exists() or (SCHEMA_DIR / name).read_text() != text
        ]
        for name in stale:
            print(f"out of date: schemas/json/{name} (run python -m schemas.generate)")
        return 1 if stale else 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, text in files.items():
        (SCHEMA_DIR / name).write_text(text)
        print(f"wrote schemas/json/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
