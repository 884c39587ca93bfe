"""Pure-Python HEPv3 decoder: the fallback, and the reference for ``fastban._hepparser``.

Both modules expose the same API (``decode``, ``decode_batch``, ``HepMessage``, ``HepError``,
``MAX_HEP_SIZE``, ``REJECT_REASONS``, ``FIELDS``) and must give identical results, error
messages included; ``tests/test_hep_decode.py`` and ``tests/test_hep_fuzz.py`` run against both.

The format (HEP3 Network Protocol Specification rev. 37, github.com/sipcapture/HEP):

* a 6-byte header: the 4 bytes ``b"HEP3"``, then a uint16 total length (network byte order)
  counting the whole packet, this header included;
* then chunks, each a uint16 vendor id, a uint16 type id, a uint16 chunk length (counting the
  6-byte chunk header) and the chunk's data; every integer is in network byte order.

Generic chunks (vendor id 0x0000) read here, with the size their data must have:

======  ===========================================  ====================  ======
type    meaning                                      field                 data
======  ===========================================  ====================  ======
0x0001  IP family: 2 (AF_INET) or 10 (AF_INET6)      ``family``            uint8
0x0002  IP protocol id (17 UDP, 6 TCP, 132 SCTP...)  ``ip_proto``          uint8
0x0003  IPv4 source / 0x0004 destination address     ``src`` / ``dst``     4
0x0005  IPv6 source / 0x0006 destination address     ``src`` / ``dst``     16
0x0007  source / 0x0008 destination port             ``sport``/``dport``   uint16
0x0009  timestamp, seconds since the epoch           ``ts_sec``            uint32
0x000a  timestamp, microseconds                      ``ts_usec``           uint32
0x000b  protocol type (1 = SIP)                      ``proto_type``        uint8
0x000c  capture agent id                             ``capture_id``        uint32
0x000e  authentication key                           (checked, not kept)   octets
0x000f  captured payload                             ``payload``           octets
0x0010  compressed payload (gzip or zlib)            ``payload``           octets
0x0011  correlation id                               ``correlation_id``    octets
======  ===========================================  ====================  ======

Every other chunk is skipped and counted in ``skipped_chunks``: those of a vendor id other
than 0 (0x0001 FreeSWITCH, 0x0002 Kamailio, 0x0003 OpenSIPS, 0x0004 Asterisk, 0x0005 Homer...)
and the generic ones not listed (0x000d keep-alive timer, 0x0012 VLAN id, 0x0013 capture
agent name, 0x0014/0x0015 MAC addresses, 0x0016 and up, and type 0).  Chunks may come in any
order; when one repeats, the last one wins (0x000f and 0x0010 are one payload: the last of
them).  Absent: ``ts_sec``, ``ts_usec``, ``capture_id``, ``ip_proto`` are 0,
``correlation_id`` b"".  The IP protocol is reported as sent: Kamailio's siptrace and
FreeSWITCH (sofia-sip) send 22 (IPPROTO_IDP, "fake") for TLS, Kamailio for WS/WSS too,
FreeSWITCH 6 for WS/WSS, Asterisk 6 for every reliable transport.

What is refused, as ``HepError(reason, message)`` (``reason`` one of ``REJECT_REASONS``,
``str()`` one line saying why; the same text in both modules).  The checks, in their order:

1. ``not_hep``: the data does not begin with ``b"HEP3"``: HEPv1/v2 are not taken (Kamailio's
   siptrace sends HEPv1 unless ``hep_version`` is set to 3), nor the "EEP3" the spec's header
   table names; ``truncated`` when fewer than 4 bytes came and they begin "HEP3";
2. ``truncated``: shorter than the 6 bytes of the header;
3. ``oversize``: longer than ``MAX_HEP_SIZE`` (65535) bytes;
4. ``length``: a total length under 6; then ``truncated``: fewer bytes than the total length;
   then ``length``: more (trailing bytes: one packet per datagram);
5. ``length``, met while walking the chunks: a chunk header or a chunk running past the total
   length, a chunk length under 6, or a chunk of the table above with a fixed size
   (0x0001-0x000c) whose length is not 6 + that size (a vendor chunk is never judged);
6. ``auth_key``: ``auth_key`` was given (not None, not empty) and chunk 0x000e is absent or
   differs, compared in constant time.  The key is the exact bytes of the chunk, no trailing
   NUL: Kamailio siptrace (modparam ``auth_key``), Asterisk res_hep (``capture_password``),
   captagent and heplify all send strlen(key) bytes, so the same string is configured here;
   FreeSWITCH (sofia-sip) sends no key at all, so it cannot feed a keyed input;
7. ``not_sip``: no protocol type chunk, or one that is not 1 (SIP) (Kamailio's hlog() sends
   100, RTCP reports are 5);
8. ``no_address``: no family chunk, or a family other than 2/10; no source or destination
   address chunk of that family; no source or destination port;
9. ``no_payload``: neither 0x000f nor 0x0010, or an empty one;
10. ``compressed``: a 0x0010 payload that is not one complete gzip or zlib stream (inflated with
    ``zlib.decompressobj(wbits=47)``; raw deflate is not taken) or has bytes after its end;
    ``oversize``: more than ``fastban.sip_pure.MAX_SIZE`` (65535) bytes once inflated (the
    inflation stops at MAX_SIZE + 1 bytes: a gzip bomb costs no more than that);
    ``no_payload``: it inflates to nothing.

The addresses are returned as sent, not judged: FreeSWITCH's sofia-sip fills its IPv6 address
chunks from the wrong field (4 bytes of sin6_flowinfo, then zeros), so its IPv6 packets decode
with ``src == dst == bytes(16)`` (usually).

Nothing else is raised for any content of ``data``.  ``data`` is bytes, bytearray or
memoryview (the last two are copied); another type, or an ``auth_key`` that is not bytes-like
or str (str is taken as UTF-8), is a programming error: TypeError.  The payload is not checked
to be SIP: ``fastban.sip`` parses it.
"""

