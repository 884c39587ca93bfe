"""The header scan of the kernel's capture program, as one table that both sides run.

The TC program (bpf/tc_capture.c) decides what to copy to user space from four facts about
the first SIP message of a packet: the hash of its Call-ID, whether it carries credentials
(Authorization or Proxy-Authorization), where its header section ends and its Content-Length.
It reads them with a byte automaton: for each byte, ``state = NEXT[state][byte]``, and the flags
of the new state say what the byte was. The table is built here once, written into the kernel
map ``scan_table`` by fastban.dataplane, and run by :func:`scan` in Python, so that tests and
user space know exactly what the kernel concluded from the same bytes.

What the automaton reads (header names case-insensitive, compact forms ``i`` and ``l``):

* the start line is skipped; a line that begins with SP or HT (a folded continuation) is
  skipped;
* ``Call-ID`` / ``i``: every byte of the value except SP, HT and CR is hashed (64-bit FNV-1a,
  :func:`call_hash`); the scan counts Call-ID headers and the hash is only trusted for one;
* ``Content-Length`` / ``l``: the digits of the value; any other byte after a digit makes the
  value unusable (counted as a second Content-Length);
* ``Authorization`` / ``Proxy-Authorization``: counted;
* the empty line (CRLF or a bare LF) ends the header section: ``header_end`` is the offset just
  after it.

The kernel scans at most ``SCAN_MAX`` bytes; what it cannot see it treats as unknown and copies
the packet, so the limit costs copies, never a withheld message.
"""

from __future__ import annotations

from typing import NamedTuple

SCAN_MAX = 2048          # bytes of a message the kernel scans (bpf/fastban.h FB_SCAN_MAX)
STATES = 128             # rows of the table (a power of two: the kernel masks the state)

FLAG_HASH = 1            # the byte belongs to the Call-ID value
FLAG_DIGIT = 2           # the byte is a digit of the Content-Length value
FLAG_CALL_ID = 4         # a Call-ID header begins
FLAG_LENGTH = 8          # a Content-Length header begins (or its value went bad)
FLAG_CREDENTIALS = 16    # an Authorization or Proxy-Authorization header begins
FLAG_END = 32            # the header section ended with this byte

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1

_HEADERS = {b"call-id": "call-id", b"i": "call-id", b"content-length": "length",
            b"l": "length", b"authorization": "credentials",
            b"proxy-authorization": "credentials"}
_BLANKS = (0x20, 0x09)
CR, LF, COLON = 0x0D, 0x0A, 0x3A


class HeaderScan(NamedTuple):
    call_ids: int             # Call-ID headers seen
    call_hash: int            # hash of their values (meaningful when call_ids == 1)
    lengths: int              # Content-Length headers seen (a bad value counts as another)
    content_length: int       # its digits' value (meaningful when lengths == 1)
    credentials: int          # Authorization / Proxy-Authorization headers seen
    header_end: int           # offset just after the empty line; 0 = not within the scan


class _Table:
    def __init__(self):
        self.rows: list[list[int | None]] = []
        self.flags: list[int] = []
        self.index: dict[str, int] = {}

    def state(self, name: str, flags: int = 0) -> int:
        self.index[name] = len(self.rows)
        self.rows.append([None] * 256)
        self.flags.append(flags)
        return self.index[name]

    def set(self, state: int, byte: int, target: int, *, both_cases: bool = False) -> None:
        self.rows[state][byte] = target
        if both_cases and 0x61 <= byte <= 0x7A:
            self.rows[state][byte - 0x20] = target

    def default(self, state: int, target: int) -> None:
        row = self.rows[state]
        for byte in range(256):
            if row[byte] is None:
                row[byte] = target


