"""The HEPv3 decoder, pinned on packets built as Kamailio, Asterisk and FreeSWITCH build them;
every test runs against both implementations (fastban.hep_pure and fastban._hepparser)."""

import gzip
import importlib
import os
import pickle
import socket
import struct
import subprocess
import sys
import zlib

import pytest

from fastban import hep, hep_pure, sip_pure
from sip_corpus import (
    ASTERISK_401, FREESWITCH_403, FREESWITCH_407, INVITE_PROXY_AUTH, IPV6_TCP_403, KAMAILIO_407,
    KAMAILIO_200_CONTACTS, KAMAILIO_WWW_401, SAMPLES, SIPVICIOUS_REGISTER,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_SIZE = sip_pure.MAX_SIZE


def load_impl(name):
    """fastban.hep_pure, or fastban._hepparser (skips when not built; fails when CI=true)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = (f"{name} is not built ({exc}); "
                  "run: .venv/bin/python setup.py build_ext --inplace")
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(params=["fastban.hep_pure", "fastban._hepparser"], ids=["pure", "cython"])
def hep_impl(request):
    return load_impl(request.param)


@pytest.fixture
def both():
    return load_impl("fastban.hep_pure"), load_impl("fastban._hepparser")


# --- building packets -----------------------------------------------------------------------

def chunk(kind, data, vendor=0):
    return struct.pack("!HHH", vendor, kind, 6 + len(data)) + data


def u8(kind, value):
    return chunk(kind, bytes([value]))


def u16(kind, value):
    return chunk(kind, struct.pack("!H", value))


def u32(kind, value):
    return chunk(kind, struct.pack("!I", value))


def packet(*chunks):
    body = b"".join(chunks)
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def addr(text):
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def addresses(src, dst):
    """The family and the two address chunks (0x0003/0x0004 or 0x0005/0x0006)."""
    if ":" in src:
        return 10, chunk(5, addr(src)), chunk(6, addr(dst))
    return 2, chunk(3, addr(src)), chunk(4, addr(dst))


# Kamailio siptrace, src/modules/siptrace/siptrace_hep.c, trace_send_hep3_duplicate() (with
# modparam hep_version=3): the protocol from pipport2su() (tls, ws and wss: IPPROTO_IDP, "fake
# proto type"), the chunk order below, vendor id 0 on every chunk whatever hep_vendor_id says,
# hep_capture_id (default 1), the correlation id (sip_trace()'s third parameter) before the
# auth key (modparam auth_key, strlen bytes, no NUL), the message last.
KAMAILIO_PROTO = {"udp": 17, "tcp": 6, "tls": 22, "ws": 22, "wss": 22, "sctp": 132}


def kamailio(payload, src, sport, dst, dport, proto="udp", ts=(1764643888, 108123),
             capture_id=1, auth_key=b"", correlation_id=b""):
    family, src_chunk, dst_chunk = addresses(src, dst)
    chunks = [u8(1, family), u8(2, KAMAILIO_PROTO[proto]), src_chunk, dst_chunk,
              u16(7, sport), u16(8, dport), u32(9, ts[0]), u32(10, ts[1]), u8(11, 1),
              u32(12, capture_id)]
    if correlation_id:
        chunks.append(chunk(0x11, correlation_id))
    if auth_key:
        chunks.append(chunk(0x0e, auth_key))
    chunks.append(chunk(0x0f, payload))
    return packet(*chunks)


# Asterisk res_hep, res/res_hep.c, hep_queue_cb(): struct hep_generic (family, protocol, ports,
# timestamps, protocol type, capture_id: default 0) then the addresses, capture_password when
# set (strlen bytes), the UUID as generic chunk 0x0011 (the Call-ID with uuid_type=call-id, the
# default, else the channel name), capture_name as 0x0013 when set (18.16/20.1 and later), the
# payload last.  res_hep defines ASTERISK_VENDOR_ID 0x0004 but sends every chunk with vendor id 0.
# res_hep_pjsip.c transport_to_protocol_id(): 6 for a reliable transport (TCP, TLS, WS, WSS),
# else 17.
def asterisk(payload, src, sport, dst, dport, reliable=False, ts=(1764643888, 250000),
             capture_id=0, password=b"", uuid=b"", capture_name=b""):
    family, src_chunk, dst_chunk = addresses(src, dst)
    chunks = [u8(1, family), u8(2, 6 if reliable else 17), u16(7, sport), u16(8, dport),
              u32(9, ts[0]), u32(10, ts[1]), u8(11, 1), u32(12, capture_id), src_chunk,
              dst_chunk]
    if password:
        chunks.append(chunk(0x0e, password))
    chunks.append(chunk(0x11, uuid))
    if capture_name:
        chunks.append(chunk(0x13, capture_name))
    chunks.append(chunk(0x0f, payload))
    return packet(*chunks)


# FreeSWITCH: sofia-sip (github.com/freeswitch/sofia-sip), libsofia-sip-ua/tport/
# tport_logging.c, tport_capt_msg_hepv3() (capture-server "udp:host:port;hep=3;capture_id=N",
# HEPv3 and capture_id 200 by default): struct hep_generic as Asterisk's, then the addresses and
# the payload; no auth key, no correlation id; vendor id 0.  A message received has the peer as
# source.  Protocol: tcp 6, tls 22 ("FAKE"), sctp 132, ws and wss 6, else 17.  For IPv6 it copies
# sizeof(s_addr) = 4 bytes from su_sin.sin_addr, which in a sockaddr_in6 is sin6_flowinfo, into
# 16-byte address chunks: the addresses it sends are the flow label (0 here) and 12 zero bytes.
FREESWITCH_PROTO = {"udp": 17, "tcp": 6, "tls": 22, "sctp": 132, "ws": 6, "wss": 6}


def freeswitch(payload, peer, peer_port, local, local_port, received=True, tport="udp",
               ts=(1764643888, 999999), capture_id=200):
    if received:
        src, sport, dst, dport = peer, peer_port, local, local_port
    else:
        src, sport, dst, dport = local, local_port, peer, peer_port
    if ":" in src:
        family, src_chunk, dst_chunk = 10, chunk(5, bytes(16)), chunk(6, bytes(16))
    else:
        family, src_chunk, dst_chunk = addresses(src, dst)
    return packet(u8(1, family), u8(2, FREESWITCH_PROTO[tport]), u16(7, sport), u16(8, dport),
                  u32(9, ts[0]), u32(10, ts[1]), u8(11, 1), u32(12, capture_id), src_chunk,
                  dst_chunk, chunk(0x0f, payload))


# The example packet of the HEP3 Network Protocol Specification rev. 37 (2025-06-25,
# github.com/sipcapture/HEP docs/), octet for octet.
SPEC_EXAMPLE = bytes.fromhex(
    "48455033 0071"
    "0000 0001 0007 02"                  # protocol family = 2 (IPv4)
    "0000 0002 0007 11"                  # protocol ID = 17 (UDP)
    "0000 0003 000a d4ca0001"            # IPv4 source address = 212.202.0.1
    "0000 0004 000a 527400d3"            # IPv4 destination address = 82.116.0.211
    "0000 0007 0008 2eea"                # source port = 12010
    "0000 0008 0008 13c4"                # destination port = 5060
    "0000 0009 000a 4e4982cb"            # seconds timestamp 1313440459
    "0000 000a 000a 0001d4c0"            # microseconds timestamp offset 120000
    "0000 000b 0007 01"                  # 01 - SIP
    "0000 000c 000a 000000e4"            # capture ID (228)
    "0000 000f 0014" + b"INVITE sip:bob".hex())


def fields(hep_impl, data, auth_key=None):
    m = hep_impl.decode(data, auth_key)
    assert isinstance(m, hep_impl.HepMessage)
    d = m.as_dict()
    assert list(d) == list(hep_impl.FIELDS) == list(hep_pure.FIELDS)
    for name, value in d.items():
        assert getattr(m, name) == value
    assert all(type(d[name]) is int for name in ("family", "ip_proto", "sport", "dport",
                                                  "ts_sec", "ts_usec", "proto_type",
                                                  "capture_id", "skipped_chunks"))
    assert all(type(d[name]) is bytes for name in ("src", "dst", "payload", "correlation_id"))
    assert type(d["compressed"]) is bool
    return d


def expect(hep_impl, data, auth_key=None, **want):
    assert fields(hep_impl, data, auth_key) == want


def rejected(hep_impl, data, auth_key=None):
    with pytest.raises(hep_impl.HepError) as info:
        hep_impl.decode(data, auth_key)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.reason in hep_impl.REJECT_REASONS
    assert str(error) and "\n" not in str(error)
    return error.reason


# --- packets as the vendors send them --------------------------------------------------------

def test_spec_example_packet(hep_impl):
    assert len(SPEC_EXAMPLE) == 0x71
    expect(hep_impl, SPEC_EXAMPLE, family=2, ip_proto=17, src=addr("212.202.0.1"),
           dst=addr("82.116.0.211"), sport=12010, dport=5060, ts_sec=1313440459,
           ts_usec=120000, proto_type=1, capture_id=228, payload=b"INVITE sip:bob",
           compressed=False, correlation_id=b"", skipped_chunks=0)


def test_kamailio_siptrace_udp_with_auth_key_and_correlation_id(hep_impl):
    # the 401 Kamailio sends back to a guessing sipvicious, traced with
    # sip_trace("sip:192.0.2.50:9060", "$ci") and modparam("siptrace", "auth_key", "spoofme")
    data = kamailio(ASTERISK_401, "198.51.100.20", 5060, "203.0.113.9", 5062, capture_id=2001,
                    auth_key=b"spoofme", correlation_id=b"1627369848")
    expect(hep_impl, data, b"spoofme", family=2, ip_proto=17, src=addr("198.51.100.20"),
           dst=addr("203.0.113.9"), sport=5060, dport=5062, ts_sec=1764643888, ts_usec=108123,
           proto_type=1, capture_id=2001, payload=ASTERISK_401, compressed=False,
           correlation_id=b"1627369848", skipped_chunks=0)
    # the same packet read with no key configured
    assert hep_impl.decode(data).payload == ASTERISK_401


def test_kamailio_siptrace_defaults_request(hep_impl):
    data = kamailio(SIPVICIOUS_REGISTER, "203.0.113.9", 5062, "198.51.100.20", 5060)
    expect(hep_impl, data, family=2, ip_proto=17, src=addr("203.0.113.9"),
           dst=addr("198.51.100.20"), sport=5062, dport=5060, ts_sec=1764643888,
           ts_usec=108123, proto_type=1, capture_id=1, payload=SIPVICIOUS_REGISTER,
           compressed=False, correlation_id=b"", skipped_chunks=0)


@pytest.mark.parametrize("proto, ip_proto", [("tcp", 6), ("tls", 22), ("ws", 22), ("wss", 22),
                                             ("sctp", 132)])
def test_kamailio_siptrace_ipv6_transports(hep_impl, proto, ip_proto):
    data = kamailio(IPV6_TCP_403, "2001:db8::1", 5061, "2001:db8::9", 5070, proto=proto,
                    capture_id=7, auth_key=b"k")
    expect(hep_impl, data, b"k", family=10, ip_proto=ip_proto, src=addr("2001:db8::1"),
           dst=addr("2001:db8::9"), sport=5061, dport=5070, ts_sec=1764643888, ts_usec=108123,
           proto_type=1, capture_id=7, payload=IPV6_TCP_403, compressed=False,
           correlation_id=b"", skipped_chunks=0)


def test_kamailio_hlog_is_not_sip(hep_impl):
    # hlog() in siptrace_hep.c sends protocol type 0x64 (log) with the same layout
    data = kamailio(b"user 1001 failed to authenticate", "192.0.2.1", 5060, "192.0.2.50", 9060)
    data = data.replace(u8(11, 1), u8(11, 0x64))
    assert rejected(hep_impl, data) == "not_sip"


def test_asterisk_res_hep_ipv4_call_id_uuid(hep_impl):
    call_id = b"8a3f0e2c-5d6b-4c7a-9e8f-1a2b3c4d5e6f"
    data = asterisk(ASTERISK_401, "192.0.2.10", 5060, "203.0.113.9", 5062, capture_id=1234,
                    password=b"foo", uuid=call_id)
    expect(hep_impl, data, b"foo", family=2, ip_proto=17, src=addr("192.0.2.10"),
           dst=addr("203.0.113.9"), sport=5060, dport=5062, ts_sec=1764643888, ts_usec=250000,
           proto_type=1, capture_id=1234, payload=ASTERISK_401, compressed=False,
           correlation_id=call_id, skipped_chunks=0)


def test_asterisk_res_hep_ipv6_tls_channel_uuid_and_capture_name(hep_impl):
    data = asterisk(FREESWITCH_407, "2001:db8::5", 5061, "2001:db8:1::77", 40312, reliable=True,
                    uuid=b"PJSIP/3001-00000007", capture_name=b"asterisk")
    expect(hep_impl, data, family=10, ip_proto=6, src=addr("2001:db8::5"),
           dst=addr("2001:db8:1::77"), sport=5061, dport=40312, ts_sec=1764643888,
           ts_usec=250000, proto_type=1, capture_id=0, payload=FREESWITCH_407,
           compressed=False, correlation_id=b"PJSIP/3001-00000007", skipped_chunks=1)


def test_freeswitch_sofia_received_and_sent(hep_impl):
    received = freeswitch(INVITE_PROXY_AUTH, "203.0.113.77", 5080, "198.51.100.5", 5060)
    expect(hep_impl, received, family=2, ip_proto=17, src=addr("203.0.113.77"),
           dst=addr("198.51.100.5"), sport=5080, dport=5060, ts_sec=1764643888,
           ts_usec=999999, proto_type=1, capture_id=200, payload=INVITE_PROXY_AUTH,
           compressed=False, correlation_id=b"", skipped_chunks=0)
    sent = freeswitch(FREESWITCH_403, "203.0.113.44", 5060, "198.51.100.5", 5060,
                      received=False, tport="tls", capture_id=100)
    expect(hep_impl, sent, family=2, ip_proto=22, src=addr("198.51.100.5"),
           dst=addr("203.0.113.44"), sport=5060, dport=5060, ts_sec=1764643888,
           ts_usec=999999, proto_type=1, capture_id=100, payload=FREESWITCH_403,
           compressed=False, correlation_id=b"", skipped_chunks=0)


def test_freeswitch_sofia_ipv6_addresses_are_what_it_sends(hep_impl):
    """sofia-sip's IPv6 address chunks carry no address (see freeswitch()): decoded as sent."""
    data = freeswitch(FREESWITCH_403, "2001:db8::44", 5060, "2001:db8::5", 5060, tport="wss")
    expect(hep_impl, data, family=10, ip_proto=6, src=bytes(16), dst=bytes(16), sport=5060,
           dport=5060, ts_sec=1764643888, ts_usec=999999, proto_type=1, capture_id=200,
           payload=FREESWITCH_403, compressed=False, correlation_id=b"", skipped_chunks=0)


def _pcap_udp(path):
    """(src, sport, dst, dport, payload) of each Ethernet/IPv4/UDP frame of a classic pcap."""
    data = open(path, "rb").read()
    assert struct.unpack_from("<IHHiIII", data)[0] == 0xa1b2c3d4
    assert struct.unpack_from("<I", data, 20)[0] == 1
    pos, out = 24, []
    while pos < len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        ihl = (frame[14] & 15) * 4
        ip = frame[14:]
        sport, dport, ulen = struct.unpack_from("!HHH", ip, ihl)
        out.append((ip[12:16], sport, ip[16:20], dport, ip[ihl + 8:ihl + ulen]))
    return out


def test_a_recorded_capture_wrapped_as_kamailio_does(hep_impl):
    frames = _pcap_udp(os.path.join(ROOT, "tests", "data", "guess401.pcap"))
    assert len(frames) == 13
    for src, sport, dst, dport, payload in frames:
        data = kamailio(payload, socket.inet_ntoa(src), sport, socket.inet_ntoa(dst), dport)
        m = hep_impl.decode(data)
        assert (m.src, m.sport, m.dst, m.dport, m.payload) == (src, sport, dst, dport, payload)
        assert sip_pure.parse(m.payload) is not None


def test_the_payload_is_the_sip_message(hep_impl):
    from fastban import sip
    for name, message in sorted(SAMPLES.items()):
        m = hep_impl.decode(kamailio(message, "192.0.2.1", 5060, "192.0.2.2", 5060))
        assert m.payload == message
        assert sip.parse(m.payload).as_dict() == sip.parse(message).as_dict(), name


# --- compressed payloads ---------------------------------------------------------------------

def _zipped(body):
    """A Kamailio-like packet whose payload chunk is 0x0010 with this body."""
    plain = kamailio(b"x", "192.0.2.1", 5060, "192.0.2.2", 5060)
    return packet(plain[6:].replace(chunk(0x0f, b"x"), chunk(0x10, body)))


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress,
                                      lambda data: zlib.compress(data, 9)],
                         ids=["gzip", "zlib", "zlib9"])
