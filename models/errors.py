"""Errors of the detection core. Bad events are data, not errors: these are for bad set-ups."""

from __future__ import annotations


class DetectionError(Exception):
    """Root of every error raised by `models`."""


class ConfigurationError(DetectionError, ValueError):
    """A detector or the engine was built with parameters that cannot work."""
