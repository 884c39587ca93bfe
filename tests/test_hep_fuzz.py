"""Fuzz: damaged and random packets never make either HEP decoder raise anything but HepError
nor return a payload over MAX_SIZE, and both decoders give the same answer (the error message
included).  Bounded for CI: hypothesis with a fixed number of examples, then a seeded mutation
loop bounded in count and in time."""

import gzip
import importlib
import os
import random
import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastban import hep_pure as pure
from sip_corpus import SAMPLES
from test_hep_decode import (
    GOOD, REJECTS, SPEC_EXAMPLE, asterisk, chunk, freeswitch, kamailio, packet, u8, u16, u32,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MAX_SIZE = pure.MAX_SIZE
KEY = b"spoofme"

try:
    cy = importlib.import_module("fastban._hepparser")
except ImportError as exc:  # pragma: no cover - depends on the build
    cy = None
    _missing = (f"fastban._hepparser is not built ({exc}); "
                "run: .venv/bin/python setup.py build_ext --inplace")


@pytest.fixture(autouse=True)
def _need_extension():
    if cy is None:
        if IN_CI:
            pytest.fail(_missing)
        pytest.skip(_missing)


FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_MESSAGES = [SAMPLES[name] for name in sorted(SAMPLES)]
SEEDS = [SPEC_EXAMPLE, GOOD,
         kamailio(_MESSAGES[0], "203.0.113.9", 5062, "198.51.100.20", 5060, auth_key=KEY,
                  correlation_id=b"1627369848"),
         kamailio(_MESSAGES[1], "2001:db8::1", 5061, "2001:db8::9", 5070, proto="tls"),
         asterisk(_MESSAGES[2], "192.0.2.10", 5060, "203.0.113.9", 5062, password=KEY,
                  uuid=b"8a3f0e2c", capture_name=b"asterisk"),
         asterisk(_MESSAGES[3], "2001:db8::5", 5061, "2001:db8::77", 40312, reliable=True,
                  uuid=b"PJSIP/3001-00000007"),
         freeswitch(_MESSAGES[4], "203.0.113.77", 5080, "198.51.100.5", 5060),
         freeswitch(_MESSAGES[5], "2001:db8::44", 5060, "2001:db8::5", 5060, tport="wss"),
         packet(GOOD[6:-len(chunk(0x0f, SAMPLES["kamailio_407"]))],
                chunk(0x10, gzip.compress(SAMPLES["kamailio_200_contacts"]))),
         packet(GOOD[6:-len(chunk(0x0f, SAMPLES["kamailio_407"]))],
                chunk(0x10, zlib.compress(SAMPLES["asterisk_401"]))),
         packet(GOOD[6:], chunk(0x13, b"node1"), chunk(0x80, b"vendor data", vendor=8))]
SEEDS += [data for _, data, _, _ in REJECTS if len(data) < 4000]


def outcome(mod, data, key):
    """('decoded', fields) or ('refused', reason, message); anything else raised fails."""
    try:
        m = mod.decode(data, key)
    except mod.HepError as error:
        assert error.reason in mod.REJECT_REASONS
        return ("refused", error.reason, str(error))
    assert isinstance(m, mod.HepMessage)
    assert 0 < len(m.payload) <= MAX_SIZE
    assert len(m.src) == len(m.dst) == (4 if m.family == 2 else 16)
    return ("decoded", m.as_dict())


def agree(data, key=None):
    a, b = outcome(pure, data, key), outcome(cy, data, key)
    assert a == b, (data, key)
    return a


def check(data):
    return agree(data), agree(data, KEY)


def _chunk_spans(data):
    """(start, end) of each chunk of a packet, as far as its lengths can be followed."""
    spans, pos = [], 6
    while pos + 6 <= len(data):
        length = struct.unpack_from("!H", data, pos + 4)[0]
        if length < 6 or pos + length > len(data):
            break
        spans.append((pos, pos + length))
        pos += length
    return spans


def _fix_total(data):
    return data[:4] + struct.pack("!H", len(data) & 0xffff) + data[6:] if len(data) >= 6 else data


# --- hypothesis -----------------------------------------------------------------------------

@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["truncate", "flip", "set", "length", "total", "insert",
                                     "delete", "splice"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.sampled_from([0, 1, 2, 5, 6, 7, 10, 16, 17, 0x0f, 0x10, 0xff]))
        elif kind == "length":      # a chunk's length field lies
            spans = _chunk_spans(bytes(data))
            if spans:
                start, _ = draw(st.sampled_from(spans))
                data[start + 4:start + 6] = struct.pack("!H", draw(st.integers(0, 0xffff)))
        elif kind == "total":       # the total length lies, or is made right again
            if len(data) >= 6:
                data[4:6] = struct.pack("!H", draw(st.one_of(
                    st.integers(0, 0xffff), st.just(len(data) & 0xffff))))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(max_size=12))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 24))]
        else:                       # a chunk of another valid packet, spliced in
            other = draw(st.sampled_from(SEEDS[:11]))
            spans = _chunk_spans(other)
            if spans:
                start, end = draw(st.sampled_from(spans))
                data[pos:pos] = other[start:end]
            if draw(st.booleans()):
                data = bytearray(_fix_total(bytes(data)))
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_packets(data):
    check(data)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=300))