def test_compressed_payloads_inflate(hep_impl, compress):
    m = hep_impl.decode(_zipped(compress(KAMAILIO_200_CONTACTS)))
    assert m.compressed is True
    assert m.payload == KAMAILIO_200_CONTACTS


def test_inflated_payload_at_the_limit(hep_impl):
    big = ASTERISK_401 + b"x" * (MAX_SIZE - len(ASTERISK_401))
    assert len(hep_impl.decode(_zipped(gzip.compress(big))).payload) == MAX_SIZE
    assert rejected(hep_impl, _zipped(gzip.compress(big + b"y"))) == "oversize"


def test_gzip_bomb_is_oversize(hep_impl):
    bomb = gzip.compress(bytes(50_000_000), 9)
    assert len(bomb) < 60_000
    error = pytest.raises(hep_impl.HepError, hep_impl.decode, _zipped(bomb)).value
    assert error.reason == "oversize"
    assert str(error) == "oversize: the payload is more than 65535 bytes"


@pytest.mark.parametrize("body, reason", [
    (b"not compressed at all", "compressed"),
    (gzip.compress(KAMAILIO_407)[:-9], "compressed"),                 # cut off
    (zlib.compress(KAMAILIO_407)[2:], "compressed"),                  # raw deflate
    (gzip.compress(KAMAILIO_407) + b"junk", "compressed"),            # bytes after the end
    (gzip.compress(KAMAILIO_407) * 2, "compressed"),                  # two gzip members
    (gzip.compress(b""), "no_payload"),
    (b"", "no_payload"),
])
def test_bad_compressed_payloads(hep_impl, body, reason):
    assert rejected(hep_impl, _zipped(body)) == reason


