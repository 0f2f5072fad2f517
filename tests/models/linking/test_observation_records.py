"""Link observations as bytes from the observer to the key evidence.

The observer encodes them in Rust into their partitions' records (`ObservationRecords`,
what a worker's drain sends), against the observations as objects, grouped and encoded in
Python as the drain sent them before: same calls, two observers, and the records of each
take must be byte for byte the records `group_by_partition` and `encode_observations` make
of the objects, partition by partition in the same order, `max_items` to a record; the
calls done and refused must be the same, and so must the account arrays the snapshots
persist.

The link stage reads such records in Rust (`KeyEvidence.add_record`), against msgspec's
objects counted by `add_many`: the same edges and evidence, and a record in any other form
read by msgspec, as before.
"""

from __future__ import annotations

import random
import struct

import msgspec
import pytest
from distillwatch_native import ObservationRecords

from models.linking.evidence import KeyEvidence, LinkEdge
from models.linking.observe import LinkObservation, LinkObserver
from models.linking.suspicion import ExtractionShareSuspicion, LinkingSuspicion
from models.records import ApiCall
from streams.internal import (
    OBSERVATIONS_TAG,
    count_observations_or_tick,
    decode_observations,
    encode_observations,
    encode_tick,
    group_by_partition,
)
from tests.models.linking.test_differential import random_calls, shaped_calls, states


def python_records(observations: list[LinkObservation], partitions: int,
                   max_items: int) -> dict[int, list[bytes]]:
    """What the drain sent for `observations` before they were encoded in Rust."""
    return {
        partition: [encode_observations(group[i:i + max_items])
                    for i in range(0, len(group), max_items)]
        for partition, group in group_by_partition(observations, "hub", partitions).items()
    }


def observed(calls: list[ApiCall], engine: list[float], out: list[LinkObservation] |
             ObservationRecords, slice_calls: int) -> tuple[LinkObserver, list[int]]:
    """`observe_many_into` over `calls`, `slice_calls` at a time as a drain runs them,
    going on after each call refused; the observer and the refused calls' indices."""
    observer, suspicion = LinkObserver(), LinkingSuspicion(ExtractionShareSuspicion())
    refused: list[int] = []
    for start in range(0, len(calls), slice_calls):
        at, stop = start, min(len(calls), start + slice_calls)
        while at < stop:
            done, error = observer.observe_many_into(out, calls[at:stop], engine[at:stop],
                                                     suspicion)
            if error is None:
                break
            assert isinstance(error, ValueError)
            refused.append(at + done)
            at += done + 1
    return observer, refused


@pytest.mark.parametrize(("seed", "partitions", "max_items"), [(1, 8, 1000), (2, 3, 7),
                                                              (3, 1, 1), (4, 5, 64)])
def test_records_are_the_objects_grouped_and_encoded(seed: int, partitions: int,
                                                     max_items: int) -> None:
    calls = random_calls(seed, accounts=40, count=2500, refresh_s=1800) + shaped_calls(
        seed, accounts=30, count=1500)
    rng = random.Random(seed)
    rng.shuffle(calls)
    calls.sort(key=lambda call: call.ts)
    bad = sorted(rng.sample(range(len(calls)), 3))
    for n in bad:  # refused by the observer, after the share suspicion's update
        calls[n] = ApiCall(**{**{f: getattr(calls[n], f) for f in calls[n].__struct_fields__},
                              "ts": float("inf")})
    engine = [rng.choice([0.0, 0.5, rng.random()]) for _ in calls]

    # Taken every 1,200 calls, as a drain sends every OBSERVATIONS_SLICE observations.
    takes = [calls[i:i + 1200] for i in range(0, len(calls), 1200)]
    expected: list[dict[int, list[bytes]]] = []
    got: list[dict[int, list[bytes]]] = []
    objects: list[LinkObservation] = []
    records = ObservationRecords(OBSERVATIONS_TAG, partitions, max_items)
    one, many = LinkObserver(), LinkObserver()
    suspicions = (LinkingSuspicion(ExtractionShareSuspicion()),
                  LinkingSuspicion(ExtractionShareSuspicion()))
    refused: tuple[list[int], list[int]] = ([], [])
    offset = 0
    for take in takes:
        for (observer, suspicion, out, failed) in ((one, suspicions[0], objects, refused[0]),
                                                   (many, suspicions[1], records, refused[1])):
            at = 0
            while at < len(take):
                done, error = observer.observe_many_into(
                    out, take[at:], engine[offset + at:offset + len(take)], suspicion)
                if error is None:
                    break
                failed.append(offset + at + done)
                at += done + 1
        assert len(records) == len(objects)
        expected.append(python_records(objects, partitions, max_items))
        got.append(records.take())
        assert len(records) == 0
        objects = []
        offset += len(take)

    assert refused[0] == refused[1] == bad
    assert sum(len(r) for take in expected for rs in take.values() for r in rs) > 0
    for want, have in zip(expected, got, strict=True):
        assert list(have) == list(want)  # the partitions, in the order of their first
        assert have == want
    decoded = [o for take in got for rs in take.values() for r in rs
               for o in decode_observations(r)]
    assert {o.kind for o in decoded} >= {"onset", "payment", "tls", "netua", "template"}
    accounts = {call.account_id for call in calls}
    assert states(many, accounts) == states(one, accounts)


def test_a_drain_in_slices_sends_what_it_sent_as_objects() -> None:
    """`observed` as the drain runs it, slices of 500 calls into one set of records
    taken at the end: the records of the objects of the same run."""
    calls = random_calls(5, accounts=25, count=3000, refresh_s=900)
    engine = [0.3] * len(calls)
    objects: list[LinkObservation] = []
    records = ObservationRecords(OBSERVATIONS_TAG, 4, 100)
    assert observed(calls, engine, objects, 500)[1] == observed(calls, engine, records, 500)[1]
    assert len(records) == len(objects) > 100
    assert records.take() == python_records(objects, 4, 100)


