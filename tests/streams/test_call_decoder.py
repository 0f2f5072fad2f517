"""The Rust reader of by-account calls (`native/src/calls.rs`, used by
`streams.internal.decode_by_account`): the calls msgspec's decoder gives, with equal strings
shared; whatever it declines, msgspec reads, errors included."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from distillwatch_native import CallDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.decode_internal import by_account_records
from models.records import ApiCall
from streams.internal import CALLS_TAG, decode_by_account, encode_calls

msgspec_decode = msgspec.msgpack.Decoder(list[ApiCall]).decode
encode = msgspec.msgpack.encode
Raw = msgspec.Raw

SHARED = ("tenant_id", "account_id", "model", "endpoint", "stop_reason", "topic", "ip",
          "user_agent", "tls_fingerprint", "payment_fingerprint")


@pytest.fixture
def decoder() -> CallDecoder:
    """A decoder with a cache of its own."""
    return CallDecoder(ApiCall)


def fields(call: ApiCall) -> list[Any]:
    return list(msgspec.structs.astuple(call))


def full_call(event_id: str = "evt-0001", **changes: Any) -> ApiCall:
    """A call with every field set, each string long enough not to be one of CPython's
    own single-character strings."""
    call = ApiCall(
        event_id, 1.8e9 + 0.25, "org_a", "key_0000001", "frontier-large", 200, 812, 240,
        endpoint="messages", max_tokens=1024, n=1, logprobs=False, tool_count=0, turn=3,
        stop_reason="end_turn", has_prompt=True, simhash=0xA3F09C1D22E4B7F0, topic="chat",
        cot_request=False, jailbreak_score=0.02, sysprompt_probe=False, has_client=True,
        ip="203.0.113.0/24", asn=64500, user_agent="python-httpx/0.27",
        tls_fingerprint="t13d1516h2_8daaf6152771_02713d6af862", created_at=1.79e9,
        payment_fingerprint="pf_9a8b7c")
    return msgspec.structs.replace(call, **changes)


def read_as_msgspec(decoder: CallDecoder, value: bytes, start: int = 0) -> list[ApiCall]:
    """The calls the decoder reads from `value[start:]`, checked to be msgspec's: equal,
    and equal by repr too, so that 1 and 1.0, True and 1, or 0.0 and -0.0 differ."""
    calls = decoder.decode(value, start)
    assert calls is not None, "the Rust decoder declined the record"
    expected = msgspec_decode(memoryview(value)[start:])
    assert calls == expected
    assert repr(calls) == repr(expected)
    return calls


def outcome(decode: Callable[[bytes], object], value: bytes) -> str:
    """What `decode` gives for `value`, or the type and message of what it raises."""
    try:
        return repr(decode(value))
    except Exception as exc:  # the outcome under test, whatever it is
        return f"{type(exc).__name__}: {exc}"


def by_account(payload: bytes) -> object:
    return decode_by_account(CALLS_TAG + payload)


# What it reads ---------------------------------------------------------------------------


def test_the_edges_records_are_read_in_rust_as_msgspec_reads_them(decoder: CallDecoder) -> None:
    records = by_account_records(20_000, 2_000)  # the bench's traffic through the Rust edge
    for record in records:
        assert record[:1] == CALLS_TAG
        read_as_msgspec(decoder, record, 1)
        assert decode_by_account(record) == msgspec_decode(memoryview(record)[1:])
    assert sum(len(msgspec_decode(memoryview(r)[1:])) for r in records) == 20_000


ODD_CALLS = [
    ApiCall("evt-0001", 1.8e9, "org_a", "key_0000001", "frontier-large", 200, 812, 240),
    full_call(
        "evt-0002", max_tokens=2**64 - 1, simhash=2**64 - 1, asn=-(2**63), n=2**63,
        input_tokens=-1, output_tokens=-33, tool_count=2**32, turn=65_536, created_at=-0.0,
        jailbreak_score=float("inf"), logprobs=True, cot_request=True, sysprompt_probe=True),
    full_call(
        "évènement-3", ts=1_800_000_000, tenant_id="租户_甲", account_id="ключ_0001",
        model="モデル-large", status=599, input_tokens=0, output_tokens=0, endpoint="",
        stop_reason="stop 🛑", topic="mathématiques", ip="2001:db8::1",
        asn=-1, simhash=0, max_tokens=0, jailbreak_score=1, created_at=2**64 - 1,
        user_agent="Mozilla/5.0 " * 20,  # past 255 bytes, and past what the cache keeps
        tls_fingerprint="t" * 40, payment_fingerprint="ü" * 200),
    full_call("evt-0004", endpoint=None, max_tokens=None, stop_reason=None, simhash=None,
              topic=None, jailbreak_score=None, ip=None, asn=None, user_agent=None,
              tls_fingerprint=None, created_at=None, payment_fingerprint=None,
              has_prompt=False, has_client=False),
]


def test_calls_the_python_encoder_wrote_are_read_as_msgspec_reads_them(
        decoder: CallDecoder) -> None:
    """None fields, the largest simhash, negative ASNs, other scripts, ints in float
    fields, every width of int and str."""
    calls = read_as_msgspec(decoder, encode_calls(ODD_CALLS), 1)
    assert [c.ts for c in calls] == [1.8e9, 1.8e9 + 0.25, 1.8e9, 1.8e9 + 0.25]
    assert type(calls[2].ts) is float and type(calls[2].jailbreak_score) is float
    assert calls[1].simhash == 2**64 - 1 and calls[1].asn == -(2**63)
    # a record of more than 15 calls has a 16-bit array header
    read_as_msgspec(decoder, encode_calls(ODD_CALLS * 300), 1)


def test_arrays_short_of_their_defaulted_fields_are_read_as_msgspec_reads_them(
        decoder: CallDecoder) -> None:
    payload = encode([fields(full_call(f"evt-{k}"))[:k] for k in range(8, 29)])
    calls = read_as_msgspec(decoder, payload)
    assert calls[0] == ApiCall("evt-8", *fields(full_call())[1:8])


def test_other_msgpack_encodings_of_the_same_values_are_read_as_msgspec_reads_them(
        decoder: CallDecoder) -> None:
    """Another writer may use float32, wider ints and strs than needed, 16- and 32-bit
    array headers."""
    values = fields(full_call())
    values[0] = Raw(b"\xd9\x08evt-0001")  # str8 for a fixstr
    values[1] = Raw(b"\xca" + struct.pack(">f", 0.1))  # float32
    values[2] = Raw(b"\xda\x00\x05org_a")  # str16
    values[3] = Raw(b"\xdb\x00\x00\x00\x0bkey_0000001")  # str32
    values[5] = Raw(b"\xcf" + (200).to_bytes(8, "big"))  # uint64
    values[6] = Raw(b"\xd3" + (812).to_bytes(8, "big", signed=True))  # int64
    values[7] = Raw(b"\xd0\x05")  # int8
    values[19] = Raw(b"\xd1\xff\xfe")  # int16 in a float field
    values[26] = Raw(b"\xca" + struct.pack(">f", -2.5))
    call = b"\xdc\x00\x1c" + b"".join(encode(v) for v in values)
    calls = read_as_msgspec(decoder, b"\xdd\x00\x00\x00\x02" + call + call)
    assert calls[0].ts == struct.unpack(">f", struct.pack(">f", 0.1))[0]
    assert (calls[0].jailbreak_score, calls[0].created_at) == (-2.0, -2.5)


# Strings shared ---------------------------------------------------------------------------


def test_equal_strings_are_one_object_across_calls_and_records(decoder: CallDecoder) -> None:
    record = encode_calls([full_call(f"evt-{i:04d}") for i in range(3)])
    first, again = decoder.decode(record, 1), decoder.decode(record, 1)
    assert first is not None and again is not None
    for call in first + again:
        for name in SHARED:
            assert getattr(call, name) is getattr(first[0], name), name
    # an event id is its call's alone: never cached
    assert first[0].event_id == again[0].event_id
    assert first[0].event_id is not again[0].event_id


def test_values_one_byte_apart_are_told_apart_at_every_length(decoder: CallDecoder) -> None:
    # The cache hashes a value 8 bytes at a time and then its last few, and compares a
    # cached str's bytes in place when it is ASCII: values of each length that differ
    # only in their first or last byte, ASCII or not, must each read as themselves.
    values = []
    for length in [*range(1, 26), 127, 128]:
        for head in ("a", "b", "\u00e9"):
            for tail in ("x", "y", "\u00e8"):
                body = "k" * max(length - len(head.encode()) - len(tail.encode()), 0)
                values.append(head + body + tail)
    everything = encode_calls([full_call(f"evt-{i:04d}", user_agent=value)
                               for i, value in enumerate(values)])
    assert [call.user_agent for call in read_as_msgspec(decoder, everything, 1)] == values
    for value in values:  # read again right after: the cached str itself
        record = encode_calls([full_call(user_agent=value)])
        first, again = read_as_msgspec(decoder, record, 1), read_as_msgspec(decoder, record, 1)
        assert first[0].user_agent == value
        assert first[0].user_agent is again[0].user_agent, value


def test_values_past_128_bytes_are_not_kept(decoder: CallDecoder) -> None:
    kept, long = "k" * 128, "l" * 129
    record = encode_calls([full_call(user_agent=kept, tls_fingerprint=long)])
    first, again = decoder.decode(record, 1), decoder.decode(record, 1)
    assert first is not None and again is not None
    assert first[0].user_agent is again[0].user_agent
    assert first[0].tls_fingerprint is not again[0].tls_fingerprint
    assert first == again


def test_the_cache_holds_at_most_its_slots_whatever_the_accounts(decoder: CallDecoder) -> None:
    small = CallDecoder(ApiCall, slots=64)
    for start in range(0, 200_000, 1000):
        record = encode_calls([
            ApiCall(f"evt-{i}", 1.8e9 + i, f"org_{i % 997:03d}", f"key_{i:07d}",
                    "frontier-large", 200, 812, 240) for i in range(start, start + 1000)])
        assert decoder.decode(record, 1) is not None
        if start % 20_000 == 0:  # evicting, it still reads what msgspec reads
            read_as_msgspec(small, record, 1)
    assert decoder.slots == 65_536
    assert decoder.slots // 2 < decoder.cached <= decoder.slots
    assert 0 < small.cached <= small.slots == 64


# What it declines --------------------------------------------------------------------------


def one_call(**values: Any) -> bytes:
    """A msgpack array of one call, some of its fields replaced by `values`."""
    call = fields(full_call())
    for name, value in values.items():
        call[ApiCall.__struct_fields__.index(name)] = value
    return encode([call])


REFUSED_BY_MSGSPEC = {
    "a float in an int field": one_call(status=200.0),
    "a bool in an int field": one_call(input_tokens=True),
    "a float in an optional int field": one_call(simhash=1.0),
    "a bool in a float field": one_call(ts=True),
    "an int in a bool field": one_call(logprobs=1),
    "nil in a required str field": one_call(account_id=None),
    "nil in a bool field": one_call(has_client=None),
    "bytes in a str field": one_call(tenant_id=b"org_a"),
    "bad UTF-8": one_call(account_id=Raw(b"\xa4key\xff")),
    "a UTF-8 surrogate": one_call(model=Raw(b"\xa3\xed\xa0\x80")),
    "an int past 64 bits as ext": one_call(simhash=Raw(b"\xc7\x01\x01\x00")),
    "too few fields": encode([fields(full_call())[:7]]),
    "a map for a call": encode([{"event_id": "evt-0001"}]),
    "a map for the record": encode({"calls": []}),
    "a truncated record": encode_calls([full_call()] * 2)[1:-3],
    "a truncated string": one_call()[:20],
    "trailing bytes": one_call() + b"\xc0",
    "nothing": b"",
}


@pytest.mark.parametrize("payload", REFUSED_BY_MSGSPEC.values(), ids=REFUSED_BY_MSGSPEC.keys())
def test_what_the_decoder_declines_gets_msgspecs_error(decoder: CallDecoder,
                                                       payload: bytes) -> None:
    assert decoder.decode(payload) is None
    expected = outcome(msgspec_decode, payload)
    assert expected.startswith(("ValidationError: ", "DecodeError: ")), expected
    assert outcome(by_account, payload) == expected


ACCEPTED_BY_MSGSPEC_ONLY = {
    "a 29th field": encode([fields(full_call()) + [None]]),
    "a 29th and 30th field": encode([fields(full_call()) + [[1, 2], {"x": 1.5}]]),
}


@pytest.mark.parametrize("payload", ACCEPTED_BY_MSGSPEC_ONLY.values(),
                         ids=ACCEPTED_BY_MSGSPEC_ONLY.keys())
def test_what_the_decoder_declines_msgspec_reads(decoder: CallDecoder, payload: bytes) -> None:
    assert decoder.decode(payload) is None
    assert by_account(payload) == msgspec_decode(payload) == [full_call()]


def test_a_buffer_other_than_bytes_is_left_to_msgspec(decoder: CallDecoder) -> None:
    record = encode_calls([full_call()])
    assert decoder.decode(bytearray(record), 1) is None
    assert decoder.decode(memoryview(record), 1) is None
    assert decoder.decode(record, len(record) + 1) is None


class Retyped(ApiCall, frozen=True, array_like=True, gc=False):
    status: float  # type: ignore[assignment]


class Longer(ApiCall, frozen=True, array_like=True, gc=False):
    region: str = "eu"


class Mapped(ApiCall, frozen=True, array_like=False, gc=False):
    pass


@pytest.mark.parametrize(("call_type", "message"), [
    (Retyped, "status is <class 'float'>, the decoder reads int"),
    (Longer, "its fields are"),
    (Mapped, "not an untagged array_like struct"),
])
def test_a_type_other_than_the_call_it_reads_is_refused(call_type: type, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        CallDecoder(call_type)


def test_the_slots_are_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        CallDecoder(ApiCall, slots=10_000)


# Properties ---------------------------------------------------------------------------------

# Texts often repeat, so that values come from the cache as well as into it.
texts = st.sampled_from(["org_a", "key_0000001", "ü-ü", "租户", ""]) | st.text(max_size=40)
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=False) | ints
BY_ANNOTATION: dict[str, st.SearchStrategy[Any]] = {
    "str": texts, "str | None": st.none() | texts, "int": ints, "int | None": st.none() | ints,
    "float": floats, "float | None": st.none() | floats, "bool": st.booleans(),
}
call_arrays = st.tuples(
    st.tuples(*(BY_ANNOTATION[ApiCall.__annotations__[name]]
                for name in ApiCall.__struct_fields__)),
    st.integers(min_value=8, max_value=28),
).map(lambda values_and_length: list(values_and_length[0][:values_and_length[1]]))


@given(st.lists(call_arrays, max_size=5))
@settings(max_examples=500)
def test_generated_calls_are_read_as_msgspec_reads_them(arrays: list[list[Any]]) -> None:
    read_as_msgspec(CallDecoder(ApiCall, slots=8), encode(arrays))


@given(st.lists(call_arrays, min_size=1, max_size=3), st.data())
@settings(max_examples=500)
def test_edited_records_get_msgspecs_outcome(arrays: list[list[Any]],
                                             data: st.DataObject) -> None:
    payload = encode(arrays)
    at = data.draw(st.integers(min_value=0, max_value=len(payload)))
    cut = data.draw(st.integers(min_value=0, max_value=3))
    edited = payload[:at] + data.draw(st.binary(max_size=3)) + payload[at + cut:]
    expected = outcome(msgspec_decode, edited)
    calls = CallDecoder(ApiCall, slots=8).decode(edited)
    if calls is not None:
        assert repr(calls) == expected
    assert outcome(by_account, edited) == expected
