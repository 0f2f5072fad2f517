"""Kafka plumbing shared by the worker and the commands: client configuration and topics."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.errors import ConfigError, ServerUnavailable
from streams.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    """A topic distillwatch reads or writes, and how to create it."""

    name: str
    purpose: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline uses, in the order a newcomer would read them."""
    p = settings.topic_partitions
    big = {"max.message.bytes": str(16 * 1024 * 1024)}
    return [
        TopicSpec(settings.topic_api_calls, "in: API-call events and batches", p, big),
        TopicSpec(settings.topic_alerts, "out: alerts, keyed by dedup_key", p, {}),
        TopicSpec(settings.topic_dead_letters, "out: rejected input with its reason", p, big),
        TopicSpec(settings.topic_feedback, "in: analyst verdicts", p, {}),
        TopicSpec(settings.internal_topic_by_account, "internal: valid events by account", p, big),
        TopicSpec(settings.internal_topic_link_observations, "internal: link evidence by key",
                  p, {}),
        TopicSpec(settings.internal_topic_campaign_edges, "internal: links to cluster", 1, {}),
        TopicSpec(settings.internal_topic_account_state,
                  "internal: account state snapshots (changelog)", p,
                  {**big, "cleanup.policy": "compact"}),
        # Faust's partition assignor elects its leader through this one-partition topic.
        TopicSpec(f"{settings.app_id}-__assignor-__leader", "internal: Faust assignor", 1, {}),
    ]


def confluent_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka configuration for the producer, consumer and admin commands."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username or ""
        if settings.kafka_sasl_password is not None:
            conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile:
        conf["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    if settings.kafka_ssl_certfile:
        conf["ssl.certificate.location"] = str(settings.kafka_ssl_certfile)
    if settings.kafka_ssl_keyfile:
        conf["ssl.key.location"] = str(settings.kafka_ssl_keyfile)
    conf.update(extra)
    return conf


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return context


def _sasl_password(settings: Settings) -> str:
    password = settings.kafka_sasl_password
    return password.get_secret_value() if password is not None else ""


def faust_credentials(settings: Settings) -> Any:
    """Faust's broker credentials for the configured security protocol (None for plaintext)."""
    import faust

    context = _ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=_sasl_password(settings),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(confluent_config(settings))


def check_reachable(settings: Settings, timeout_s: float = 10.0) -> int:
    """Number of brokers in the cluster; raises ServerUnavailable if none answers in time."""
    try:
        meta = admin_client(settings).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise ServerUnavailable(
            f"Kafka at {settings.kafka_bootstrap_servers} did not answer within {timeout_s:.0f}s"
            f" ({exc.args[0]}); start it with `infra/kafka.sh start`"
        ) from exc
    return len(meta.brokers)


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the pipeline's topics that do not exist yet; return the names created.

    Workers write internal records to explicit partitions, so an internal topic that
    exists with another partition count than configured is an error, not a warning.
    """
    check_reachable(settings)
    admin = admin_client(settings)
    existing = admin.list_topics(timeout=timeout_s).topics
    for spec in topic_specs(settings):
        meta = existing.get(spec.name)
        if meta is not None and spec.purpose.startswith("internal") and (
            len(meta.partitions) != spec.partitions
        ):
            raise ConfigError(
                f"internal topic {spec.name} has {len(meta.partitions)} partitions, the"
                f" configuration wants {spec.partitions} (DISTILLWATCH_TOPIC_PARTITIONS);"
                " use another DISTILLWATCH_APP_ID or delete the topic"
            )
    missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(s.name, s.partitions, settings.topic_replication, config=s.config)
            for s in missing
        ],
        operation_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: another process won the race
                raise
    return created


def describe_topics(settings: Settings, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Name, purpose, partition count (None if missing) of every pipeline topic."""
    check_reachable(settings)
    topics = admin_client(settings).list_topics(timeout=timeout_s).topics
    rows = []
    for spec in topic_specs(settings):
        meta = topics.get(spec.name)
        rows.append(
            {
                "topic": spec.name,
                "purpose": spec.purpose,
                "partitions": len(meta.partitions) if meta is not None else None,
            }
        )
    return rows