# --- what is skipped, repeated, accepted as input ---------------------------------------------

def test_unknown_and_vendor_chunks_are_skipped_and_counted(hep_impl):
    base = kamailio(KAMAILIO_407, "192.0.2.55", 5060, "198.51.100.1", 5060)
    extra = [chunk(0x0d, b"\x00\x1e"),                        # keep-alive timer
             chunk(0x12, b"\x00\x64"),                        # VLAN id
             chunk(0x13, b"node1"),                           # capture agent name
             chunk(0x14, bytes(8)), chunk(0x15, bytes(8)),    # MACs
             chunk(0x20, b"\x01\xb3"),                        # MOS
             chunk(0x29, b"group-a"),                         # group id
             chunk(0x0000, b""),                              # type 0
             chunk(0x0080, b"conversation-1", vendor=0x0008),  # Genesys (hep-js example)
             chunk(0x0001, b"\x09", vendor=0x0002),           # Kamailio's own ids
             chunk(0x0003, b"\x01\x02\x03", vendor=0x0004),   # Asterisk
             chunk(0x000f, b"not the payload", vendor=0x0001)]  # FreeSWITCH
    body = base[6:]
    cut = body.index(chunk(0x0f, KAMAILIO_407))
    data = packet(*extra[:5], body[:cut], *extra[5:], body[cut:])
    m = hep_impl.decode(data)
    assert m.skipped_chunks == len(extra)
    assert {k: v for k, v in m.as_dict().items() if k != "skipped_chunks"} == \
        {k: v for k, v in hep_impl.decode(base).as_dict().items() if k != "skipped_chunks"}


