"""Factories for wire documents: each call gives a fresh, valid dict for a test to mutate."""

from __future__ import annotations

import copy

import pytest

from tests.schemas.documents import (
    CONTRACT_ALERT,
    CONTRACT_EVENT,
    CONTRACT_VERDICT,
    DEAD_LETTER,
    LABEL,
    MINIMAL_EVENT,
    Doc,
    Factory,
)


def _factory(template: Doc) -> Factory:
    return lambda: copy.deepcopy(template)


@pytest.fixture
def full_event() -> Factory:
    """The contract's example event, every group present."""
    return _factory(CONTRACT_EVENT)


@pytest.fixture
def minimal_event() -> Factory:
    """An event with only the required fields."""
    return _factory(MINIMAL_EVENT)


@pytest.fixture
def alert_doc() -> Factory:
    return _factory(CONTRACT_ALERT)


@pytest.fixture
def verdict_doc() -> Factory:
    return _factory(CONTRACT_VERDICT)


@pytest.fixture
def label_doc() -> Factory:
    return _factory(LABEL)


@pytest.fixture
def dead_letter_doc() -> Factory:
    return _factory(DEAD_LETTER)
