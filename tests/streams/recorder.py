"""A stand-in for the worker's producer in tests of the stages in one process: it keeps
every record sent, in order, and settles each at once."""

from __future__ import annotations

import asyncio
from typing import Any


class Recorder:
    """The worker's producer: every record sent, in order, as (topic, partition, value)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None, bytes]] = []

    async def send(self, topic: str, value: bytes, *, partition: int | None = None,
                   **_: Any) -> asyncio.Future[None]:
        self.sent.append((topic, partition, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def records(self, topic: str) -> list[tuple[int, bytes]]:
        """The (partition, value) of each record sent to `topic` (-1: no partition named)."""
        return [(p if p is not None else -1, v) for t, p, v in self.sent if t == topic]