def test_a_repeated_chunk_the_last_wins(hep_impl):
    data = kamailio(KAMAILIO_407, "192.0.2.55", 5060, "198.51.100.1", 5060)
    data = packet(data[6:], u16(7, 1111), chunk(3, addr("192.0.2.99")), chunk(0x11, b"b"),
                  chunk(0x11, b"c"), u32(12, 5), chunk(0x0f, FREESWITCH_403))
    m = hep_impl.decode(data)
    assert (m.sport, m.src, m.correlation_id, m.capture_id, m.payload) == (
        1111, addr("192.0.2.99"), b"c", 5, FREESWITCH_403)
    # a compressed payload and a plain one: the last of them
    plain_last = packet(data[6:].replace(chunk(0x0f, FREESWITCH_403), b""),
                        chunk(0x10, gzip.compress(FREESWITCH_407)), chunk(0x0f, ASTERISK_401))
    m = hep_impl.decode(plain_last)
    assert (m.payload, m.compressed) == (ASTERISK_401, False)
    zipped_last = packet(data[6:], chunk(0x10, gzip.compress(FREESWITCH_407)))
    m = hep_impl.decode(zipped_last)
    assert (m.payload, m.compressed) == (FREESWITCH_407, True)
    # the last auth key is the one checked
    keyed = packet(kamailio(b"x", "192.0.2.1", 1, "192.0.2.2", 2, auth_key=b"old")[6:],
                   chunk(0x0e, b"new"))
    assert hep_impl.decode(keyed, b"new").payload == b"x"
    assert rejected(hep_impl, keyed, b"old") == "auth_key"


