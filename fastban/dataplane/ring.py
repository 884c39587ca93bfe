"""The reader of the capture's BPF ring buffer (BPF_MAP_TYPE_RINGBUF "captures"): the ring is
mapped into this process and drained in one call, every record committed, in order.

The layout is the kernel's (Documentation/bpf/ringbuf.rst): at offset 0 of the map fd, one page
holding the consumer position (ours to write); at offset page_size, one page holding the
producer position, then the data pages mapped twice in a row, so a record that wraps around
the end is contiguous. Each record is an 8-byte header (u32 length with the BUSY and DISCARD
bits, u32 page offset) and the sample, rounded up to 8 bytes.

The compiled reader (fastban._ringreader) is used when built, unless FASTBAN_PURE_PYTHON=1;
the pure one below reads the same ring with struct and decodes with decode_capture.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from typing import NamedTuple

from fastban.abi import AbiError

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
PAGE_SIZE = mmap.PAGESIZE
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class Decoding(NamedTuple):
    """What the compiled reader needs to build CapturedPackets as decode_capture does."""
    packet_class: type
    address: object             # fastban.packets.address
    protocols: list             # name of each IPPROTO_* value, 256 entries
    kinds: list                 # of each FB_KIND_*
    reasons: list               # of each FB_WHY_*


def map_ring(map_fd: int, size: int) -> tuple[mmap.mmap, mmap.mmap]:
    """(consumer page, read-write; producer page + data twice, read-only) of a ring of size
    bytes."""
    consumer = mmap.mmap(map_fd, PAGE_SIZE, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
    try:
        data = mmap.mmap(map_fd, PAGE_SIZE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                         offset=PAGE_SIZE)
    except BaseException:
        consumer.close()
        raise
    return consumer, data


class PureRingReader:
    """The ring read with struct. The positions and headers are plain loads and the consumer
    position a plain store: ordered enough on x86 (TSO), as CPython gives no other."""

    def __init__(self, consumer_map: mmap.mmap, data_map: mmap.mmap, size: int, decode):
        if size & (size - 1) or len(data_map) < PAGE_SIZE + 2 * size:
            raise ValueError("the ring's data must be a power of two, mapped twice")
        self._consumer, self._data, self._size, self._decode = consumer_map, data_map, size, decode
        self.malformed = 0

    def drain(self, out: list) -> int:
        """Appends every record committed (in order) to out; returns how many."""
        data, mask, count = self._data, self._size - 1, 0
        consumer = _U64.unpack_from(self._consumer, 0)[0]
        producer = _U64.unpack_from(data, 0)[0]
        try:
            while consumer < producer:
                while consumer < producer:
                    at = PAGE_SIZE + (consumer & mask)
                    header = _U32.unpack_from(data, at)[0]
                    if header & BUSY_BIT:
                        return count
                    length = header & ~(BUSY_BIT | DISCARD_BIT)
                    if length > self._size - HEADER_SIZE:
                        self.malformed += 1
                        consumer = producer
                        break
                    consumer += (length + HEADER_SIZE + 7) & ~7
                    if header & DISCARD_BIT:
                        continue
                    packet = self._decode(data[at + HEADER_SIZE:at + HEADER_SIZE + length])
                    if packet is None:
                        self.malformed += 1
                    else:
                        out.append(packet)
                        count += 1
                producer = _U64.unpack_from(data, 0)[0]
            return count
        finally:
            _U64.pack_into(self._consumer, 0, consumer)


def compiled_reader():
    """fastban._ringreader when built and FASTBAN_PURE_PYTHON is not set, else None."""
    if os.environ.get("FASTBAN_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from fastban import _ringreader
    except ImportError:          # not built (pure-Python install): the fallback serves
        return None
    return _ringreader


def check_compiled_layout(module, structure) -> None:
    """AbiError unless the compiled reader's struct fb_capture_meta (from the abi.h it was
    built with) has the size and offsets of structure (fastban.abi's reading of abi.h)."""
    offsets = {name: getattr(structure, name).offset for name, _ in structure._fields_
               if name != "pad"}
    if module.META_SIZE != ctypes.sizeof(structure) or module.META_OFFSETS != offsets:
        raise AbiError("fastban._ringreader was built with another struct fb_capture_meta "
                       "than bpf/abi.h's: rebuild it (make setup)")
