"""The wire decoder under fuzzing: any bytes give a chunk or a typed one-line error, never a
crash, and decoding allocates nothing in proportion to what a header claims.

CI runs a bounded number of cases per property (``DEFAULT_CASES``); a benchmark run sets
``LABQUAKE_FUZZ_CASES``, e.g. ``LABQUAKE_FUZZ_CASES=100000 pytest tests/stream/test_wire_fuzz.py``
for 100,000 cases per property (docs/reliability.md has the measured rate).
"""

from __future__ import annotations

import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stream.core import wire

pytestmark = pytest.mark.unit

DEFAULT_CASES = 400
CASES = int(os.environ.get("LABQUAKE_FUZZ_CASES", DEFAULT_CASES))
# What one decode may allocate besides a copy of its input: the Chunk, a NumPy view, an
# exception and its message. A header claiming 2**32 samples must not cost more.
DECODE_ALLOCATION_LIMIT = 16 * 1024

FUZZ = settings(max_examples=CASES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Header fields a mutation may overwrite: offset and struct format (stream.core.wire's layout).
HEADER_FIELDS = {
    "magic": (0, "4s"), "version": (4, "B"), "dtype": (5, "B"), "flags": (6, "H"),
    "crc": (8, "I"), "count": (12, "I"), "first_sample": (16, "q"), "sample_rate": (24, "d"),
    "start_time": (32, "d"), "instrument_length": (40, "B"), "channel_length": (41, "B"),
}
_FIELD_VALUES = {
    "4s": st.binary(min_size=4, max_size=4) | st.just(wire.MAGIC),
    "B": st.integers(0, 255), "H": st.integers(0, 2**16 - 1),
    "I": st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, wire.MAX_SAMPLES,
                                                      wire.MAX_SAMPLES + 1, 2**32 - 1]),
    "q": st.integers(-(2**63), 2**63 - 1),
    "d": st.floats(allow_nan=True, allow_infinity=True, width=64),
}


def _identifiers():
    # Letters and digits of any script are printable and never "/"; at most 16 of them
    # fit the 64-byte limit; the filter only guards that reasoning.
    characters = st.characters(categories=["L", "N"]) | st.sampled_from("-_.:")
    return st.text(characters, min_size=1, max_size=16).filter(_valid_id)


def _valid_id(text: str) -> bool:
    try:
        wire.check_id("id", text)
    except wire.WireError:
        return False
    return True


@st.composite
def chunks(draw) -> wire.Chunk:
    return wire.Chunk(
        draw(_identifiers()), draw(_identifiers()),
        draw(st.integers(0, wire.MAX_FIRST_SAMPLE - 64)),
        draw(st.floats(min_value=wire.MIN_SAMPLE_RATE, max_value=wire.MAX_SAMPLE_RATE)),
        draw(st.floats(min_value=-wire.MAX_ABS_START_TIME, max_value=wire.MAX_ABS_START_TIME)),
        draw(hnp.arrays(np.int16, st.integers(1, 64))),
        draw(st.none() | st.integers(0, wire.MAX_RUN_ID)),
    )


def _fix_checksum(data: bytearray) -> None:
    if len(data) >= wire.HEADER_SIZE:
        struct.pack_into("<I", data, 8, zlib.crc32(data[12:], zlib.crc32(data[:8])))


@st.composite
def mutated_messages(draw) -> bytes:
    """A valid message with 1-4 mutations; usually with a correct checksum, so that the
    mutation reaches the checks behind the CRC."""
    data = bytearray(wire.encode(draw(chunks())))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["field", "field", "flip", "truncate", "extend"]))
        if kind == "field" and len(data) >= wire.HEADER_SIZE:
            offset, form = HEADER_FIELDS[draw(st.sampled_from(sorted(HEADER_FIELDS)))]
            struct.pack_into("<" + form, data, offset, draw(_FIELD_VALUES[form]))
        elif kind == "flip" and data:
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
    if draw(st.integers(0, 9)) < 8:
        _fix_checksum(data)
    return bytes(data)


