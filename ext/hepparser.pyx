# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled HEPv3 decoder (``fastban._hepparser``).

Same API and same results (error messages included) as ``fastban.hep_pure``, which documents
the format and the reasons a packet is refused.

The chunks are walked with a C pointer over the bytes of the packet; a decoded packet costs one
HepMessage and the bytes of its addresses, payload and correlation id.  ``decode_batch`` gives a
refused packet's reason without making an exception.  Only a compressed payload goes through
Python (zlib), as in the pure module.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize

import socket
import zlib

__all__ = ["FIELDS", "MAX_HEP_SIZE", "REJECT_REASONS", "HepError", "HepMessage", "decode",
           "decode_batch"]

ctypedef const unsigned char* cptr

cdef extern from *:
    """
    /* Constant-time comparison of two buffers of the same length (CPython's _tscmp). */
    static int fastban_hep_equal(const unsigned char *a, const unsigned char *b, Py_ssize_t n)
    {
        const volatile unsigned char *left = a;
        const volatile unsigned char *right = b;
        unsigned char result = 0;
        Py_ssize_t i;
        for (i = 0; i < n; i++)
            result |= left[i] ^ right[i];
        return result == 0;
    }
    """
    int fastban_hep_equal(const unsigned char *a, const unsigned char *b, Py_ssize_t n) noexcept

MAX_HEP_SIZE = 65535
MAX_SIZE = 65535                    # fastban.sip_pure.MAX_SIZE: the largest payload
cdef Py_ssize_t C_MAX_HEP_SIZE = 65535
cdef Py_ssize_t C_MAX_SIZE = 65535

REJECT_REASONS = ("not_hep", "truncated", "length", "oversize", "auth_key", "not_sip",
                  "no_payload", "no_address", "compressed")
FIELDS = ("family", "ip_proto", "src", "dst", "sport", "dport", "ts_sec", "ts_usec",
          "proto_type", "capture_id", "payload", "compressed", "correlation_id",
          "skipped_chunks")

# The message of each way to fail: (reason, template), as in fastban.hep_pure.
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

# failure codes: an index into _KEYS (0 = none)
cdef enum:
    E_NONE = 0
    E_MAGIC, E_SHORT, E_TOTAL_SHORT, E_DATAGRAM_BIG, E_TOTAL_SMALL, E_TRAILING
    E_CHUNK_HEADER, E_CHUNK_SMALL, E_CHUNK_PAST, E_FIXED
    E_AUTH_MISSING, E_AUTH_WRONG, E_TYPE_MISSING, E_TYPE_WRONG
    E_FAMILY_MISSING, E_FAMILY_WRONG, E_SRC_MISSING, E_DST_MISSING, E_SPORT_MISSING
    E_DPORT_MISSING, E_PAYLOAD_MISSING, E_PAYLOAD_EMPTY, E_INFLATED_EMPTY, E_INFLATE
    E_INFLATE_TRAILING, E_PAYLOAD_BIG

cdef tuple _KEYS = (
    None, "magic", "short", "total_short", "datagram_big", "total_small", "trailing",
    "chunk_header", "chunk_small", "chunk_past", "fixed",
    "auth_missing", "auth_wrong", "type_missing", "type_wrong",
    "family_missing", "family_wrong", "src_missing", "dst_missing", "sport_missing",
    "dport_missing", "payload_missing", "payload_empty", "inflated_empty", "inflate",
    "inflate_trailing", "payload_big",
)
# the reason of each failure code (interned str, shared by every result of decode_batch)
cdef tuple _REASONS = tuple([None] + [MESSAGES[key][0] for key in _KEYS[1:]])
cdef dict _CODE_OF = {key: code for code, key in enumerate(_KEYS) if key is not None}

# generic chunk type -> its fixed length (6 + the data's size), 0 when not fixed
cdef int _FIXED[13]
_FIXED[:] = [0, 7, 7, 10, 10, 22, 22, 8, 8, 10, 10, 7, 10]

# the values of the last failure (the GIL is held from the walk to the message)
cdef long _fail_values[5]


