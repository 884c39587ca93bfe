"""The capture's way to user space: the perf buffer "captures", its losses, and each record
(struct fb_capture_meta, then the packet bytes) decoded into a CapturedPacket.

The record's layout is bpf/abi.h's, read once into a struct format (decoding with struct is
several times faster than through the ctypes type).
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable

from fastban.abi import ABI, AbiError
from fastban.packets import address

CAPTURE_PAGES = 1024    # perf buffer pages per CPU (4 MiB): absorbs bursts while the guard is busy
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


def decode_capture(raw: bytes) -> CapturedPacket | None:
    """One perf record (struct fb_capture_meta + packet bytes) -> CapturedPacket."""
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
    """The perf buffer of a compiled program: callbacks get CapturedPackets on poll()."""

    def __init__(self, bpf, pages: int = CAPTURE_PAGES):
        self.bpf = bpf
        self.pages = pages
        self.lost = 0
        self._delivered = 0
        self._callbacks: list[Callable[[CapturedPacket], None]] = []
        self._callback_error: BaseException | None = None
        bpf[b"captures"].open_perf_buffer(self._on_event, page_cnt=pages, lost_cb=self._on_lost)

    def on_capture(self, callback: Callable[[CapturedPacket], None]) -> None:
        self._callbacks.append(callback)

    def poll(self, timeout_ms: int) -> None:
        """Waits up to timeout_ms for captured packets and hands them to the callbacks.

        Once a CPU's ring has woken the poll, every ring is read: the kernel wakes a reader
        some time after it wrote (irq_work), so a request copied on one CPU can be in its ring
        but not yet signalled when the answer copied after it on another CPU wakes the poll.
        Read together, the two can be put back in order (CapturedPacket.ktime_ns)."""
        delivered = self._delivered
        self.bpf.perf_buffer_poll(timeout_ms)
        if self._delivered != delivered:
            self.bpf.perf_buffer_consume()
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error

    def _on_lost(self, lost: int) -> None:
        self.lost += lost

    def _on_event(self, cpu, data, size) -> None:
        self._delivered += 1
        try:
            packet = decode_capture(ct.string_at(data, size))
            if packet is not None:
                for callback in self._callbacks:
                    callback(packet)
        except BaseException as e:          # a callback failing must not vanish in ctypes
            if self._callback_error is None:
                self._callback_error = e


def idle(timeout_ms: int) -> None:
    """What poll() does with no capture: waits."""
    time.sleep(timeout_ms / 1000)