def test_bytes_bytearray_memoryview(hep_impl):
    data = asterisk(ASTERISK_401, "192.0.2.10", 5060, "203.0.113.9", 5062, uuid=b"u")
    want = hep_impl.decode(data).as_dict()
    assert hep_impl.decode(bytearray(data)).as_dict() == want
    assert hep_impl.decode(memoryview(data)).as_dict() == want
    assert hep_impl.decode(memoryview(b"pad" + data + b"pad")[3:-3]).as_dict() == want
    assert hep_impl.decode(memoryview(bytearray(data))).as_dict() == want
    assert [m.as_dict() for m in hep_impl.decode_batch(
        [data, bytearray(data), memoryview(data)])] == [want] * 3
    for wrong in ("HEP3", 3, None, [data]):
        with pytest.raises(TypeError):
            hep_impl.decode(wrong)
        with pytest.raises(TypeError):
            hep_impl.decode_batch([data, wrong])


def test_auth_key_forms(hep_impl):
    data = kamailio(KAMAILIO_407, "192.0.2.55", 5060, "198.51.100.1", 5060, auth_key=b"s3cret")
    for key in (b"s3cret", "s3cret", bytearray(b"s3cret"), memoryview(b"s3cret")):
        assert hep_impl.decode(data, key).payload == KAMAILIO_407
    for key in (None, b"", ""):           # no key configured: nothing checked
        assert hep_impl.decode(data, key).payload == KAMAILIO_407
    with pytest.raises(TypeError):
        hep_impl.decode(data, 1234)


# --- every reason a packet is refused ---------------------------------------------------------

GOOD = kamailio(KAMAILIO_407, "192.0.2.55", 5060, "198.51.100.1", 5060, auth_key=b"spoofme")
_BODY = GOOD[6:]


def _without(kind):
    """GOOD without its generic chunk of that type."""
    return packet(b"".join(c for c in _chunks(_BODY) if struct.unpack_from("!H", c, 2)[0] != kind))


def _chunks(body):
    out, pos = [], 0
    while pos < len(body):
        length = struct.unpack_from("!H", body, pos + 4)[0]
        out.append(body[pos:pos + length])
        pos += length
    return out