@st.composite
def forged_headers(draw) -> bytes:
    """Arbitrary header fields, ids and payload, with a correct checksum; mostly with a
    valid prefix and lengths that agree, so that the values behind them get checked
    (negative first sample, NaN rate or time, ids that are not UTF-8 or not printable)."""
    values = {name: draw(_FIELD_VALUES[form]) for name, (_, form) in HEADER_FIELDS.items()}
    if draw(st.integers(0, 9)) < 8:
        values.update(magic=wire.MAGIC, version=draw(st.sampled_from(wire.READ_VERSIONS)),
                      dtype=wire.DTYPE_INT16_LE, flags=0)
    run = (struct.pack("<I", draw(st.integers(0, wire.MAX_RUN_ID)))
           if values["version"] == 2 else b"")
    if draw(st.integers(0, 9)) < 7:
        identifier = (_identifiers().map(str.encode)
                      | st.binary(min_size=1, max_size=wire.MAX_ID_BYTES))
        instrument, channel = draw(identifier), draw(identifier)
        count = draw(st.integers(1, 64))
        values.update(count=count, instrument_length=len(instrument),
                      channel_length=len(channel))
        tail = instrument + channel + draw(st.binary(min_size=2 * count, max_size=2 * count))
    else:
        tail = draw(st.binary(max_size=300))
    data = bytearray(struct.pack("<4sBBHIIqddBB", *values.values())) + run + tail
    _fix_checksum(data)
    return bytes(data)


def _decode_measured(data: bytes | bytearray) -> tuple[wire.Chunk | wire.WireError, int]:
    """Decode; return the chunk or the (typed) error, and the peak bytes allocated meanwhile.

    Memory is traced around the decode alone: traced all the time, Hypothesis's own
    allocations would make each case forty times slower.
    """
    tracemalloc.start()
    try:
        result: wire.Chunk | wire.WireError = wire.decode(data)
    except wire.WireError as error:  # any other exception fails the test
        result = error
    finally:
        allocated = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, allocated


def _check(data: bytes) -> None:
    result, allocated = _decode_measured(data)
    assert allocated <= DECODE_ALLOCATION_LIMIT, (allocated, len(data))
    if isinstance(result, wire.WireError):
        message = str(result)
        assert message and "\n" not in message
        return
    # Accepted: a chunk that encodes back to the very same bytes, within the limits.
    assert wire.encode(result) == data
    assert 1 <= len(result.samples) <= wire.MAX_SAMPLES
    assert not result.samples.flags.writeable


@FUZZ
@given(st.binary(max_size=512) | st.binary(max_size=200).map(lambda tail: wire.MAGIC + tail))
def test_arbitrary_bytes(data):
    _check(data)


@FUZZ
@given(mutated_messages())
def test_mutated_valid_messages(data):
    _check(data)


@FUZZ
@given(forged_headers())
def test_forged_headers_with_valid_checksums(data):
    _check(data)


@pytest.mark.parametrize("count", [wire.MAX_SAMPLES, wire.MAX_SAMPLES + 1, 2**31, 2**32 - 1])
def test_a_header_claiming_huge_counts_costs_nothing(count):
    message = bytearray(wire.encode(wire.Chunk("rig1", "ae0", 0, 1.0, 0.0,
                                               np.zeros(4, np.int16))))
    struct.pack_into("<I", message, 12, count)
    _fix_checksum(message)
    result, allocated = _decode_measured(bytes(message))
    assert isinstance(result, wire.BadPayload | wire.TooLarge)
    assert allocated <= DECODE_ALLOCATION_LIMIT


def test_a_buffer_is_copied_once_and_no_more():
    chunk = wire.Chunk("rig1", "ae0", 0, 1.0, 0.0, np.arange(wire.MAX_SAMPLES // 4,
                                                              dtype=np.int16))
    buffer = bytearray(wire.encode(chunk))
    result, allocated = _decode_measured(buffer)
    assert isinstance(result, wire.Chunk)
    assert len(buffer) <= allocated <= len(buffer) + DECODE_ALLOCATION_LIMIT
