"""Factory fixtures for `ApiCall` records (the builders are in `tests.models.calls`)."""

from __future__ import annotations

import pytest

from tests.models.calls import CallFactory, build_call, build_coding_call, build_harvest_call


@pytest.fixture
def make_call() -> CallFactory:
    return build_call


@pytest.fixture
def harvest_call() -> CallFactory:
    return build_harvest_call


@pytest.fixture
def coding_call() -> CallFactory:
    return build_coding_call