def _replace(kind, new):
    return packet(b"".join(new if struct.unpack_from("!H", c, 2)[0] == kind else c
                           for c in _chunks(_BODY)))


def _total(data, total):
    return data[:4] + struct.pack("!H", total) + data[6:]


# Kamailio siptrace with hep_version=2 (trace_send_hep2_duplicate): the HEPv2 header
HEPV2 = (bytes([2, 16, 2, 17]) + struct.pack("!HH", 5060, 5062) + addr("192.0.2.1")
         + addr("192.0.2.2") + struct.pack("<IIH", 1764643888, 0, 1) + KAMAILIO_407)

REJECTS = [
    ("hep_v2", HEPV2, None, "not_hep"),
    ("hep_v1", bytes([1, 16, 2, 17]) + bytes(12) + KAMAILIO_407, None, "not_hep"),
    ("eep3", b"EEP3" + GOOD[4:], None, "not_hep"),
    ("sip", KAMAILIO_407, None, "not_hep"),
    ("lower_case", b"hep3" + GOOD[4:], None, "not_hep"),
    ("two_bytes_wrong", b"HX", None, "not_hep"),
    ("empty", b"", None, "truncated"),
    ("three_bytes", b"HEP", None, "truncated"),
    ("five_bytes", b"HEP3\x00", None, "truncated"),
    ("header_only_says_more", b"HEP3\x00\x07", None, "truncated"),
    ("cut_in_payload", GOOD[:-1], None, "truncated"),
    ("cut_in_chunk_header", GOOD[:9], None, "truncated"),
    ("total_below_6", b"HEP3\x00\x05", None, "length"),
    ("total_zero", _total(GOOD, 0), None, "length"),
    ("trailing_byte", GOOD + b"\x00", None, "length"),
    ("two_packets", GOOD + GOOD, None, "length"),
    ("total_cuts_a_chunk_header", _total(GOOD + b"\x00\x00\x00", len(GOOD) + 3), None, "length"),
    ("chunk_length_5", packet(struct.pack("!HHH", 0, 0x0f, 5), b"abc"), None, "length"),
    ("chunk_length_0", packet(_BODY[:-len(chunk(0x0f, KAMAILIO_407))],
                              struct.pack("!HHH", 0, 0x0f, 0)), None, "length"),
    ("chunk_past_total", packet(_BODY, struct.pack("!HHH", 0, 0x0f, 200), b"x" * 10), None,
     "length"),
    ("vendor_chunk_past_total", packet(_BODY, struct.pack("!HHH", 4, 1, 7)), None, "length"),
    ("family_2_bytes", _replace(1, chunk(1, b"\x00\x02")), None, "length"),
    ("proto_empty", _replace(2, chunk(2, b"")), None, "length"),
    ("ipv4_src_16_bytes", _replace(3, chunk(3, bytes(16))), None, "length"),
    ("ipv4_dst_3_bytes", _replace(4, chunk(4, bytes(3))), None, "length"),
    ("ipv6_src_4_bytes", packet(_BODY, chunk(5, bytes(4))), None, "length"),
    ("port_4_bytes", _replace(7, chunk(7, struct.pack("!I", 5060))), None, "length"),
    ("dport_1_byte", _replace(8, chunk(8, b"\x13")), None, "length"),
    ("ts_8_bytes", _replace(9, chunk(9, bytes(8))), None, "length"),
    ("usec_2_bytes", _replace(10, chunk(10, bytes(2))), None, "length"),
    ("proto_type_4_bytes", _replace(11, u32(11, 1)), None, "length"),
    ("capture_id_2_bytes", _replace(12, u16(12, 1)), None, "length"),
    ("datagram_over_65535", b"HEP3\xff\xff" + bytes(65530), None, "oversize"),
    ("gzip_bomb", _zipped(gzip.compress(bytes(1_000_000))), None, "oversize"),
    ("auth_missing", _without(0x0e), b"spoofme", "auth_key"),
    ("auth_wrong", GOOD, b"spoofm3", "auth_key"),
    ("auth_prefix", GOOD, b"spoof", "auth_key"),
    ("auth_longer", GOOD, b"spoofme!", "auth_key"),
    ("auth_with_nul", _replace(0x0e, chunk(0x0e, b"spoofme\x00")), b"spoofme", "auth_key"),
    ("auth_case", GOOD, b"SPOOFME", "auth_key"),
    ("proto_type_missing", _without(0x0b), None, "not_sip"),
    ("proto_type_rtcp", _replace(0x0b, u8(0x0b, 5)), None, "not_sip"),
    ("proto_type_0", _replace(0x0b, u8(0x0b, 0)), None, "not_sip"),
    ("family_missing", _without(1), None, "no_address"),
    ("family_unix", _replace(1, u8(1, 1)), None, "no_address"),
    ("family_6_not_10", _replace(1, u8(1, 6)), None, "no_address"),
    ("ipv6_family_ipv4_addresses", _replace(1, u8(1, 10)), None, "no_address"),
    ("src_missing", _without(3), None, "no_address"),
    ("dst_missing", _without(4), None, "no_address"),
    ("sport_missing", _without(7), None, "no_address"),
    ("dport_missing", _without(8), None, "no_address"),
    ("payload_missing", _without(0x0f), None, "no_payload"),
    ("payload_empty", _replace(0x0f, chunk(0x0f, b"")), None, "no_payload"),
    ("payload_only_vendor", packet(_without(0x0f)[6:], chunk(0x0f, KAMAILIO_407, vendor=2)),
     None, "no_payload"),
    ("not_inflating", _replace(0x0f, chunk(0x10, b"\x1f\x8b\x08\x00garbage")), None,
     "compressed"),
]


