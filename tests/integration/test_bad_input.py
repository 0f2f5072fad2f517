"""Bad input never stops the pipeline and is never dropped silently."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable

import pytest

from schemas.deadletter import ENVELOPE_HEADER, REASON_HEADER, DeadLetter
from tests.integration.conftest import Deployment, WorkerProcess
from tests.traffic import START, chatter, encode, event

pytestmark = pytest.mark.integration


def malformed_records(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """(kind expected in the dead letter, value) for n malformed single records."""
    good = event("org_x", "key_x", START, 0)
    makers: list[tuple[str, Callable[[int], bytes]]] = [
        ("not_json", lambda i: b"{this is not json " + str(i).encode()),
        ("not_utf8", lambda i: b'{"event_id": "\xff\xfe' + str(i).encode() + b'"}'),
        ("invalid", lambda i: encode({k: v for k, v in good.items() if k != "tenant_id"})),
        ("invalid", lambda i: encode({**good, "response": {**good["response"], "status": "ok"}})),
        ("invalid", lambda i: encode({**good, "ts": "yesterday"})),
        ("invalid", lambda i: encode({**good, "request": {"model": "m", "n": 0}})),
        ("not_an_event", lambda i: json.dumps([1, 2, i]).encode()[1:-1]),  # "1,2,i": not JSON
        ("not_an_event", lambda i: b'"just a string"'),
        ("empty", lambda i: b""),
    ]
    out = []
    for i in range(n):
        kind, make = makers[rng.randrange(len(makers))]
        value = make(i)
        if kind == "not_an_event" and value.startswith(b"1,"):
            kind = "not_json"
        out.append((kind, value))
    return out


def test_malformed_input_is_dead_lettered_and_valid_input_counted(
    deployment: Deployment, start_worker: Callable[..., WorkerProcess]
) -> None:
    rng = random.Random(5)
    valid = [e for i in range(20) for e in chatter(f"org_{i}", f"key_{i}", n=50)]
    bad = malformed_records(rng, 1_000)
    # A 2 MB value, and a gateway batch with some bad elements among good ones.
    bad.append(("too_large", b'{"pad": "' + b"x" * 2_000_000 + b'"}'))
    batch_good = [event("org_b", f"key_b{i}", START, i) for i in range(8)]
    batch = [*batch_good[:4], {"schema_version": 1}, *batch_good[4:], "nope", 17]
    expected_batch_rejections = 3

    records: list[tuple[bytes | None, bytes | None]] = []
    bad_iter = iter(bad)
    for i, e in enumerate(valid):
        records.append((e["account_id"].encode(), encode(e)))
        if i % 1 == 0:
            nxt = next(bad_iter, None)
            if nxt is not None:
                records.append((b"bad-key", nxt[1]))
    records.extend((b"bad-key", value) for _, value in bad_iter)
    records.append((b"batch", json.dumps(batch).encode()))
    records.append((b"none", None))  # a tombstone: no value at all

    worker = start_worker()
    deployment.produce(records, compression="gzip")

    expected_dlq = len(bad) + expected_batch_rejections + 1
    letters = deployment.consume(deployment.settings.topic_dead_letters, expected=expected_dlq,
                                 timeout_s=180)
    assert len(letters) == expected_dlq
    envelopes = []
    for message in letters:
        headers = dict(message.headers() or [])
        assert headers[REASON_HEADER]
        envelope = DeadLetter.model_validate_json(headers[ENVELOPE_HEADER])
        assert envelope.source_topic == deployment.settings.topic_api_calls
        assert envelope.reason == headers[REASON_HEADER].decode()
        envelopes.append(envelope)
    kinds = Counter(e.kind for e in envelopes)
    want = Counter(kind for kind, _ in bad)
    want["invalid"] += 1  # {"schema_version": 1} in the batch
    want["not_an_event"] += 2  # "nope" and 17 in the batch
    want["empty"] += 1  # the tombstone
    assert kinds == want
    batch_letters = sorted(e.batch_index for e in envelopes if e.batch_index is not None)
    assert batch_letters == [4, 9, 10]
    # Offsets name the source record: every dead letter points at a distinct place.
    assert len({(e.partition, e.offset, e.batch_index) for e in envelopes}) == expected_dlq
    big = next(m for m, e in zip(letters, envelopes, strict=True) if e.kind == "too_large")
    assert len(big.value()) < 1_000_000 and DeadLetter.model_validate_json(
        dict(big.headers())[ENVELOPE_HEADER]).truncated

    total_valid = len(valid) + len(batch_good)
    health = worker.wait_until(lambda h: h["events_detected"] == total_valid
                               and h["clickhouse_pending"] == 0, timeout_s=180)
    assert health["rejected"] == expected_dlq
    assert worker.process.poll() is None, "the worker must stay up"
    rows = deployment.sql("SELECT sum(requests) AS n FROM distillwatch.account_minute")
    assert rows[0]["n"] == total_valid
    dead = deployment.sql("SELECT count() AS n FROM distillwatch.dead_letters")
    assert dead[0]["n"] == expected_dlq