def test_random_bytes_after_the_magic(body):
    check(b"HEP3" + struct.pack("!H", 6 + len(body)) + body)
    check(b"HEP3" + body)
    check(body)


CHUNK = st.one_of(
    st.builds(u8, st.sampled_from([1, 2, 11]), st.sampled_from([0, 1, 2, 6, 10, 17, 22, 255])),
    st.builds(u16, st.sampled_from([7, 8, 13, 1, 12]), st.integers(0, 0xffff)),
    st.builds(u32, st.sampled_from([9, 10, 12, 3, 4, 11]), st.integers(0, 0xffffffff)),
    st.builds(chunk, st.sampled_from([3, 4]), st.binary(min_size=3, max_size=5)),
    st.builds(chunk, st.sampled_from([5, 6]), st.binary(min_size=15, max_size=17)),
    st.builds(chunk, st.sampled_from([14, 15, 16, 17, 19, 0x20]),
              st.one_of(st.just(KEY), st.sampled_from(_MESSAGES[:4]), st.binary(max_size=20))),
    st.builds(chunk, st.just(16), st.sampled_from([gzip.compress(_MESSAGES[0]),
                                                   zlib.compress(_MESSAGES[1]),
                                                   gzip.compress(b""),
                                                   gzip.compress(_MESSAGES[0])[:-4]])),
    st.builds(chunk, st.integers(0, 0x40), st.binary(max_size=8), st.integers(0, 9)),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHUNK, max_size=16))
def test_chunk_soup(chunks):
    check(packet(*chunks))


@pytest.mark.parametrize("megabytes", [1, 2, 8])
def test_bombs_stay_bounded(megabytes):
    bomb = gzip.compress(bytes(megabytes << 20), 9)
    data = packet(GOOD[6:-len(chunk(0x0f, SAMPLES["kamailio_407"]))], chunk(0x10, bomb))
    assert check(data)[0][:2] == ("refused", "oversize")


def test_batch_agrees_with_decode():
    batch = SEEDS + [s[:len(s) // 2] for s in SEEDS] + [b"\xff" * 40]
    for key in (None, KEY):
        a, b = pure.decode_batch(batch, key), cy.decode_batch(batch, key)
        assert [x if isinstance(x, str) else x.as_dict() for x in a] == \
            [x if isinstance(x, str) else x.as_dict() for x in b]
        for data, result in zip(batch, a):
            single = outcome(pure, data, key)
            assert (result if isinstance(result, str) else ("decoded", result.as_dict())) == \
                (single[1] if single[0] == "refused" else single)


# --- a seeded mutation loop, bounded in count and in time ------------------------------------

def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        if not data:
            break
        pos = rng.randrange(len(data))
        if kind == 0:                           # bit flips
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(data))
                data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:                         # truncation
            del data[pos:]
        elif kind == 2:                         # a lying chunk length
            spans = _chunk_spans(bytes(data))
            if spans:
                start, end = rng.choice(spans)
                delta = rng.choice([-7, -6, -1, 1, 2, 6, 100, 0x10000])
                data[start + 4:start + 6] = struct.pack("!H", (end - start + delta) & 0xffff)
        elif kind == 3:                         # a lying total length
            if len(data) >= 6:
                data[4:6] = struct.pack("!H", (len(data) + rng.choice([-7, -1, 1, 6])) & 0xffff)
        elif kind == 4:                         # a chunk of a valid packet spliced in
            other = rng.choice(SEEDS[:11])
            start, end = rng.choice(_chunk_spans(other))
            data[pos:pos] = other[start:end]
            if rng.random() < 0.7:
                data = bytearray(_fix_total(bytes(data)))
        else:                                   # a chunk dropped or duplicated
            spans = _chunk_spans(bytes(data))
            if spans:
                start, end = rng.choice(spans)
                piece = bytes(data[start:end])
                del data[start:end]
                if rng.random() < 0.5:
                    data[start:start] = piece + piece
                data = bytearray(_fix_total(bytes(data)))
    return bytes(data)


def test_seeded_mutation_loop():
    rng = random.Random(20261202)
    deadline = time.monotonic() + 5.0
    done, outcomes = 0, set()
    while done < 30_000 and time.monotonic() < deadline:
        data = _mutate(rng, rng.choice(SEEDS))
        result = agree(data, KEY if done % 3 == 0 else None)
        outcomes.add(result[1] if result[0] == "refused" else "decoded")
        done += 1
    assert done >= 1000
    assert {"decoded", "truncated", "length", "not_sip", "no_address"} <= outcomes, outcomes
