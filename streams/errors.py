"""Errors of the streaming layer: configuration, servers, commands."""

from __future__ import annotations


class StreamsError(Exception):
    """Root of every error raised by `streams`."""


class ConfigError(StreamsError):
    """A setting is missing or malformed."""


class ServerUnavailable(StreamsError):
    """Kafka or ClickHouse could not be reached."""


class QueryError(StreamsError):
    """An SQL query was refused or failed."""
