"""The header scan of the kernel's capture program, as one table that both sides run.

The TC program (bpf/tc_capture.c) decides what to copy to user space from four facts about
the first SIP message of a packet: the hash of its Call-ID, whether it carries credentials
(Authorization or Proxy-Authorization), where its header section ends and its Content-Length.
It reads them in three steps, which :func:`scan` repeats in Python, so that tests and user
space know exactly what the kernel concluded from the same bytes:

1. A byte automaton over at most ``SCAN_MAX`` bytes: for each byte,
   ``state = NEXT[state][byte]``, and the flags of the new state say what the byte was. The
   table is built here once and written into the kernel map ``scan_table``. It skips the start
   line and folded continuation lines, and finds (header names case-insensitive, compact forms
   ``i`` and ``l``) the colon of every ``Call-ID`` / ``i``, ``Content-Length`` / ``l``,
   ``Authorization`` and ``Proxy-Authorization`` header, and the empty line (CRLF or a bare LF)
   that ends the header section: ``header_end`` is the offset just after it.
   For a UDP response, whose Call-ID is all the kernel needs, it stops at the first Call-ID's
   colon (``stop_at_call_id``).
2. The 64-bit FNV-1a hash (:func:`call_hash`) of the first Call-ID's value (the parser reads
   the first one too): its bytes but SP, HT and CR, up to the LF, which must come within
   ``CALL_ID_SPAN`` bytes.
3. When there is exactly one Content-Length: its value, which must be blanks, 1 to 10 digits,
   blanks or CR, then LF, within ``LENGTH_SPAN`` bytes (as the parser reads it).

What the kernel cannot read (past the scan, a second Call-ID, a value too long or odd) it
treats as unknown and copies the packet: the limits cost copies, never a withheld message.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from fastban.abi import ABI

SCAN_MAX = ABI["FB_SCAN_MAX"]            # bytes of a message the kernel scans
CALL_ID_SPAN = ABI["FB_CALL_ID_SPAN"]    # bytes of a Call-ID value, its LF included
LENGTH_SPAN = ABI["FB_LENGTH_SPAN"]      # bytes of a Content-Length value, its LF included
STATES = ABI["FB_SCAN_STATES"]           # rows of the table (the kernel masks the state)

FLAG_CALL_ID = ABI["FB_SCAN_CALL_ID"]            # the colon of a Call-ID header
FLAG_LENGTH = ABI["FB_SCAN_LENGTH"]              # the colon of a Content-Length header
FLAG_CREDENTIALS = ABI["FB_SCAN_CREDENTIALS"]    # ... of an Authorization header
FLAG_END = ABI["FB_SCAN_END"]                    # the header section ended with this byte

FNV_OFFSET = ABI["FB_FNV_OFFSET"]
FNV_PRIME = ABI["FB_FNV_PRIME"]
_MASK64 = (1 << 64) - 1

_HEADERS = {b"call-id": "call-id", b"i": "call-id", b"content-length": "length",
            b"l": "length", b"authorization": "credentials",
            b"proxy-authorization": "credentials"}
_BLANKS = (0x20, 0x09)
CR, LF, COLON = 0x0D, 0x0A, 0x3A


class HeaderScan(NamedTuple):
    call_ids: int             # Call-ID headers seen
    call_hash: int | None     # hash of the first one's value; None when not readable
    lengths: int              # Content-Length headers seen
    content_length: int | None   # the value of the only one; None when not readable
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
    length_colon = t.state("Content-Length colon", FLAG_LENGTH)
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

    for colon in (call_id_colon, length_colon, credentials_colon):     # the value: skipped
        t.set(colon, LF, line_start)
        t.default(colon, skip)

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
# The kernel's form (struct fb_scan_table): per (state, byte), the next state and its flags;
# per byte, what it is to the Call-ID hash (0 hashed, 1 skipped, 2 the end).
STEPS = [FLAGS[n] << 8 | n for n in NEXT]
CALL_ID_BYTES = bytes(ABI["FB_HASH_END"] if b == LF else ABI["FB_HASH_SKIP"]
                      if b in (0x20, 0x09, CR) else ABI["FB_HASH_BYTE"] for b in range(256))


def call_hash(value: bytes) -> int:
    """The kernel's hash of a Call-ID value: FNV-1a over its bytes but SP, HT and CR."""
    h = FNV_OFFSET
    for byte in value:
        if byte not in (0x20, 0x09, 0x0D):
            h = ((h ^ byte) * FNV_PRIME) & _MASK64
    return h


_LENGTH_VALUE = re.compile(rb"[ \t]*([0-9]{1,10})[ \t\r]*\n")


def scan(message: bytes, limit: int = SCAN_MAX, stop_at_call_id: bool = False) -> HeaderScan:
    """What the kernel reads from the first ``limit`` bytes of a SIP message."""
    data = message[:limit]
    state = START
    call_ids = lengths = credentials = header_end = call_at = length_at = 0
    for offset, byte in enumerate(data):
        state = NEXT[state << 8 | byte]
        flags = FLAGS[state]
        if flags:
            if flags & FLAG_CALL_ID:
                call_ids += 1
                call_at = call_at or offset + 1
                if stop_at_call_id:
                    break
            if flags & FLAG_LENGTH:
                lengths, length_at = lengths + 1, offset + 1
            credentials += bool(flags & FLAG_CREDENTIALS)
            if flags & FLAG_END:
                header_end = offset + 1
                break
    call = None
    if call_ids:
        value = data[call_at:call_at + CALL_ID_SPAN]
        lf = value.find(b"\n")
        if lf >= 0:
            call = call_hash(value[:lf])
    length = None
    if lengths == 1:
        match = _LENGTH_VALUE.match(data, length_at, min(len(data), length_at + LENGTH_SPAN))
        if match:
            length = int(match.group(1))
    return HeaderScan(call_ids, call, lengths, length, credentials, header_end)


def failure_hash(message: bytes) -> int:
    """The kernel's hash of a failure response (bpf/armed.h): FNV-1a over its bytes before the
    first Call-ID's value (the status line and the top Via branch); None when the scan finds no
    Call-ID. A retransmission hashes the same, a new failure (a new branch) does not."""
    state, call_at = START, 0
    for offset, byte in enumerate(message[:SCAN_MAX]):
        state = NEXT[state << 8 | byte]
        if FLAGS[state] & FLAG_CALL_ID:
            call_at = offset + 1
            break
        if FLAGS[state] & FLAG_END:
            return None
    if not call_at:
        return None
    h = FNV_OFFSET
    for byte in message[:call_at]:
        h = ((h ^ byte) * FNV_PRIME) & _MASK64
    return h