def test_records_refuse_nothing_to_spread_over() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ObservationRecords(OBSERVATIONS_TAG, 0, 10)
    with pytest.raises(ValueError, match="at least 1"):
        ObservationRecords(OBSERVATIONS_TAG, 4, 0)
    records = ObservationRecords(OBSERVATIONS_TAG, 4, 10)
    assert len(records) == 0
    assert records.take() == {}


def test_a_list_still_gets_the_objects() -> None:
    calls = random_calls(6, accounts=5, count=200, refresh_s=1800)
    made, done, error = LinkObserver().observe_many(calls, [0.0] * len(calls),
                                                    LinkingSuspicion())
    assert error is None and done == len(calls)
    assert made and all(isinstance(o, LinkObservation) for o in made)


def evidence_after(records: list[bytes], read: str) -> tuple[list[LinkEdge], list[float],
                                                           KeyEvidence]:
    """The key evidence after `records`, each read by the link stage (`read="bytes"`) or
    decoded by msgspec and counted (`"objects"`): its edges, each record's latest event
    time, and the evidence."""
    evidence, edges, latest = KeyEvidence(), [], []
    for value in records:
        if read == "bytes":
            latest.append(count_observations_or_tick(value, evidence, edges))
        else:
            latest.append(evidence.add_many(decode_observations(value), edges))
    return edges, latest, evidence


def observation_records(seed: int) -> tuple[list[bytes], list[LinkObservation]]:
    calls = random_calls(seed, accounts=60, count=4000, refresh_s=1800) + shaped_calls(
        seed, accounts=40, count=2000)
    calls.sort(key=lambda call: call.ts)
    records = ObservationRecords(OBSERVATIONS_TAG, 1, 50)
    observed(calls, [0.6 if i % 3 else 0.1 for i in range(len(calls))], records, 700)
    values = records.take()[0]
    return values, [o for value in values for o in decode_observations(value)]


@pytest.mark.parametrize("seed", [7, 8])
def test_the_link_stage_reads_the_records_as_msgspec_does(seed: int) -> None:
    values, observations = observation_records(seed)
    assert len(observations) > 500
    got = evidence_after(values, "bytes")
    want = evidence_after(values, "objects")
    assert got[0] == want[0] and len(got[0]) > 10  # the edges, in order
    assert got[1] == want[1]
    keys = {(o.kind, o.key) for o in observations}
    assert [got[2].weight(*k) for k in sorted(keys)] == [want[2].weight(*k) for k in sorted(keys)]
    assert (len(got[2]), got[2].members_tracked) == (len(want[2]), want[2].members_tracked)


def test_every_record_is_read_from_its_bytes_and_a_tick_is_a_tick() -> None:
    values, _ = observation_records(9)
    evidence: KeyEvidence = KeyEvidence()
    assert all(evidence.add_record(value, 1, []) is not None for value in values)
    assert count_observations_or_tick(encode_tick(1.8e9 + 0.5), KeyEvidence(), []) == 1.8e9 + 0.5
    assert KeyEvidence().add_record(encode_observations([]), 1, []) == float("-inf")


UNUSUAL = [
    # msgspec reads these as the same observations; the link stage leaves them to it.
    ("an int event time", lambda o: msgspec.msgpack.encode(
        [{**msgspec.structs.asdict(o), "ts": int(o.ts)}])),
    ("fields in another order", lambda o: msgspec.msgpack.encode(
        [dict(reversed(msgspec.structs.asdict(o).items()))])),
    ("a float32", lambda o: msgspec.msgpack.encode([o])[:-9] + b"\xca" + struct.pack(
        ">f", o.first_seen)),
    ("an unknown field", lambda o: msgspec.msgpack.encode(
        [{**msgspec.structs.asdict(o), "extra": 1}])),
]


@pytest.mark.parametrize(("what", "encode"), UNUSUAL, ids=[u[0] for u in UNUSUAL])
def test_a_record_in_another_form_is_read_by_msgspec(what: str, encode: object) -> None:
    obs = LinkObservation("tls", "t13d_ü" * 7, "org_1", "acct_1", 1.8e9, 0.75, 1.8e9 - 60.0)
    value = OBSERVATIONS_TAG + encode(obs)  # type: ignore[operator]
    assert KeyEvidence().add_record(value, 1, []) is None
    a, b = KeyEvidence(), KeyEvidence()
    other = encode_observations(
        [LinkObservation("tls", obs.key, "org_2", "acct_2", 1.8e9 + 1, 0.75, 1.8e9)])
    edges_a: list[LinkEdge] = []
    edges_b: list[LinkEdge] = []
    for value_ in (value, other):
        latest_a = count_observations_or_tick(value_, a, edges_a)
        latest_b = b.add_many(decode_observations(value_), edges_b)
        assert latest_a == latest_b
    assert edges_a == edges_b and edges_a
    assert a.weight("tls", obs.key) == b.weight("tls", obs.key) > 0


def test_a_broken_record_counts_nothing_and_raises_as_msgspec_does() -> None:
    values, _ = observation_records(10)
    value = values[0]
    for broken in (value[:-1], value + b"\xc0", value[:40] + b"\xff" + value[41:]):
        evidence = KeyEvidence()
        assert evidence.add_record(broken, 1, []) is None
        with pytest.raises(msgspec.DecodeError):
            count_observations_or_tick(broken, evidence, [])
        assert len(evidence) == 0
