"""The capture's way to user space: the ring buffer "captures" (read by fastban.dataplane.ring),
its losses, and each record (struct fb_capture_meta, then the packet bytes) decoded into a
CapturedPacket.

The record's layout is bpf/abi.h's, read once into a struct format (decoding with struct is
several times faster than through the ctypes type).
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable

from fastban.abi import ABI, AbiError
from fastban.dataplane import ring
from fastban.packets import address

FbCaptureMeta = ABI.struct("fb_capture_meta")

_PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}
_KINDS = {value: name for name, value in ABI.group("FB_KIND_").items()}
REASONS = {value: name.replace("_", " ") for name, value in ABI.group("FB_WHY_").items()}


@dataclass(slots=True)
class CapturedPacket:
    """One packet the capture copied: a SIP message (or a TCP segment) and where it went."""
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int
    dport: int
    protocol: str           # "udp" | "tcp"
    status: int             # SIP status of a response, else 0
    payload: bytes          # the TCP/UDP payload as copied (it may stop short of payload_len)
    ktime_ns: int           # kernel monotonic ns when the kernel saw it
    direction: str = "egress"
    packet: bytes = b""     # the whole captured frame (up to FB_CAPTURE_MAX bytes)
    kind: str = "response"  # "response" | "request" | "continuation" (a TCP segment)
    payload_len: int = 0    # payload bytes on the wire (of the whole datagram for a fragment)
    tcp_seq: int = 0
    fragment: bool = False  # an IP first fragment: the rest of the datagram is not here
    tcp_fin: bool = False
    tcp_rst: bool = False
    reason: str = ""        # why the kernel copied it (FB_WHY_* in bpf/abi.h)
    kernel_ban: bool = False    # the capture banned its peer on it (an armed source)


def _struct_format(structure) -> struct.Struct:
    """A little-endian struct format laying out a ctypes structure's fields at their offsets
    (arrays of bytes as strings), padded to its size."""
    codes = {ct.c_uint8: "B", ct.c_uint16: "H", ct.c_uint32: "I", ct.c_uint64: "Q"}
    parts, position = ["<"], 0
    for name, kind in structure._fields_:
        offset = getattr(structure, name).offset
        if offset > position:
            parts.append(f"{offset - position}x")
        if kind in codes:
            parts.append(codes[kind])
        else:
            parts.append(f"{ct.sizeof(kind)}s")
        position = offset + ct.sizeof(kind)
    if ct.sizeof(structure) > position:
        parts.append(f"{ct.sizeof(structure) - position}x")
    return struct.Struct("".join(parts))


CAPTURE_META = _struct_format(FbCaptureMeta)
# decode_capture names the fields in abi.h's order: a header that reorders or renames them
# stops the import here rather than decoding one field as another.
_FIELDS = ("ktime_ns", "saddr", "daddr", "sport", "dport", "status", "payload_off",
           "payload_len", "cap_len", "tcp_seq", "family", "protocol", "direction", "kind",
           "flags", "reason", "pad")


def check_record_fields(structure, source) -> None:
    """AbiError unless structure (fb_capture_meta as a header declares it) has the fields
    decode_capture reads, in its order."""
    if tuple(name for name, _ in structure._fields_) != _FIELDS:
        raise AbiError(f"{source}: struct fb_capture_meta is not the record decode_capture "
                       f"reads ({', '.join(_FIELDS)})")


check_record_fields(FbCaptureMeta, ABI.source)
_FRAGMENT, _FIN, _RST = ABI["FB_META_FRAGMENT"], ABI["FB_META_TCP_FIN"], ABI["FB_META_TCP_RST"]
_KERNEL_BAN = ABI["FB_META_KERNEL_BAN"]
_INGRESS = ABI["FB_DIR_INGRESS"]
_META_SIZE = CAPTURE_META.size
_unpack_meta = CAPTURE_META.unpack_from
DECODING = ring.Decoding(CapturedPacket, address,
                         [_PROTOCOLS.get(value, "udp") for value in range(256)],
                         [_KINDS.get(value, "response") for value in range(256)],
                         [REASONS.get(value, "") for value in range(256)])


def decode_capture(raw: bytes) -> CapturedPacket | None:
    """One record (struct fb_capture_meta + packet bytes) -> CapturedPacket."""
    if len(raw) < _META_SIZE:
        return None
    (ktime_ns, saddr, daddr, sport, dport, status, payload_off, payload_len, cap_len, tcp_seq,
     family, protocol, direction, kind, flags, reason, _) = _unpack_meta(raw)
    packet = raw[_META_SIZE:_META_SIZE + cap_len]
    if family == 4:
        src, dst = address(saddr[:4]), address(daddr[:4])
    else:
        src, dst = address(saddr), address(daddr)
    return CapturedPacket(
        src, dst, sport, dport, _PROTOCOLS.get(protocol, "udp"), status,
        packet[payload_off:payload_off + payload_len], ktime_ns,
        "ingress" if direction == _INGRESS else "egress", packet, _KINDS.get(kind, "response"),
        payload_len, tcp_seq, bool(flags & _FRAGMENT), bool(flags & _FIN), bool(flags & _RST),
        REASONS.get(reason, ""), bool(flags & _KERNEL_BAN))


class Capture:
    """The ring buffer of a compiled program: callbacks get CapturedPackets on poll().

    lost is what the ring could not take (the kernel's FB_CNT_CAPTURE_FAILED, which
    count_failed reads), since the pinned counters were made."""

    def __init__(self, bpf, count_failed: Callable[[], int]):
        table = bpf[b"captures"]
        self.size = table.max_entries
        self.pages = self.size // ring.PAGE_SIZE
        self._count_failed = count_failed
        self._callbacks: list[Callable[[CapturedPacket], None]] = []
        self._batch_callbacks: list[Callable[[list[CapturedPacket]], None]] = []
        self._maps = ring.map_ring(table.map_fd, self.size)
        compiled = ring.compiled_reader()
        if compiled is not None:
            ring.check_compiled_layout(compiled, FbCaptureMeta)
            self._reader = compiled.RingReader(*self._maps, self.size, ring.PAGE_SIZE,
                                               DECODING)
        else:
            self._reader = ring.PureRingReader(*self._maps, self.size, decode_capture)
        self._epoll = select.epoll()
        self._epoll.register(table.map_fd, select.EPOLLIN)

    @property
    def lost(self) -> int:
        return self._count_failed()

    @property
    def malformed(self) -> int:
        """Records skipped because they could not be decoded."""
        return self._reader.malformed

    def on_capture(self, callback: Callable[[CapturedPacket], None]) -> None:
        self._callbacks.append(callback)

    def on_batch(self, callback: Callable[[list[CapturedPacket]], None]) -> None:
        """callback gets each poll's packets as one list (in the order the kernel wrote
        them), when there are any."""
        self._batch_callbacks.append(callback)

    def poll(self, timeout_ms: int) -> None:
        """Hands the callbacks every record in the ring; when there is none, waits up to
        timeout_ms for one (the kernel wakes the reader when a record follows all it read)."""
        batch: list[CapturedPacket] = []
        if self._reader.drain(batch) == 0:
            self._epoll.poll(timeout_ms / 1000)
            self._reader.drain(batch)
        if not batch:
            return
        for batch_callback in self._batch_callbacks:
            batch_callback(batch)
        for callback in self._callbacks:
            for packet in batch:
                callback(packet)

    def close(self) -> None:
        self._epoll.close()
        self._reader = None
        for mapped in self._maps:
            mapped.close()


def idle(timeout_ms: int) -> None:
    """What poll() does with no capture: waits."""
    time.sleep(timeout_ms / 1000)
