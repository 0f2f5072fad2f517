"""The edge's calls: `api-calls` records to by-account payloads, in Rust where it can.

The edge validates each input record once, orders its calls in event time and re-keys
them by account. It needs of a call only what orders it (event time, tenant, account),
where it goes (the by-account partition) and the bytes it sends there. `EdgeCalls`
(`native/`, a Rust extension) holds just that for a record's calls, as rows: each call is
read from JSON and written as the msgpack of its `ApiCall` without the GIL and without a
Python object, and the internal record of a partition is those payloads joined
(`edge_records`; `encode_edge_calls` for a list of `EdgeCall`s), byte for byte what
`streams.internal.encode_calls` writes for the same calls. The edge's order holds the rows
too (`EventTimeMerger(edge=True)`); an `EdgeCall` is made only when Python takes a call
out of `EdgeCalls`.

The Rust reader takes only records it reads exactly as the Python edge does
(`streams.fast_decode`, which agrees with pydantic): valid events, no known key twice,
unknown fields (ignored) only with values pydantic surely reads. Any other record, one
with a rejection among others, goes through the Python edge as a whole, so every
dead-letter reason stays pydantic's (`tests/streams/test_edge.py` holds the two equal);
`by_python` counts them, and the worker's health reports it (`records_by_python_edge`).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

import msgspec
from distillwatch_native import EdgeCall, EdgeCalls, EdgeDecoder, encode_calls

from models.records import ApiCall
from schemas.decode import (
    _ARRAY_START,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    Rejection,
    _batch_elements,
    _compact,
)
from streams.fast_decode import decode_calls
from streams.internal import CALLS_TAG, group_by, partition_for

__all__ = ["EdgeCall", "EdgeCalls", "EdgeReader", "edge_records", "encode_edge_calls",
           "group_by_destination"]

_encode = msgspec.msgpack.Encoder().encode
_destination = attrgetter("partition")


class EdgeReader:
    """Reads `api-calls` records into `EdgeCall`s for a by-account topic of `partitions`."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._native = EdgeDecoder(partitions, MAX_MESSAGE_BYTES, MAX_EVENT_BYTES,
                                   MAX_BATCH_EVENTS)
        self.by_python = 0  # records the Rust reader left to the Python edge

    def read(self, value: bytes | None) -> tuple[EdgeCalls, list[Rejection]]:
        """The valid calls of one record, in record order, and a rejection with pydantic's
        reason for the record or for each invalid element of a batch (as `decode_calls`)."""
        if value:
            calls = self._native.decode(value)
            if calls is not None:
                return calls, []
        return self._read_in_python(value)

    def read_many(self, values: list[bytes | None]) -> list[tuple[EdgeCalls, list[Rejection]]]:
        """`read` of each of `values`, in order. The Rust reader parses them all in one
        release of the GIL, so a worker runs this on a thread of its own: the parse then
        overlaps the detection on the event loop's thread."""
        return [
            (calls, []) if calls is not None else self._read_in_python(value)
            for value, calls in zip(values, self._native.decode_many(values), strict=True)
        ]

    def _read_in_python(self, value: bytes | None) -> tuple[EdgeCalls, list[Rejection]]:
        """The Python edge's verdicts on a record the Rust reader declined."""
        self.by_python += 1
        valid, rejections = decode_calls(value)
        calls: list[EdgeCalls | EdgeCall] = []
        refused = list(rejections)
        for number, call in enumerate(valid):
            try:
                calls.append(self.edge_call(call))
            except OverflowError as exc:
                rejections.append(_uncarried(value, number, refused, exc))
        return EdgeCalls.of(calls), rejections

    def edge_call(self, call: ApiCall) -> EdgeCall:
        """The `EdgeCall` of a call the Python edge read; OverflowError if an integer of it
        is past the 64 bits msgpack carries between workers."""
        return EdgeCall(call.ts, call.tenant_id, call.account_id,
                        partition_for(call.account_id, self.partitions), _encode(call))


def _uncarried(value: bytes | None, number: int, refused: list[Rejection],
               exc: OverflowError) -> Rejection:
    """The dead letter of the `number`-th valid event of a record, which the internal
    topics cannot carry: the contract bounds no count from above, msgpack holds at most
    2**64 - 1. In a batch, the valid events are the elements not `refused`, in order."""
    reason = f"an integer of the event is past the 64-bit range workers carry ({exc})"
    if value and _ARRAY_START.match(value):
        elements = _batch_elements(value)
        rejected = {r.batch_index for r in refused}
        index = [i for i in range(len(elements)) if i not in rejected][number]
        return Rejection("processing_error", reason, _compact(bytes(elements[index])), index)
    return Rejection("processing_error", reason, value or b"")


def edge_records(calls: EdgeCalls, max_items: int) -> dict[int, list[bytes]]:
    """The by-account records of `calls`: for each destination partition, its calls in
    order, `max_items` to a record (each as `encode_edge_calls` of them)."""
    return calls.by_destination(CALLS_TAG, max_items)


def encode_edge_calls(calls: Sequence[EdgeCall]) -> bytes:
    """One by-account record of `calls` (as `streams.internal.encode_calls` of their
    `ApiCall`s)."""
    return encode_calls(CALLS_TAG, calls if isinstance(calls, list) else list(calls))


def group_by_destination(calls: Sequence[EdgeCall]) -> dict[int, list[EdgeCall]]:
    """`calls` grouped by their by-account partition, order kept within each."""
    return group_by(calls, _destination)
