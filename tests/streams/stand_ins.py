"""Stand-ins for the worker's producer and for Faust's streams, in tests of the stages in
one process: records are kept in memory, in the order they were sent or given."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from types import SimpleNamespace
from typing import Any


class Recorder:
    """The worker's producer: every record sent, in order, as (topic, partition, value);
    each settles at once."""

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


class Stream:
    """Hands an agent the (partition, value) records given, `per_batch` at a time, each
    with its offset in its partition."""

    def __init__(self, topic: str, records: Iterable[tuple[int, bytes]], per_batch: int):
        offsets: dict[int, int] = {}
        items = []
        for partition, value in records:
            offset = offsets[partition] = offsets.get(partition, -1) + 1
            message = SimpleNamespace(topic=topic, partition=partition, offset=offset)
            items.append(SimpleNamespace(value=value, message=message))
        self.batches = [items[i:i + per_batch] for i in range(0, len(items), per_batch)]

    async def take_events(self, *_: Any, **__: Any) -> AsyncIterator[list[Any]]:
        for batch in self.batches:
            yield batch