import hmac
import socket
import struct
import zlib

from fastban.sip_pure import MAX_SIZE

__all__ = ["FIELDS", "MAX_HEP_SIZE", "REJECT_REASONS", "HepError", "HepMessage", "decode",
           "decode_batch"]

MAX_HEP_SIZE = 65535
REJECT_REASONS = ("not_hep", "truncated", "length", "oversize", "auth_key", "not_sip",
                  "no_payload", "no_address", "compressed")
FIELDS = ("family", "ip_proto", "src", "dst", "sport", "dport", "ts_sec", "ts_usec",
          "proto_type", "capture_id", "payload", "compressed", "correlation_id",
          "skipped_chunks")

# The message of each way to fail: (reason, template). fastban._hepparser has the same table.
MESSAGES = {
    "magic": ("not_hep", "not HEPv3: the data does not begin with b'HEP3'"),
    "short": ("truncated", "truncated: {0} bytes, fewer than the 6 of the HEP3 header"),
    "total_short": ("truncated", "truncated: {0} bytes, the header says {1}"),
    "datagram_big": ("oversize", "oversize: {0} bytes, more than " + str(MAX_HEP_SIZE)),
    "total_small": ("length", "bad length: the header says {0} bytes, fewer than its own 6"),
    "trailing": ("length", "bad length: {0} bytes, {2} after the {1} the header says"),
    "chunk_header": ("length", "bad length: a chunk header at offset {0} runs past the total "
                               "length {1}"),
    "chunk_small": ("length", "bad length: chunk {0:#06x}/{1:#06x} at offset {2} says {3} "
                              "bytes, fewer than its 6-byte header"),
    "chunk_past": ("length", "bad length: chunk {0:#06x}/{1:#06x} at offset {2} of {3} bytes "
                             "runs past the total length {4}"),
    "fixed": ("length", "bad length: chunk {0:#06x} at offset {1} is {2} bytes, not {3}"),
    "auth_missing": ("auth_key", "auth_key: no authentication key chunk (0x000e)"),
    "auth_wrong": ("auth_key", "auth_key: the authentication key does not match"),
    "type_missing": ("not_sip", "not SIP: no protocol type chunk (0x000b)"),
    "type_wrong": ("not_sip", "not SIP: protocol type {0}, not 1"),
    "family_missing": ("no_address", "no address: no IP family chunk (0x0001)"),
    "family_wrong": ("no_address", "no address: IP family {0}, neither 2 (AF_INET) nor 10 "
                                   "(AF_INET6)"),
    "src_missing": ("no_address", "no address: no source address chunk ({0:#06x})"),
    "dst_missing": ("no_address", "no address: no destination address chunk ({0:#06x})"),
    "sport_missing": ("no_address", "no address: no source port chunk (0x0007)"),
    "dport_missing": ("no_address", "no address: no destination port chunk (0x0008)"),
    "payload_missing": ("no_payload", "no payload: no payload chunk (0x000f or 0x0010)"),
    "payload_empty": ("no_payload", "no payload: the payload chunk is empty"),
    "inflated_empty": ("no_payload", "no payload: the compressed payload inflates to nothing"),
    "inflate": ("compressed", "compressed: the payload is not a complete gzip or zlib stream"),
    "inflate_trailing": ("compressed", "compressed: {0} bytes after the end of the compressed "
                                       "stream"),
    "payload_big": ("oversize", "oversize: the payload is more than " + str(MAX_SIZE)
                                + " bytes"),
}