def _build() -> _Table:
    t = _Table()
    start_line = t.state("start line")
    line_start = t.state("line start")
    line_start_cr = t.state("line start CR")
    end = t.state("end", FLAG_END)
    skip = t.state("skip line")
    other_name = t.state("other header name")
    call_id_colon = t.state("Call-ID colon", FLAG_CALL_ID)
    call_id_blank = t.state("Call-ID blank")
    call_id_byte = t.state("Call-ID byte", FLAG_HASH)
    length_colon = t.state("Content-Length colon", FLAG_LENGTH)
    length_blank = t.state("Content-Length blank")
    length_digit = t.state("Content-Length digit", FLAG_DIGIT)
    length_bad = t.state("Content-Length bad", FLAG_LENGTH)
    length_after = t.state("Content-Length after digits")
    credentials_colon = t.state("credentials colon", FLAG_CREDENTIALS)
    prefixes = {}
    for name in _HEADERS:
        for k in range(1, len(name) + 1):
            if name[:k] not in prefixes:
                prefixes[name[:k]] = t.state("name " + name[:k].decode())

    t.default(start_line, start_line)
    t.set(start_line, LF, line_start)

    t.set(line_start, CR, line_start_cr)
    t.set(line_start, LF, end)
    for blank in _BLANKS:
        t.set(line_start, blank, skip)
    for prefix, state in prefixes.items():
        if len(prefix) == 1:
            t.set(line_start, prefix[0], state, both_cases=True)
    t.default(line_start, other_name)
    t.set(line_start_cr, LF, end)
    t.default(line_start_cr, skip)
    t.default(end, end)
    t.default(skip, skip)
    t.set(skip, LF, line_start)
    t.set(other_name, LF, line_start)
    t.set(other_name, COLON, skip)
    t.default(other_name, other_name)

    colons = {"call-id": call_id_colon, "length": length_colon,
              "credentials": credentials_colon}
    for prefix, state in prefixes.items():
        for longer, target in prefixes.items():
            if len(longer) == len(prefix) + 1 and longer.startswith(prefix):
                t.set(state, longer[-1], target, both_cases=True)
        if prefix in _HEADERS:
            for blank in _BLANKS:
                t.set(state, blank, state)        # blanks may stand before the colon
            t.set(state, COLON, colons[_HEADERS[prefix]])
        t.set(state, LF, line_start)
        t.default(state, other_name)

    for state in (call_id_colon, call_id_blank, call_id_byte):
        for blank in (*_BLANKS, CR):
            t.set(state, blank, call_id_blank)
        t.set(state, LF, line_start)
        t.default(state, call_id_byte)
    for state in (length_colon, length_blank):
        for digit in range(0x30, 0x3A):
            t.set(state, digit, length_digit)
        t.set(state, LF, line_start)
        t.default(state, length_blank)
    for digit in range(0x30, 0x3A):
        t.set(length_digit, digit, length_digit)
    for state in (length_digit, length_after):      # after the digits, only blanks
        for blank in (*_BLANKS, CR):
            t.set(state, blank, length_after)
        t.set(state, LF, line_start)
        t.default(state, length_bad)
    t.set(length_bad, LF, line_start)
    t.default(length_bad, skip)
    t.set(credentials_colon, LF, line_start)
    t.default(credentials_colon, skip)

    for name, row in zip(t.index, t.rows):
        if None in row:
            raise AssertionError(f"scan state {name!r} has no transition for some bytes")
    if len(t.rows) > STATES:
        raise AssertionError(f"the scan needs {len(t.rows)} states, the kernel holds {STATES}")
    return t


_TABLE = _build()
START = _TABLE.index["start line"]
NEXT = bytes(b for row in _TABLE.rows for b in row) + bytes(256 * (STATES - len(_TABLE.rows)))
FLAGS = bytes(_TABLE.flags) + bytes(STATES - len(_TABLE.flags))
STATE_NAMES = tuple(_TABLE.index)


def call_hash(value: bytes) -> int:
    """The kernel's hash of a Call-ID value: FNV-1a over its bytes but SP, HT and CR."""
    h = FNV_OFFSET
    for byte in value:
        if byte not in (0x20, 0x09, 0x0D):
            h = ((h ^ byte) * FNV_PRIME) & _MASK64
    return h


def scan(message: bytes, limit: int = SCAN_MAX) -> HeaderScan:
    """What the kernel reads from the first ``limit`` bytes of a SIP message."""
    state, h, length = START, FNV_OFFSET, 0
    call_ids = lengths = credentials = header_end = 0
    for offset, byte in enumerate(message[:limit]):
        state = NEXT[state << 8 | byte]
        flags = FLAGS[state]
        if flags:
            if flags & FLAG_HASH:
                h = ((h ^ byte) * FNV_PRIME) & _MASK64
            if flags & FLAG_DIGIT:
                length = (length * 10 + byte - 0x30) & _MASK64
            call_ids += flags >> 2 & 1
            lengths += flags >> 3 & 1
            credentials += flags >> 4 & 1
            if flags & FLAG_END:
                header_end = offset + 1
                break
    return HeaderScan(call_ids, h, lengths, length, credentials, header_end)
