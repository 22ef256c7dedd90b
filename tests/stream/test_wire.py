"""The version-1 chunk format: layout, round trip, and strict rejection of bad bytes."""

import math
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stream.core.wire import (
    HEADER_SIZE,
    MAGIC,
    MAX_ABS_START_TIME,
    MAX_END_SAMPLE,
    MAX_FIRST_SAMPLE,
    MAX_ID_BYTES,
    MAX_SAMPLE_RATE,
    MAX_SAMPLES,
    MIN_SAMPLE_RATE,
    BadChecksum,
    BadHeader,
    BadMagic,
    BadPayload,
    Chunk,
    TooLarge,
    UnsupportedVersion,
    WireError,
    decode,
    encode,
    message_key,
)

pytestmark = pytest.mark.unit

identifiers = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=MAX_ID_BYTES
).filter(lambda text: text.isprintable() and "/" not in text
         and len(text.encode()) <= MAX_ID_BYTES)

chunks = st.builds(
    Chunk,
    instrument=identifiers,
    channel=identifiers,
    first_sample=st.integers(0, MAX_FIRST_SAMPLE - 300),
    sample_rate=st.floats(min_value=MIN_SAMPLE_RATE, max_value=MAX_SAMPLE_RATE),
    start_time=st.floats(min_value=-MAX_ABS_START_TIME, max_value=MAX_ABS_START_TIME),
    samples=hnp.arrays(np.int16, st.integers(1, 300)),
    run=st.none() | st.integers(0, 2**32 - 1),
)


def make_chunk(count: int = 4096, first_sample: int = 8192) -> Chunk:
    samples = np.arange(count, dtype=np.int16) - 2048
    return Chunk("rig1", "ae0", first_sample, 4e6, first_sample / 4e6, samples)


def pack_raw(*, magic=MAGIC, version=1, dtype_code=1, flags=0, count=None, first_sample=0,
             sample_rate=1.0, start_time=0.0, instrument=b"rig1", channel=b"ae0",
             payload=b"\x01\x00") -> bytes:
    """Build a message field by field, with a correct checksum, bypassing all validation."""
    count = len(payload) // 2 if count is None else count
    head = struct.pack("<4sBBH", magic, version, dtype_code, flags)
    rest = struct.pack("<IqddBB", count, first_sample, sample_rate, start_time,
                       len(instrument), len(channel)) + instrument + channel + payload
    crc = zlib.crc32(rest, zlib.crc32(head))
    return head + struct.pack("<I", crc) + rest


def test_layout_matches_the_documented_table():
    chunk = Chunk("rig1", "ae0", 123_456_789, 4e6, 30.25, np.array([1, -2, 300], dtype=np.int16))
    data = encode(chunk)
    assert data[0:4] == b"LQAE"
    assert (data[4], data[5]) == (1, 1)
    assert struct.unpack_from("<H", data, 6) == (0,)
    assert struct.unpack_from("<I", data, 8) == (zlib.crc32(data[12:], zlib.crc32(data[:8])),)
    assert struct.unpack_from("<Iqdd", data, 12) == (3, 123_456_789, 4e6, 30.25)
    assert (data[40], data[41]) == (4, 3)
    assert data[42:49] == b"rig1ae0"
    assert data[49:] == b"\x01\x00\xfe\xff\x2c\x01"
    assert len(data) == HEADER_SIZE + 7 + 2 * 3


@given(chunks)
def test_round_trip_keeps_every_field(chunk):
    data = encode(chunk)
    decoded = decode(data)
    assert decoded.stream_id == chunk.stream_id
    assert decoded.first_sample == chunk.first_sample
    assert decoded.sample_rate == chunk.sample_rate
    assert math.copysign(1, decoded.start_time) == math.copysign(1, chunk.start_time)
    assert decoded.start_time == chunk.start_time
    assert decoded.samples.dtype == np.int16
    assert decoded.run == chunk.run
    assert data[4] == (1 if chunk.run is None else 2)
    np.testing.assert_array_equal(decoded.samples, chunk.samples)
    assert encode(decoded) == data


def test_version_2_carries_the_run_id_after_the_id_lengths():
    chunk = Chunk("rig1", "ae0", 7, 4e6, 0.0, np.array([1, -2], dtype=np.int16), run=513)
    data = encode(chunk)
    assert data[4] == 2 and len(data) == HEADER_SIZE + 4 + 7 + 4
    assert struct.unpack_from("<I", data, HEADER_SIZE) == (513,)
    assert data[HEADER_SIZE + 4:HEADER_SIZE + 11] == b"rig1ae0"
    assert decode(data).run == 513
    version_1 = encode(Chunk("rig1", "ae0", 7, 4e6, 0.0, chunk.samples))
    assert version_1[4] == 1 and decode(version_1).run is None