@pytest.mark.parametrize("name, data, key, reason", REJECTS, ids=[r[0] for r in REJECTS])
def test_rejects(hep_impl, name, data, key, reason):
    assert rejected(hep_impl, data, key) == reason
    assert hep_impl.decode_batch([data], key) == [reason]


def test_every_reason_is_pinned():
    assert {r[3] for r in REJECTS} == set(hep_pure.REJECT_REASONS)
    assert hep.REJECT_REASONS == hep_pure.REJECT_REASONS


def test_good_is_good(hep_impl):
    assert hep_impl.decode(GOOD, b"spoofme").payload == KAMAILIO_407


def test_the_checks_come_in_the_documented_order(hep_impl):
    # the key is checked before what the packet says about itself
    assert rejected(hep_impl, _without(0x0b), b"other") == "auth_key"
    # not SIP before the addresses, the addresses before the payload
    no_type_no_family = packet(b"".join(c for c in _chunks(_BODY)
                                        if struct.unpack_from("!H", c, 2)[0] not in (1, 0x0b)))
    assert rejected(hep_impl, no_type_no_family) == "not_sip"
    no_family_no_payload = packet(b"".join(c for c in _chunks(_BODY)
                                           if struct.unpack_from("!H", c, 2)[0] not in (1, 0x0f)))
    assert rejected(hep_impl, no_family_no_payload) == "no_address"
    # a bad chunk length is found while walking, before the key
    assert rejected(hep_impl, _replace(1, chunk(1, b"\x00\x02")), b"other") == "length"


def test_error_messages(hep_impl):
    def message(data, key=None):
        return str(pytest.raises(hep_impl.HepError, hep_impl.decode, data, key).value)

    assert message(KAMAILIO_407) == "not HEPv3: the data does not begin with b'HEP3'"
    assert message(GOOD[:-1]) == f"truncated: {len(GOOD) - 1} bytes, the header says {len(GOOD)}"
    assert message(GOOD + b"\x00") == \
        f"bad length: {len(GOOD) + 1} bytes, 1 after the {len(GOOD)} the header says"
    assert message(_replace(7, chunk(7, bytes(4)))) == \
        "bad length: chunk 0x0007 at offset 40 is 10 bytes, not 8"
    assert message(GOOD, b"x") == "auth_key: the authentication key does not match"
    assert message(_replace(1, u8(1, 1))) == \
        "no address: IP family 1, neither 2 (AF_INET) nor 10 (AF_INET6)"
    assert message(_replace(1, u8(1, 10))) == "no address: no source address chunk (0x0005)"


def test_error_pickles_and_keeps_its_reason(hep_impl):
    error = pytest.raises(hep_impl.HepError, hep_impl.decode, GOOD[:-1]).value
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.reason, str(again)) == (type(error), error.reason, str(error))


def test_message_pickles_and_repr(hep_impl):
    m = hep_impl.decode(kamailio(ASTERISK_401, "2001:db8::1", 5060, "2001:db8::9", 5062))
    assert pickle.loads(pickle.dumps(m)).as_dict() == m.as_dict()
    assert repr(m) == ("<HepMessage [2001:db8::1]:5060 -> [2001:db8::9]:5062 ip_proto=17 "
                       f"capture_id=1 {len(ASTERISK_401)} bytes>")


def test_message_is_read_only_in_cython():
    cy = load_impl("fastban._hepparser")
    m = cy.decode(GOOD)
    with pytest.raises(AttributeError):
        m.sport = 1


def test_decode_batch_mixes_good_and_bad(hep_impl):
    a = asterisk(ASTERISK_401, "192.0.2.10", 5060, "203.0.113.9", 5062, password=b"spoofme",
                 uuid=b"1627369848")
    f = freeswitch(FREESWITCH_403, "203.0.113.44", 5060, "198.51.100.5", 5060)
    batch = [GOOD, GOOD[:-1], a, b"", KAMAILIO_407, f, _without(0x0b), GOOD + b"\x00", a]
    out = hep_impl.decode_batch(batch)
    assert [m if isinstance(m, str) else m.payload for m in out] == [
        KAMAILIO_407, "truncated", ASTERISK_401, "truncated", "not_hep", FREESWITCH_403,
        "not_sip", "length", ASTERISK_401]
    keyed = hep_impl.decode_batch(iter(batch), b"spoofme")
    assert [m if isinstance(m, str) else m.payload for m in keyed] == [
        KAMAILIO_407, "truncated", ASTERISK_401, "truncated", "not_hep", "auth_key",
        "not_sip", "length", ASTERISK_401]
    assert hep_impl.decode_batch([]) == []