_CHUNK = struct.Struct("!HHH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
# generic chunk type -> its length when fixed (6 + the data's size)
_FIXED = {1: 7, 2: 7, 3: 10, 4: 10, 5: 22, 6: 22, 7: 8, 8: 8, 9: 10, 10: 10, 11: 7, 12: 10}
_READ = frozenset(_FIXED) | {14, 15, 16, 17}


class HepError(ValueError):
    """A packet refused; ``reason`` is one of REJECT_REASONS, ``str()`` says why."""

    def __init__(self, reason, message):
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self):
        return self.message


def _error(key, *values):
    reason, template = MESSAGES[key]
    return HepError(reason, template.format(*values))


class HepMessage:
    """One decoded HEPv3 packet; the fields are listed in ``FIELDS`` and ``as_dict()``."""

    __slots__ = FIELDS

    def __init__(self):
        self.family = 0
        self.ip_proto = 0
        self.src = b""
        self.dst = b""
        self.sport = 0
        self.dport = 0
        self.ts_sec = 0
        self.ts_usec = 0
        self.proto_type = 0
        self.capture_id = 0
        self.payload = b""
        self.compressed = False
        self.correlation_id = b""
        self.skipped_chunks = 0

    def as_dict(self):
        return {name: getattr(self, name) for name in FIELDS}

    def __reduce__(self):
        return _restore, tuple(getattr(self, name) for name in FIELDS)

    def __repr__(self):
        return _repr(self)


def _restore(*values):
    message = HepMessage()
    for name, value in zip(FIELDS, values):
        setattr(message, name, value)
    return message


def _repr(m):
    """Shared with fastban._hepparser (same text)."""
    try:
        src = socket.inet_ntop(socket.AF_INET6 if len(m.src) == 16 else socket.AF_INET, m.src)
        dst = socket.inet_ntop(socket.AF_INET6 if len(m.dst) == 16 else socket.AF_INET, m.dst)
    except (ValueError, OSError):
        src, dst = m.src.hex(), m.dst.hex()
    if m.family == 10:
        src, dst = f"[{src}]", f"[{dst}]"
    return (f"<HepMessage {src}:{m.sport} -> {dst}:{m.dport} ip_proto={m.ip_proto} "
            f"capture_id={m.capture_id} {len(m.payload)} bytes{' inflated' * m.compressed}>")


def _as_bytes(data):
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"decode() needs bytes, bytearray or memoryview, not {type(data).__name__}")


def _as_key(auth_key):
    if auth_key is None or isinstance(auth_key, bytes):
        return auth_key or None
    if isinstance(auth_key, (bytearray, memoryview)):
        return bytes(auth_key) or None
    if isinstance(auth_key, str):
        return auth_key.encode() or None
    raise TypeError(f"auth_key must be bytes or None, not {type(auth_key).__name__}")


def _inflate(body):
    """The inflated payload, or the MESSAGES key (and value) of why not."""
    inflater = zlib.decompressobj(wbits=47)   # 32 + 15: a gzip or a zlib header
    try:
        out = inflater.decompress(body, MAX_SIZE + 1)
    except zlib.error:
        return None, "inflate", 0
    if len(out) > MAX_SIZE:
        return None, "payload_big", 0
    if not inflater.eof:
        return None, "inflate", 0
    if inflater.unused_data:
        return None, "inflate_trailing", len(inflater.unused_data)
    return out, None, 0