def test_decoded_samples_are_a_read_only_view_and_bytearray_input_is_copied():
    data = bytearray(encode(make_chunk(count=8)))
    chunk = decode(data)
    assert not chunk.samples.flags.writeable
    data[-2:] = b"\x00\x7f"
    assert chunk.samples[-1] == 8 - 1 - 2048


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_valid_chunk_or_a_wire_error(data):
    try:
        chunk = decode(data)
    except WireError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert encode(chunk) == data


def mostly(valid, anything):
    """Usually the valid value, so that one bad field at a time reaches its check."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), anything)


any_id = st.one_of(identifiers.map(str.encode), st.binary(max_size=70))


@given(
    version=mostly(1, st.integers(0, 255)), dtype_code=mostly(1, st.integers(0, 255)),
    flags=mostly(0, st.integers(0, 2**16 - 1)), first_sample=st.integers(-(2**63), 2**63 - 1),
    sample_rate=st.one_of(st.floats(min_value=1e-3, max_value=1e9), st.floats()),
    start_time=st.floats(), instrument=any_id, channel=any_id,
    payload=st.one_of(st.binary(min_size=2, max_size=40).map(lambda raw: raw[:len(raw) // 2 * 2]),
                      st.binary(max_size=40)),
    count_offset=mostly(0, st.integers(-1, 1)),
)
def test_checksummed_messages_with_any_field_values_decode_or_raise_wire_error(
        version, dtype_code, flags, first_sample, sample_rate, start_time, instrument, channel,
        payload, count_offset):
    data = pack_raw(version=version, dtype_code=dtype_code, flags=flags,
                    count=max(0, len(payload) // 2 + count_offset), first_sample=first_sample,
                    sample_rate=sample_rate, start_time=start_time, instrument=instrument,
                    channel=channel, payload=payload)
    try:
        chunk = decode(data)
    except WireError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert chunk.first_sample >= 0 and chunk.end_sample <= MAX_END_SAMPLE
        assert MIN_SAMPLE_RATE <= chunk.sample_rate <= MAX_SAMPLE_RATE
        assert abs(chunk.start_time) <= MAX_ABS_START_TIME
        assert encode(chunk) == data


@given(chunks, st.data())
def test_every_truncation_raises_wire_error(chunk, data):
    message = encode(chunk)
    cut = data.draw(st.integers(0, len(message) - 1))
    with pytest.raises(WireError):
        decode(message[:cut])


def test_extra_trailing_bytes_are_bad_payload():
    with pytest.raises(BadPayload, match="header declares"):
        decode(encode(make_chunk(count=4)) + b"\x00\x00")


@given(chunks, st.data())
def test_every_single_bit_flip_raises_wire_error(chunk, data):
    message = bytearray(encode(chunk))
    bit = data.draw(st.integers(0, 8 * len(message) - 1))
    message[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(WireError):
        decode(bytes(message))


def test_payload_bit_flip_is_caught_by_the_checksum():
    message = bytearray(encode(make_chunk(count=16)))
    message[-1] ^= 0x10
    with pytest.raises(BadChecksum, match="damaged"):
        decode(bytes(message))


@pytest.mark.parametrize(("count", "error"), [(2**31, TooLarge), (MAX_SAMPLES + 1, TooLarge),
                                              (MAX_SAMPLES, BadPayload)])
def test_huge_declared_count_is_rejected_from_the_header_without_allocating(count, error):
    data = pack_raw(count=count, payload=b"\x00\x00" * 4)
    tracemalloc.start()
    with pytest.raises(error):
        decode(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 1024


@pytest.mark.parametrize(("data", "error", "reason"), [
    (b"", BadHeader, "shorter than"),
    (b"XQAE", BadMagic, "not b'LQAE'"),
    (pack_raw(magic=b"RIFF"), BadMagic, "not a labquake chunk"),
    (pack_raw(version=3), UnsupportedVersion, "upgrade labquake"),
    (pack_raw(version=2, instrument=b"", channel=b"", payload=b""), BadHeader,
     "46-byte header of version 2"),
    (pack_raw(dtype_code=2), BadHeader, "dtype code 2"),
    (pack_raw(flags=1), BadHeader, "flags"),
    (pack_raw(count=0, payload=b""), BadHeader, "0 samples"),
    (pack_raw(instrument=b""), BadHeader, "instrument id length 0"),
    (pack_raw(channel=b"c" * 65), BadHeader, "channel id length 65"),
    (pack_raw(instrument=b"\xff\xfe"), BadHeader, "not valid UTF-8"),
    (pack_raw(instrument=b"rig\n1"), BadHeader, "printable"),
    (pack_raw(channel=b"a/b"), BadHeader, "without '/'"),
    (pack_raw(first_sample=-1), BadHeader, "first_sample"),
    (pack_raw(sample_rate=float("nan")), BadHeader, "sample_rate"),
    (pack_raw(sample_rate=0.0), BadHeader, "sample_rate"),
    (pack_raw(start_time=float("inf")), BadHeader, "start_time"),
    (pack_raw(sample_rate=1e300), BadHeader, "sample_rate"),
    (pack_raw(sample_rate=4e13), BadHeader, "sample_rate"),
    (pack_raw(sample_rate=5e-324), BadHeader, "sample_rate"),
    (pack_raw(start_time=1e300), BadHeader, "start_time"),
    (pack_raw(first_sample=2**63 - 10), BadHeader, "first_sample"),
    (pack_raw(first_sample=MAX_END_SAMPLE), BadHeader, "counter's range"),
    (pack_raw(payload=b"\x00\x00\x00"), BadPayload, "header declares"),
])
def test_each_problem_has_its_error_class_and_reason(data, error, reason):
    with pytest.raises(error, match=reason):
        decode(data)


def test_non_bytes_value_such_as_a_kafka_tombstone_is_a_wire_error():
    with pytest.raises(BadHeader, match="NoneType"):
        decode(None)


def test_wire_errors_are_value_errors():
    for error in (BadMagic, UnsupportedVersion, BadHeader, BadPayload, BadChecksum, TooLarge):
        assert issubclass(error, WireError)
    assert issubclass(WireError, ValueError)


@pytest.mark.parametrize(("fields", "error", "reason"), [
    ({"samples": np.zeros(3, dtype=np.float64)}, BadPayload, "int16"),
    ({"samples": [1, 2, 3]}, BadPayload, "int16"),
    ({"samples": np.zeros((2, 2), dtype=np.int16)}, BadPayload, "1-D"),
    ({"samples": np.zeros(0, dtype=np.int16)}, BadPayload, "at least 1"),
    ({"samples": np.zeros(MAX_SAMPLES + 1, dtype=np.int16)}, TooLarge, "limit"),
    ({"instrument": "é" * 33}, BadHeader, "1..64 UTF-8 bytes"),
    ({"channel": ""}, BadHeader, "1..64"),
    ({"first_sample": -5}, BadHeader, "first_sample"),
    ({"first_sample": 2**63}, BadHeader, "first_sample"),
    ({"first_sample": MAX_END_SAMPLE - 1}, BadHeader, "counter's range"),
    ({"sample_rate": 1e9 * 1.01}, BadHeader, "sample_rate"),
    ({"first_sample": 1.5}, BadHeader, "integer"),
    ({"sample_rate": -1.0}, BadHeader, "sample_rate"),
    ({"start_time": float("nan")}, BadHeader, "start_time"),
])
def test_chunk_constructor_refuses_what_could_not_be_encoded(fields, error, reason):
    values = {"instrument": "rig1", "channel": "ae0", "first_sample": 0, "sample_rate": 1.0,
              "start_time": 0.0, "samples": np.zeros(2, dtype=np.int16)} | fields
    with pytest.raises(error, match=reason):
        Chunk(**values)


def test_chunk_normalises_numpy_scalars_and_accepts_multibyte_ids():
    chunk = Chunk("é" * 32, "ae0", np.int64(10), np.float32(2.0), np.float64(1.0),
                  np.zeros(2, dtype=np.int16))
    assert type(chunk.first_sample) is int
    assert type(chunk.sample_rate) is float
    assert decode(encode(chunk)).instrument == "é" * 32


def test_chunk_properties():
    chunk = Chunk("rig1", "ae0", 100, 4.0, 10.0, np.zeros(8, dtype=np.int16))
    assert chunk.stream_id == ("rig1", "ae0")
    assert chunk.end_sample == 108
    assert chunk.time_of(100) == 10.0
    assert chunk.time_of(107) == 11.75


def test_message_key():
    assert message_key("rig1", "ae0") == b"rig1/ae0"
    assert message_key("é", "x") == "é/x".encode()
    with pytest.raises(BadHeader):
        message_key("a/b", "c")