# --- both implementations agree -------------------------------------------------------------

def corpus():
    """Good packets of every sender, and damaged ones."""
    good = [SPEC_EXAMPLE, GOOD]
    for i, message in enumerate(sorted(SAMPLES.values())):
        good.append(kamailio(message, "203.0.113.%d" % i, 5060 + i, "198.51.100.20", 5060,
                             proto=("udp", "tcp", "tls")[i % 3], capture_id=i,
                             correlation_id=b"c%d" % i if i % 2 else b""))
        good.append(asterisk(message, "2001:db8::%x" % (i + 1), 5061, "2001:db8::5", 5060,
                             reliable=bool(i % 2), uuid=b"call-%d" % i))
        good.append(freeswitch(message, "192.0.2.%d" % i, 5060, "192.0.2.250", 5080,
                               received=bool(i % 2)))
    good.append(_zipped(gzip.compress(KAMAILIO_200_CONTACTS)))
    good.append(_zipped(zlib.compress(KAMAILIO_WWW_401)))
    damaged = []
    for data in good[:12]:
        damaged += [data[:cut] for cut in range(0, len(data), 3)]
        for at in range(0, min(len(data), 140)):
            for value in (0x00, 0x06, 0xff, data[at] ^ 0x01):
                damaged.append(data[:at] + bytes([value]) + data[at + 1:])
        damaged += [data + b"\x00", data[:4] + data[6:], b"HEP3\x00\x00" + data[6:]]
    return good, damaged


def outcome(mod, data, key=None):
    try:
        m = mod.decode(data, key)
    except mod.HepError as error:
        return ("refused", error.reason, str(error))
    assert len(m.payload) <= MAX_SIZE
    return ("decoded", m.as_dict(), repr(m))


def test_implementations_agree_on_a_corpus(both):
    pure, cy = both
    good, damaged = corpus()
    for data in good:
        assert outcome(pure, data)[0] == "decoded"
    refused = set()
    for data in good + damaged:
        for key in (None, b"spoofme"):
            a, b = outcome(pure, data, key), outcome(cy, data, key)
            assert a == b, data
            if a[0] == "refused":
                refused.add(a[1])
    assert refused >= {"not_hep", "truncated", "length", "auth_key", "not_sip", "no_address",
                       "no_payload"}
    batch = good + damaged
    assert [m if isinstance(m, str) else m.as_dict() for m in pure.decode_batch(batch)] == \
        [m if isinstance(m, str) else m.as_dict() for m in cy.decode_batch(batch)]


def test_implementations_share_their_tables(both):
    pure, cy = both
    assert cy.MESSAGES == pure.MESSAGES
    assert {reason for reason, _ in pure.MESSAGES.values()} == set(pure.REJECT_REASONS)
    assert (cy.REJECT_REASONS, cy.FIELDS, cy.MAX_HEP_SIZE) == \
        (pure.REJECT_REASONS, pure.FIELDS, pure.MAX_HEP_SIZE)
    assert cy.MAX_SIZE == sip_pure.MAX_SIZE == pure.MAX_SIZE


def test_implementations_agree_on_rejects(both):
    pure, cy = both
    for name, data, key, reason in REJECTS:
        assert outcome(pure, data, key) == outcome(cy, data, key), name


# --- the front -----------------------------------------------------------------------------

def _front(env_value):
    env = dict(os.environ)
    env.pop("FASTBAN_PURE_PYTHON", None)
    if env_value is not None:
        env["FASTBAN_PURE_PYTHON"] = env_value
    code = ("from fastban import hep; m = hep.decode(%r); "
            "print(hep.IMPLEMENTATION, m.dport, hep.HepMessage.__module__)" % GOOD)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return out.stdout.split()


def test_front_forced_pure():
    assert _front("1") == ["python", "5060", "fastban.hep_pure"]


def test_front_prefers_extension():
    load_impl("fastban._hepparser")
    assert _front(None) == ["cython", "5060", "fastban._hepparser"]
    assert _front("0")[0] == "cython"


def test_front_api():
    assert hep.IMPLEMENTATION in ("cython", "python")
    assert hep.MAX_HEP_SIZE == 65535
    m = hep.decode(GOOD)
    assert isinstance(m, hep.HepMessage) and m.payload == KAMAILIO_407
    assert [x.dport for x in hep.decode_batch([GOOD])] == [5060]
    assert issubclass(hep.HepError, ValueError)
