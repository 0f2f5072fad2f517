"""The one settings object of a distillwatch process, read from the environment at start-up.

Every environment variable distillwatch reads is declared here, and only here; the README
lists them all (a test checks that it does). Commands build one `Settings` in `main()`
and pass it down; nothing deeper calls `Settings()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _env(name: str, description: str, **kwargs: Any) -> Any:
    """A field read from the environment variable `name`."""
    return Field(validation_alias=name, description=description, **kwargs)


class Settings(BaseSettings):
    """Configuration of a worker or a command. Frozen: built once, then only read."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # Kafka
    kafka_bootstrap_servers: str = _env(
        "KAFKA_BOOTSTRAP_SERVERS", "Kafka brokers, host:port[,host:port]", default="127.0.0.1:9092"
    )
    kafka_security_protocol: SecurityProtocol = _env(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", default="PLAINTEXT"
    )
    kafka_sasl_mechanism: SaslMechanism = _env(
        "KAFKA_SASL_MECHANISM", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", default="PLAIN"
    )
    kafka_sasl_username: str | None = _env("KAFKA_SASL_USERNAME", "SASL user", default=None)
    kafka_sasl_password: SecretStr | None = _env(
        "KAFKA_SASL_PASSWORD", "SASL password (never logged)", default=None
    )
    kafka_ssl_cafile: Path | None = _env("KAFKA_SSL_CAFILE", "CA bundle for TLS", default=None)
    kafka_ssl_certfile: Path | None = _env(
        "KAFKA_SSL_CERTFILE", "client certificate for mutual TLS", default=None
    )
    kafka_ssl_keyfile: Path | None = _env(
        "KAFKA_SSL_KEYFILE", "client key for mutual TLS", default=None
    )

    # Topics
    app_id: str = _env(
        "DISTILLWATCH_APP_ID",
        "Faust application id: consumer group and prefix of internal topics",
        default="distillwatch",
    )
    topic_api_calls: str = _env(
        "DISTILLWATCH_TOPIC_API_CALLS", "input topic of API-call events", default="api-calls"
    )
    topic_alerts: str = _env(
        "DISTILLWATCH_TOPIC_ALERTS", "output topic of alerts", default="distillation-alerts"
    )
    topic_dead_letters: str = _env(
        "DISTILLWATCH_TOPIC_DEAD_LETTERS", "dead-letter topic for rejected input",
        default="api-calls-dlq",
    )
    topic_feedback: str = _env(
        "DISTILLWATCH_TOPIC_FEEDBACK", "input topic of analyst verdicts", default="alert-feedback"
    )
    topic_partitions: int = _env(
        "DISTILLWATCH_TOPIC_PARTITIONS", "partitions of topics distillwatch creates",
        default=4, ge=1,
    )
    topic_replication: int = _env(
        "DISTILLWATCH_TOPIC_REPLICATION", "replication factor of topics distillwatch creates",
        default=1, ge=1,
    )

    # ClickHouse
    clickhouse_url: SecretStr | None = _env(
        "CLICKHOUSE_URL",
        "chdb:///abs/path for the embedded engine, or http(s)://user:pass@host:port for a server;"
        " default: embedded, under the state directory (a secret: it may hold a password)",
        default=None,
    )
    clickhouse_database: str = _env(
        "CLICKHOUSE_DATABASE", "database holding distillwatch's tables", default="distillwatch"
    )
    clickhouse_flush_interval_s: float = _env(
        "DISTILLWATCH_CLICKHOUSE_FLUSH_INTERVAL_S",
        "seconds (wall clock) between batched inserts", default=2.0, gt=0,
    )

    # Process
    state_dir: Path = _env(
        "DISTILLWATCH_STATE_DIR", "where a worker keeps its local state and the embedded engine",
        default=Path(".state"),
    )
    web_host: str = _env(
        "DISTILLWATCH_WEB_HOST", "address of the worker's HTTP endpoint", default="127.0.0.1"
    )
    web_port: int = _env(
        "DISTILLWATCH_WEB_PORT", "port of the worker's HTTP endpoint (SQL routing, health)",
        default=6066,
    )
    state_store: bool = _env(
        "DISTILLWATCH_STATE_STORE",
        "keep account state in RocksDB and a changelog topic, so a restarted worker resumes it",
        default=True,
    )
    state_checkpoint_interval_s: float = _env(
        "DISTILLWATCH_STATE_CHECKPOINT_INTERVAL_S",
        "seconds (wall clock) between snapshots of the accounts that changed", default=5.0, gt=0,
    )
    state_pack_s: float = _env(
        "DISTILLWATCH_STATE_PACK_S",
        "event-time seconds without a call after which an account's state is kept packed in"
        " memory (its snapshot, 250-700 bytes; unpacked at its next call)", default=300.0,
        gt=0,
    )
    state_live_max: int = _env(
        "DISTILLWATCH_STATE_LIVE_MAX",
        "accounts held as objects (about 1.2 KB each) above which a sweep also packs the"
        " longest idle of those without a call for a minute of event time, down to this"
        " number: bounds the heap when many accounts arrive at once, as in a replay",
        default=100_000, gt=0,
    )
    state_idle_s: float = _env(
        "DISTILLWATCH_STATE_IDLE_S",
        "event-time seconds without a call after which an account's state leaves memory for"
        " the store (read back at its next call)", default=3600.0, gt=0,
    )
    log_level: Literal["debug", "info", "warn", "error"] = _env(
        "DISTILLWATCH_LOG_LEVEL", "worker log level", default="info"
    )

    # Detection
    fire_threshold: float = _env(
        "DISTILLWATCH_FIRE_THRESHOLD", "score from which an account alert fires", default=0.5,
        ge=0, le=1,
    )
    quiet_s: float = _env(
        "DISTILLWATCH_QUIET_S",
        "event-time seconds without suspicious activity before an episode resolves",
        default=1800.0, gt=0,
    )

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_clickhouse_url(self) -> str:
        """The ClickHouse URL in use: the setting, or the embedded engine's path."""
        if self.clickhouse_url is not None:
            return self.clickhouse_url.get_secret_value()
        return f"chdb://{self.state_dir / 'clickhouse'}"

    @property
    def clickhouse_embedded(self) -> bool:
        return self.resolved_clickhouse_url.startswith("chdb:")

    @property
    def internal_topic_by_account(self) -> str:
        """Valid events re-keyed by account, so each account's state lives on one worker."""
        return f"{self.app_id}-api-calls-by-account"

    @property
    def internal_topic_link_observations(self) -> str:
        """Link evidence keyed by link key, so every account sharing a key meets in one place."""
        return f"{self.app_id}-link-observations"

    @property
    def internal_topic_account_state(self) -> str:
        """Compacted changelog of account snapshots, partitioned like the by-account topic."""
        return f"{self.app_id}-account-state-changelog"

    @property
    def internal_topic_campaign_edges(self) -> str:
        """Weighted account-to-key links and event-time ticks, one partition: one clusterer."""
        return f"{self.app_id}-campaign-edges"


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def documented_env_vars() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every environment variable read."""
    rows = []
    for field in Settings.model_fields.values():
        default = field.default
        shown = "" if default is None else str(default)
        rows.append((str(field.validation_alias), shown, field.description or ""))
    return rows