def _decode(data, key):
    """bytes -> HepMessage; raises HepError."""
    n = len(data)
    if data[:4] != b"HEP3":
        if n < 4 and b"HEP3".startswith(data):
            raise _error("short", n)
        raise _error("magic")
    if n < 6:
        raise _error("short", n)
    if n > MAX_HEP_SIZE:
        raise _error("datagram_big", n)
    total = _U16.unpack_from(data, 4)[0]
    if total < 6:
        raise _error("total_small", total)
    if n < total:
        raise _error("total_short", n, total)
    if n > total:
        raise _error("trailing", n, total, n - total)
    family = proto_type = sport = dport = src4 = dst4 = src6 = dst6 = None
    auth = payload = None
    ip_proto = ts_sec = ts_usec = capture_id = skipped = 0
    compressed = False
    correlation_id = b""
    unpack_chunk = _CHUNK.unpack_from
    pos = 6
    while pos < total:
        if total - pos < 6:
            raise _error("chunk_header", pos, total)
        vendor, kind, length = unpack_chunk(data, pos)
        if length < 6:
            raise _error("chunk_small", vendor, kind, pos, length)
        end = pos + length
        if end > total:
            raise _error("chunk_past", vendor, kind, pos, length, total)
        if vendor or kind not in _READ:
            skipped += 1
            pos = end
            continue
        if kind <= 12:
            if length != _FIXED[kind]:
                raise _error("fixed", kind, pos, length, _FIXED[kind])
            at = pos + 6
            if kind == 1:
                family = data[at]
            elif kind == 2:
                ip_proto = data[at]
            elif kind == 3:
                src4 = data[at:end]
            elif kind == 4:
                dst4 = data[at:end]
            elif kind == 5:
                src6 = data[at:end]
            elif kind == 6:
                dst6 = data[at:end]
            elif kind == 7:
                sport = _U16.unpack_from(data, at)[0]
            elif kind == 8:
                dport = _U16.unpack_from(data, at)[0]
            elif kind == 9:
                ts_sec = _U32.unpack_from(data, at)[0]
            elif kind == 10:
                ts_usec = _U32.unpack_from(data, at)[0]
            elif kind == 11:
                proto_type = data[at]
            else:
                capture_id = _U32.unpack_from(data, at)[0]
        elif kind == 15 or kind == 16:
            payload = data[pos + 6:end]
            compressed = kind == 16
        elif kind == 14:
            auth = data[pos + 6:end]
        else:
            correlation_id = data[pos + 6:end]
        pos = end

    if key is not None:
        if auth is None:
            raise _error("auth_missing")
        if not hmac.compare_digest(auth, key):
            raise _error("auth_wrong")
    if proto_type is None:
        raise _error("type_missing")
    if proto_type != 1:
        raise _error("type_wrong", proto_type)
    if family is None:
        raise _error("family_missing")
    if family == 2:
        src, dst, src_kind = src4, dst4, 3
    elif family == 10:
        src, dst, src_kind = src6, dst6, 5
    else:
        raise _error("family_wrong", family)
    if src is None:
        raise _error("src_missing", src_kind)
    if dst is None:
        raise _error("dst_missing", src_kind + 1)
    if sport is None:
        raise _error("sport_missing")
    if dport is None:
        raise _error("dport_missing")
    if payload is None:
        raise _error("payload_missing")
    if not payload:
        raise _error("payload_empty")
    if compressed:
        payload, failure, value = _inflate(payload)
        if failure is not None:
            raise _error(failure, value)
        if not payload:
            raise _error("inflated_empty")
    if len(payload) > MAX_SIZE:
        raise _error("payload_big")

    m = HepMessage.__new__(HepMessage)
    m.family = family
    m.ip_proto = ip_proto
    m.src = src
    m.dst = dst
    m.sport = sport
    m.dport = dport
    m.ts_sec = ts_sec
    m.ts_usec = ts_usec
    m.proto_type = proto_type
    m.capture_id = capture_id
    m.payload = payload
    m.compressed = compressed
    m.correlation_id = correlation_id
    m.skipped_chunks = skipped
    return m


def decode(data, auth_key=None):
    """One HEPv3 packet (bytes, bytearray, memoryview) -> HepMessage; raises HepError.

    auth_key: when given (not None, not empty), the packet must carry exactly this key.
    """
    return _decode(_as_bytes(data), _as_key(auth_key))


def decode_batch(datagrams, auth_key=None):
    """An iterable of packets -> a list, in the same order, of HepMessage or the reason
    (a str of REJECT_REASONS) each was refused for."""
    key = _as_key(auth_key)
    out = []
    for data in datagrams:
        try:
            out.append(_decode(_as_bytes(data), key))
        except HepError as error:
            out.append(error.reason)
    return out
