"""Alert, analyst verdict, account label and dead-letter envelope: contract examples, round trips,
enumerations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from schemas import AccountLabel, Alert, AnalystVerdict, DeadLetter
from tests.schemas.documents import Factory, encode, set_path

MODELS: list[tuple[type[BaseModel], str]] = [
    (Alert, "alert_doc"), (AnalystVerdict, "verdict_doc"), (AccountLabel, "label_doc"),
    (DeadLetter, "dead_letter_doc"),
]


def test_the_contract_alert_validates(alert_doc: Factory) -> None:
    alert = Alert.model_validate_json(encode(alert_doc()), strict=True)
    assert alert.kind == "account" and alert.severity == "high" and alert.score == 0.93
    assert alert.accounts[0].account_id == "key_456789"
    assert alert.detected_at == datetime(2026, 11, 26, 18, 4, 10, 512_000, tzinfo=UTC)
    assert alert.reasons[0].signal == "cot_request_rate" and alert.reasons[0].baseline == 0.03


def test_the_contract_verdict_validates(verdict_doc: Factory) -> None:
    verdict = AnalystVerdict.model_validate_json(encode(verdict_doc()), strict=True)
    assert verdict.verdict == "confirmed" and verdict.note == "proxy reseller"
    assert verdict.ts == datetime(2026, 11, 26, 19, tzinfo=UTC)


@pytest.mark.parametrize(("model", "factory"), MODELS)
def test_round_trip_through_json(
    model: type[BaseModel], factory: str, request: pytest.FixtureRequest
) -> None:
    original = model.model_validate_json(encode(request.getfixturevalue(factory)()), strict=True)
    again = model.model_validate_json(original.model_dump_json(), strict=True)
    assert again == original
    assert again.model_dump_json() == original.model_dump_json()


@pytest.mark.parametrize(("model", "factory"), MODELS)
def test_unknown_fields_are_ignored(
    model: type[BaseModel], factory: str, request: pytest.FixtureRequest
) -> None:
    doc = request.getfixturevalue(factory)()
    plain = model.model_validate_json(encode(doc), strict=True)
    assert model.model_validate_json(encode({**doc, "x_added_later": [1]}), strict=True) == plain


@pytest.mark.parametrize(("model", "factory", "path", "value"), [
    (Alert, "alert_doc", "kind", "tenant"),
    (Alert, "alert_doc", "status", "open"),
    (Alert, "alert_doc", "status", "Firing"),
    (Alert, "alert_doc", "severity", "info"),
    (Alert, "alert_doc", "severity", "HIGH"),
    (Alert, "alert_doc", "severity", 3),
    (AnalystVerdict, "verdict_doc", "verdict", "attack"),
    (AnalystVerdict, "verdict_doc", "verdict", "false_positive"),
    (AccountLabel, "label_doc", "label", "malicious"),
    (AccountLabel, "label_doc", "label", "confirmed"),
    (DeadLetter, "dead_letter_doc", "kind", "bad"),
])
def test_wrong_enum_values_are_rejected(
    model: type[BaseModel], factory: str, path: str, value: object,
    request: pytest.FixtureRequest,
) -> None:
    doc = set_path(request.getfixturevalue(factory)(), path, value)
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(encode(doc), strict=True)
    assert info.value.errors()[0]["loc"] == (path,)


@pytest.mark.parametrize(("model", "factory", "path"), [
    (Alert, "alert_doc", "event_time"), (Alert, "alert_doc", "detected_at"),
    (Alert, "alert_doc", "first_event_time"), (AnalystVerdict, "verdict_doc", "ts"),
    (AccountLabel, "label_doc", "attack_start"), (DeadLetter, "dead_letter_doc", "rejected_at"),
])
@pytest.mark.parametrize("value", ["2026-11-26T18:00:00", "2026-11-26", 1764180000])
def test_timestamps_need_an_offset_everywhere(
    model: type[BaseModel], factory: str, path: str, value: object,
    request: pytest.FixtureRequest,
) -> None:
    doc = set_path(request.getfixturevalue(factory)(), path, value)
    with pytest.raises(ValidationError):
        model.model_validate_json(encode(doc), strict=True)


@pytest.mark.parametrize("score", [-0.01, 1.01])
def test_alert_score_is_between_0_and_1(alert_doc: Factory, score: float) -> None:
    with pytest.raises(ValidationError):
        Alert.model_validate_json(encode(set_path(alert_doc(), "score", score)))


@pytest.mark.parametrize("score", [0, 1, 0.0, 1.0])
def test_alert_score_bounds_are_inclusive(alert_doc: Factory, score: float) -> None:
    assert Alert.model_validate_json(encode(set_path(alert_doc(), "score", score))).score == score


@pytest.mark.parametrize(("changes", "message"), [
    ({"account_id": None}, "needs tenant_id and account_id"),
    ({"tenant_id": None}, "needs tenant_id and account_id"),
    ({"accounts": []}, "exactly its own account"),
    ({"accounts": [{"tenant_id": "org_12345", "account_id": "key_1"}]}, "exactly its own account"),
    ({"kind": "campaign"}, "needs campaign_id"),
])
def test_alert_ids_match_its_kind(alert_doc: Factory, changes: dict[str, object],
                                  message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Alert.model_validate_json(encode({**alert_doc(), **changes}))


def test_a_campaign_alert_across_tenants_has_no_tenant(alert_doc: Factory) -> None:
    doc = {**alert_doc(), "kind": "campaign", "campaign_id": "camp_7", "tenant_id": None,
           "account_id": None, "dedup_key": "campaign:camp_7",
           "accounts": [{"tenant_id": "org_1", "account_id": "k1"},
                        {"tenant_id": "org_2", "account_id": "k2"}]}
    alert = Alert.model_validate_json(encode(doc), strict=True)
    assert alert.tenant_id is None and len(alert.accounts) == 2


def test_an_outbound_alert_defaults_to_schema_version_1(alert_doc: Factory) -> None:
    doc = alert_doc()
    del doc["schema_version"]
    assert Alert.model_validate_json(encode(doc)).schema_version == 1


@pytest.mark.parametrize("value", [2, True, 1.0, "1"])
def test_schema_version_is_the_integer_1(verdict_doc: Factory, value: object) -> None:
    with pytest.raises(ValidationError):
        AnalystVerdict.model_validate_json(encode(set_path(verdict_doc(), "schema_version",
                                                           value)))


def test_a_label_may_have_no_campaign_and_no_start(label_doc: Factory) -> None:
    doc = {**label_doc(), "label": "benign", "campaign_id": None, "attack_start": None}
    label = AccountLabel.model_validate_json(encode(doc), strict=True)
    assert label.campaign_id is None and label.attack_start is None
