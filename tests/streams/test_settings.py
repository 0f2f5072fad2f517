from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings, documented_env_vars, redact_url

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_environment_variable_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [name for name, _, _ in documented_env_vars() if f"`{name}`" not in text]
    assert not missing


def test_settings_are_frozen_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                          ) -> None:
    monkeypatch.setenv("DISTILLWATCH_TOPIC_API_CALLS", "calls-eu")
    monkeypatch.setenv("DISTILLWATCH_TOPIC_PARTITIONS", "12")
    settings = Settings()
    assert settings.topic_api_calls == "calls-eu" and settings.topic_partitions == 12
    with pytest.raises(ValidationError):
        settings.topic_api_calls = "other"  # type: ignore[misc]


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLWATCH_TOPIC_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="DISTILLWATCH_TOPIC_PARTITIONS"):
        Settings()


def test_secrets_never_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2-kafka")
    monkeypatch.setenv("CLICKHOUSE_URL", "https://dw:hunter2-ch@ch.example:8443/")
    settings = Settings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert settings.resolved_clickhouse_url.endswith("ch.example:8443/")
    assert "hunter2" not in redact_url(settings.resolved_clickhouse_url)
    assert not settings.clickhouse_embedded


def test_embedded_clickhouse_lives_under_the_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DISTILLWATCH_STATE_DIR", str(tmp_path))
    settings = Settings()
    assert settings.clickhouse_embedded
    assert settings.resolved_clickhouse_url == f"chdb://{tmp_path}/clickhouse"
