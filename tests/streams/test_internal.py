"""Records on the internal topics between workers: what one version writes, the next reads."""

from __future__ import annotations

import msgspec
import pytest

from models.linking.observe import LinkObservation
from streams.internal import (
    OBSERVATIONS_TAG,
    InternalRecordError,
    decode_observations,
    encode_observations,
)

OBSERVATIONS = [
    LinkObservation("tls", "t13d_build", "org_a", "key_1", 1.8e9 + 0.25, 0.8, 1.8e9),
    LinkObservation("template", "b0:12|b2:7", "org_b", "key_2", 1.8e9 + 1.5, 0.0, 1.8e9 - 60),
]


def test_link_observations_travel_as_maps_of_their_fields() -> None:
    """Workers of the previous version wrote each observation as a msgpack map of its
    fields (a dataclass): a rolling upgrade needs both to read the other's records."""
    value = encode_observations(OBSERVATIONS)
    assert value[:1] == OBSERVATIONS_TAG
    assert msgspec.msgpack.decode(value[1:]) == [
        {"kind": "tls", "key": "t13d_build", "tenant_id": "org_a", "account_id": "key_1",
         "ts": 1.8e9 + 0.25, "suspicion": 0.8, "first_seen": 1.8e9},
        {"kind": "template", "key": "b0:12|b2:7", "tenant_id": "org_b", "account_id": "key_2",
         "ts": 1.8e9 + 1.5, "suspicion": 0.0, "first_seen": 1.8e9 - 60},
    ]
    written_before = OBSERVATIONS_TAG + msgspec.msgpack.encode([
        {"kind": o.kind, "key": o.key, "tenant_id": o.tenant_id, "account_id": o.account_id,
         "ts": o.ts, "suspicion": o.suspicion, "first_seen": o.first_seen}
        for o in OBSERVATIONS
    ])
    assert decode_observations(written_before) == OBSERVATIONS
    assert decode_observations(value) == OBSERVATIONS
    assert [o.hub for o in decode_observations(value)] == ["tls:t13d_build",
                                                           "template:b0:12|b2:7"]


def test_a_record_of_another_kind_is_refused_by_tag() -> None:
    with pytest.raises(InternalRecordError):
        decode_observations(b"B" + msgspec.msgpack.encode([]))
