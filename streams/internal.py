"""Records on the internal topics: batches of calls, verdicts, link evidence, ticks.

Internal records are written only by distillwatch workers, in batches: one record per
destination partition per batch of input, because a Kafka message per event costs more
than everything else a worker does to that event (bench/PROFILE.md). The destination
partition is chosen here, from the account (or the link key), for calls and verdicts
alike, so an account's verdicts meet its events on the partition that holds its state.
The first byte of a record says what follows.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import TypeVar

import msgspec
from distillwatch_native import CallDecoder

from models.linking.evidence import KeyEvidence, LinkEdge
from models.linking.observe import LinkObservation
from models.records import ApiCall
from schemas.feedback import AnalystVerdict

CALLS_TAG = b"B"  # msgpack list[ApiCall], all of one partition of the by-account topic
VERDICT_TAG = b"V"  # JSON AnalystVerdict
# msgpack float, event-time seconds: on a by-account partition, that the edge which wrote it
# has let go of every call up to then (their records to this partition come before it).
PROGRESS_TAG = b"P"
OBSERVATIONS_TAG = b"O"  # msgpack list[LinkObservation], all of one link-key partition
EDGES_TAG = b"L"  # msgpack list[LinkEdge]
# msgpack float, event-time seconds: on a link-observations partition, that a detect
# worker has sent it every observation up to then; on the campaign edges, that a link
# worker has sent every edge of the observations up to then.
TICK_TAG = b"T"

_T = TypeVar("_T")
_encode = msgspec.msgpack.Encoder().encode
_decode_calls = msgspec.msgpack.Decoder(list[ApiCall]).decode
# The detect stage's calls, read in Rust with their strings shared between calls, so that
# the engine and the link stage find them in their dicts by pointer (native/src/calls.rs);
# what it does not read exactly as msgspec does, `_decode_calls` reads.
_call_decoder = CallDecoder(ApiCall)
_decode_observations = msgspec.msgpack.Decoder(list[LinkObservation]).decode
_decode_edges = msgspec.msgpack.Decoder(list[LinkEdge]).decode
_decode_float = msgspec.msgpack.Decoder(float).decode


class InternalRecordError(ValueError):
    """An internal record with an unknown tag: written by another version of distillwatch."""


def partition_for(key: str, partitions: int) -> int:
    """The internal-topic partition of an account id or link key (stable across processes)."""
    return zlib.crc32(key.encode()) % partitions


def group_by(items: Iterable[_T], partition_of: Callable[[_T], int]) -> dict[int, list[_T]]:
    """Items grouped by `partition_of(item)`, order kept within each."""
    groups: dict[int, list[_T]] = {}
    for item in items:
        p = partition_of(item)
        group = groups.get(p)
        if group is None:
            groups[p] = [item]
        else:
            group.append(item)
    return groups


def group_by_partition(
    items: Iterable[ApiCall] | Iterable[LinkObservation], key_of: str, partitions: int
) -> dict[int, list[object]]:
    """Items grouped by the partition of their `key_of` attribute, order kept within each."""
    key = attrgetter(key_of)
    return group_by(items, lambda item: partition_for(key(item), partitions))


def encode_calls(calls: Sequence[object]) -> bytes:
    return CALLS_TAG + _encode(calls)


def encode_verdict(verdict: AnalystVerdict) -> bytes:
    return VERDICT_TAG + verdict.model_dump_json().encode()


def encode_progress(ts: float) -> bytes:
    """The edge's progress in event time, for a by-account partition (see `PROGRESS_TAG`)."""
    return PROGRESS_TAG + _encode(ts)


def decode_by_account(value: bytes) -> list[ApiCall] | AnalystVerdict | float:
    """The calls, the verdict, or the edge's progress (event-time seconds) of a by-account
    record."""
    tag, body = value[:1], memoryview(value)[1:]
    if tag == CALLS_TAG:
        calls = _call_decoder.decode(value, 1)
        return _decode_calls(body) if calls is None else calls
    if tag == PROGRESS_TAG:
        return _decode_float(body)
    if tag == VERDICT_TAG:
        return AnalystVerdict.model_validate_json(bytes(body))
    raise InternalRecordError(f"unknown by-account record tag {tag!r}")


def encode_observations(observations: Sequence[object]) -> bytes:
    return OBSERVATIONS_TAG + _encode(observations)


def decode_observations(value: bytes) -> list[LinkObservation]:
    if value[:1] != OBSERVATIONS_TAG:
        raise InternalRecordError(f"expected link observations, got tag {value[:1]!r}")
    return _decode_observations(memoryview(value)[1:])


def count_observations_or_tick(value: bytes, evidence: KeyEvidence,
                               edges: list[LinkEdge]) -> float:
    """A record of the link-observations topic, taken in by the link stage: a detect
    worker's tick, or observations counted into `evidence` (their edges appended to
    `edges`); returns the tick's or the latest observation's event time.

    Observations as the link observer writes them are read in Rust straight from the
    record (`KeyEvidence.add_record`): a `LinkObservation` made and freed per observation
    cost more than counting it. Any other form of the same list is decoded by msgspec.
    """
    if value[:1] == TICK_TAG:
        return _decode_float(memoryview(value)[1:])
    if value[:1] == OBSERVATIONS_TAG:
        latest = evidence.add_record(value, 1, edges)
        if latest is not None:
            return latest
    return evidence.add_many(decode_observations(value), edges)


def encode_edges(edges: Sequence[LinkEdge]) -> bytes:
    return EDGES_TAG + _encode(edges)


def encode_tick(watermark: float) -> bytes:
    """Event-time progress: of a detect worker, to the link stage, or of a link worker, to
    the clusterer (see `TICK_TAG`)."""
    return TICK_TAG + _encode(watermark)


def decode_edges_or_tick(value: bytes) -> list[LinkEdge] | float:
    tag, body = value[:1], memoryview(value)[1:]
    if tag == EDGES_TAG:
        return _decode_edges(body)
    if tag == TICK_TAG:
        return _decode_float(body)
    raise InternalRecordError(f"unknown campaign-edge record tag {tag!r}")
