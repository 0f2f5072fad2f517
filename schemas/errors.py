"""Errors raised while reading distillwatch wire formats."""

from __future__ import annotations


class SchemaError(Exception):
    """Root of every wire-format error."""


class DecodeError(SchemaError):
    """A message could not be read as the format its topic carries."""