class HepError(ValueError):
    """A packet refused; ``reason`` is one of REJECT_REASONS, ``str()`` says why."""

    def __init__(self, reason, message):
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self):
        return self.message


@cython.no_gc  # only bytes and C fields: no reference cycles possible
@cython.freelist(64)
cdef class HepMessage:
    """One decoded HEPv3 packet (read-only); the fields are listed in ``FIELDS`` and
    ``as_dict()``."""

    cdef readonly int family
    cdef readonly int ip_proto
    cdef readonly bytes src
    cdef readonly bytes dst
    cdef readonly int sport
    cdef readonly int dport
    cdef readonly unsigned int ts_sec
    cdef readonly unsigned int ts_usec
    cdef readonly int proto_type
    cdef readonly unsigned int capture_id
    cdef readonly bytes payload
    cdef readonly bint compressed
    cdef readonly bytes correlation_id
    cdef readonly int skipped_chunks

    def __cinit__(self):
        self.src = self.dst = self.payload = self.correlation_id = b""

    def as_dict(self):
        return {"family": self.family, "ip_proto": self.ip_proto, "src": self.src,
                "dst": self.dst, "sport": self.sport, "dport": self.dport,
                "ts_sec": self.ts_sec, "ts_usec": self.ts_usec,
                "proto_type": self.proto_type, "capture_id": self.capture_id,
                "payload": self.payload, "compressed": self.compressed,
                "correlation_id": self.correlation_id, "skipped_chunks": self.skipped_chunks}

    def __reduce__(self):
        return _restore, tuple(self.as_dict().values())

    def __repr__(self):
        return _repr(self)


def _restore(family, ip_proto, src, dst, sport, dport, ts_sec, ts_usec, proto_type,
             capture_id, payload, compressed, correlation_id, skipped_chunks):
    cdef HepMessage m = HepMessage.__new__(HepMessage)
    m.family, m.ip_proto, m.src, m.dst = family, ip_proto, src, dst
    m.sport, m.dport, m.ts_sec, m.ts_usec = sport, dport, ts_sec, ts_usec
    m.proto_type, m.capture_id, m.payload = proto_type, capture_id, payload
    m.compressed, m.correlation_id, m.skipped_chunks = compressed, correlation_id, skipped_chunks
    return m


def _repr(m):
    """As fastban.hep_pure._repr (same text)."""
    try:
        src = socket.inet_ntop(socket.AF_INET6 if len(m.src) == 16 else socket.AF_INET, m.src)
        dst = socket.inet_ntop(socket.AF_INET6 if len(m.dst) == 16 else socket.AF_INET, m.dst)
    except (ValueError, OSError):
        src, dst = m.src.hex(), m.dst.hex()
    if m.family == 10:
        src, dst = f"[{src}]", f"[{dst}]"
    return (f"<HepMessage {src}:{m.sport} -> {dst}:{m.dport} ip_proto={m.ip_proto} "
            f"capture_id={m.capture_id} {len(m.payload)} bytes{' inflated' * m.compressed}>")


cdef inline unsigned int _u16(cptr p) noexcept:
    return (<unsigned int>p[0] << 8) | p[1]


cdef inline unsigned int _u32(cptr p) noexcept:
    return ((<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16) |
            (<unsigned int>p[2] << 8) | p[3])


cdef inline int _fail(int code, long a=0, long b=0, long c=0, long d=0, long e=0) noexcept:
    _fail_values[0] = a
    _fail_values[1] = b
    _fail_values[2] = c
    _fail_values[3] = d
    _fail_values[4] = e
    return code


cdef object _message_of(int code):
    reason, template = MESSAGES[_KEYS[code]]
    return HepError(reason, template.format(*[_fail_values[k] for k in range(5)]))


cdef bytes _as_bytes(data):
    if isinstance(data, bytes):
        return <bytes>data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"decode() needs bytes, bytearray or memoryview, not {type(data).__name__}")


