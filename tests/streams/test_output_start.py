"""Starting the worker's producer ahead of its first send (`OutputProducer.start`) when the
broker cannot be reached: the worker starts all the same, and says so."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from streams.output import OutputProducer
from streams.settings import Settings


def test_an_unreachable_broker_delays_the_start_by_the_timeout_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 9 (discard) here: the metadata request cannot be answered.
    settings = Settings(state_dir=tmp_path, kafka_bootstrap_servers="127.0.0.1:9")

    async def run() -> float:
        output = OutputProducer(settings)
        began = time.monotonic()
        await output.start(["distillwatch.alerts", "distillwatch.calls-by-account"],
                           timeout_s=0.5)
        took = time.monotonic() - began
        output._stopping.set()
        return took

    with caplog.at_level(logging.WARNING, logger="streams.output"):
        took = asyncio.run(run())
    assert took < 5.0  # the first topic's timeout, not a wait for the broker
    assert any("cannot read the topics' metadata" in r.getMessage() for r in caplog.records)