cdef object _as_key(auth_key):
    if auth_key is None or isinstance(auth_key, bytes):
        return auth_key or None
    if isinstance(auth_key, (bytearray, memoryview)):
        return bytes(auth_key) or None
    if isinstance(auth_key, str):
        return auth_key.encode() or None
    raise TypeError(f"auth_key must be bytes or None, not {type(auth_key).__name__}")


cdef object _inflate(bytes body):
    """The inflated payload (bytes), or the failure code (int; the value in _fail_values)."""
    inflater = zlib.decompressobj(wbits=47)   # 32 + 15: a gzip or a zlib header
    try:
        out = inflater.decompress(body, C_MAX_SIZE + 1)
    except zlib.error:
        return _fail(E_INFLATE)
    if len(out) > C_MAX_SIZE:
        return _fail(E_PAYLOAD_BIG)
    if not inflater.eof:
        return _fail(E_INFLATE)
    if inflater.unused_data:
        return _fail(E_INFLATE_TRAILING, len(inflater.unused_data))
    return out


cdef object _decode(bytes data, object key):
    """bytes -> HepMessage, or the failure code (an int; its values in _fail_values)."""
    cdef cptr p = <cptr>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t total, pos, end, length
    cdef unsigned int vendor, kind
    # offsets of the last chunk of each kind read (-1 = absent); for the octet chunks the
    # offset of the data and its length
    cdef Py_ssize_t at_src4 = -1, at_dst4 = -1, at_src6 = -1, at_dst6 = -1
    cdef Py_ssize_t at_auth = -1, auth_len = 0, at_payload = -1, payload_len = 0
    cdef Py_ssize_t at_corr = -1, corr_len = 0
    cdef int family = -1, proto_type = -1, sport = -1, dport = -1, ip_proto = 0
    cdef unsigned int ts_sec = 0, ts_usec = 0, capture_id = 0
    cdef int skipped = 0
    cdef bint compressed = False
    cdef Py_ssize_t at_src, at_dst, addr_len
    cdef int src_kind
    cdef bytes payload, key_bytes

    if n < 4 or p[0] != 72 or p[1] != 69 or p[2] != 80 or p[3] != 51:     # "HEP3"
        if n < 4 and data == b"HEP3"[:n]:
            return _fail(E_SHORT, n)
        return _fail(E_MAGIC)
    if n < 6:
        return _fail(E_SHORT, n)
    if n > C_MAX_HEP_SIZE:
        return _fail(E_DATAGRAM_BIG, n)
    total = _u16(p + 4)
    if total < 6:
        return _fail(E_TOTAL_SMALL, total)
    if n < total:
        return _fail(E_TOTAL_SHORT, n, total)
    if n > total:
        return _fail(E_TRAILING, n, total, n - total)

    pos = 6
    while pos < total:
        if total - pos < 6:
            return _fail(E_CHUNK_HEADER, pos, total)
        vendor = _u16(p + pos)
        kind = _u16(p + pos + 2)
        length = _u16(p + pos + 4)
        if length < 6:
            return _fail(E_CHUNK_SMALL, vendor, kind, pos, length)
        end = pos + length
        if end > total:
            return _fail(E_CHUNK_PAST, vendor, kind, pos, length, total)
        if vendor != 0 or kind == 0 or kind == 13 or kind > 17:
            skipped += 1
        elif kind <= 12:
            if length != _FIXED[kind]:
                return _fail(E_FIXED, kind, pos, length, _FIXED[kind])
            if kind == 1:
                family = p[pos + 6]
            elif kind == 2:
                ip_proto = p[pos + 6]
            elif kind == 3:
                at_src4 = pos + 6
            elif kind == 4:
                at_dst4 = pos + 6
            elif kind == 5:
                at_src6 = pos + 6
            elif kind == 6:
                at_dst6 = pos + 6
            elif kind == 7:
                sport = <int>_u16(p + pos + 6)
            elif kind == 8:
                dport = <int>_u16(p + pos + 6)
            elif kind == 9:
                ts_sec = _u32(p + pos + 6)
            elif kind == 10:
                ts_usec = _u32(p + pos + 6)
            elif kind == 11:
                proto_type = p[pos + 6]
            else:
                capture_id = _u32(p + pos + 6)
        elif kind == 15 or kind == 16:
            at_payload = pos + 6
            payload_len = length - 6
            compressed = kind == 16
        elif kind == 14:
            at_auth = pos + 6
            auth_len = length - 6
        else:
            at_corr = pos + 6
            corr_len = length - 6
        pos = end

    if key is not None:
        key_bytes = <bytes>key
        if at_auth < 0:
            return _fail(E_AUTH_MISSING)
        if auth_len != PyBytes_GET_SIZE(key_bytes) or not fastban_hep_equal(
                p + at_auth, <cptr>PyBytes_AS_STRING(key_bytes), auth_len):
            return _fail(E_AUTH_WRONG)
    if proto_type < 0:
        return _fail(E_TYPE_MISSING)
    if proto_type != 1:
        return _fail(E_TYPE_WRONG, proto_type)
    if family < 0:
        return _fail(E_FAMILY_MISSING)
    if family == 2:
        at_src, at_dst, addr_len, src_kind = at_src4, at_dst4, 4, 3
    elif family == 10:
        at_src, at_dst, addr_len, src_kind = at_src6, at_dst6, 16, 5
    else:
        return _fail(E_FAMILY_WRONG, family)
    if at_src < 0:
        return _fail(E_SRC_MISSING, src_kind)
    if at_dst < 0:
        return _fail(E_DST_MISSING, src_kind + 1)
    if sport < 0:
        return _fail(E_SPORT_MISSING)
    if dport < 0:
        return _fail(E_DPORT_MISSING)
    if at_payload < 0:
        return _fail(E_PAYLOAD_MISSING)
    if payload_len == 0:
        return _fail(E_PAYLOAD_EMPTY)
    payload = PyBytes_FromStringAndSize(<const char*>p + at_payload, payload_len)
    if compressed:
        inflated = _inflate(payload)
        if not isinstance(inflated, bytes):
            return inflated
        payload = <bytes>inflated
        if PyBytes_GET_SIZE(payload) == 0:
            return _fail(E_INFLATED_EMPTY)
    if PyBytes_GET_SIZE(payload) > C_MAX_SIZE:
        return _fail(E_PAYLOAD_BIG)

    cdef HepMessage m = HepMessage.__new__(HepMessage)
    m.family = family
    m.ip_proto = ip_proto
    m.src = PyBytes_FromStringAndSize(<const char*>p + at_src, addr_len)
    m.dst = PyBytes_FromStringAndSize(<const char*>p + at_dst, addr_len)
    m.sport = sport
    m.dport = dport
    m.ts_sec = ts_sec
    m.ts_usec = ts_usec
    m.proto_type = proto_type
    m.capture_id = capture_id
    m.payload = payload
    m.compressed = compressed
    if at_corr >= 0 and corr_len > 0:
        m.correlation_id = PyBytes_FromStringAndSize(<const char*>p + at_corr, corr_len)
    m.skipped_chunks = skipped
    return m


def decode(data, auth_key=None):
    """One HEPv3 packet (bytes, bytearray, memoryview) -> HepMessage; raises HepError.

    auth_key: when given (not None, not empty), the packet must carry exactly this key.
    """
    result = _decode(_as_bytes(data), _as_key(auth_key))
    if type(result) is HepMessage:
        return result
    raise _message_of(<int>result)


def decode_batch(datagrams, auth_key=None):
    """An iterable of packets -> a list, in the same order, of HepMessage or the reason
    (a str of REJECT_REASONS) each was refused for."""
    cdef object key = _as_key(auth_key)
    cdef list out = []
    cdef object result
    for data in datagrams:
        if type(data) is bytes:
            result = _decode(<bytes>data, key)
        else:
            result = _decode(_as_bytes(data), key)
        if type(result) is HepMessage:
            out.append(result)
        else:
            out.append(_REASONS[<int>result])
    return out
