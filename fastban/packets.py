"""The packet walk of user space: a captured frame to the TCP/UDP segment it carries.

It walks as the kernel's programs do (bpf/walk.h), with the same limits and protocol numbers
(bpf/abi.h, read through fastban.abi), so that `fastban replay` takes from a recording exactly
the segments the live capture could copy:

* link layers: Ethernet with up to FB_VLAN_TAGS_MAX 802.1Q / 802.1ad / 0x9100 tags; and, which
  the kernel never sees, Linux cooked captures (SLL, SLL2), raw IP, BSD loopback;
* IPv4; IPv6 with up to FB_IPV6_EXT_MAX extension headers (hop-by-hop, routing, destination
  options, fragment, AH);
* UDP and TCP. An IP first fragment gives its segment with ``fragment`` set (the rest of the
  datagram is elsewhere; ``payload_len`` is the whole datagram's); a later fragment raises
  ``LaterFragment``: it holds no header anyone reads.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from fastban.abi import ABI

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = (12, 14, 101)
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

VLAN_TYPES = (ABI["FB_ETH_P_8021Q"], ABI["FB_ETH_P_8021AD"], ABI["FB_ETH_P_QINQ"])
MAX_VLAN_TAGS = ABI["FB_VLAN_TAGS_MAX"]
MAX_IPV6_EXTENSIONS = ABI["FB_IPV6_EXT_MAX"]
MAX_OFFSET = ABI["FB_WALK_MAX_OFFSET"]
_FRAGMENT, _AH = ABI["FB_IPPROTO_FRAGMENT"], ABI["FB_IPPROTO_AH"]
_IPV6_EXTENSIONS = (ABI["FB_IPPROTO_HOPOPTS"], ABI["FB_IPPROTO_ROUTING"], _FRAGMENT, _AH,
                    ABI["FB_IPPROTO_DSTOPTS"])
_IP, _IPV6 = ABI["FB_ETH_P_IP"], ABI["FB_ETH_P_IPV6"]
_UDP, _TCP = ABI["FB_IPPROTO_UDP"], ABI["FB_IPPROTO_TCP"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class LaterFragment(Exception):
    """An IP fragment past the first: it carries no TCP/UDP header."""


@dataclass(slots=True)
class Segment:
    """A TCP or UDP payload and where it went (fastban.dataplane.CapturedPacket has the same
    attributes, so the detection path takes either)."""
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    protocol: str           # "udp" | "tcp" | "hep" (one whole message, from fastban.hep_feed)
    payload: bytes          # as captured (it may stop short of payload_len)
    payload_len: int        # payload bytes on the wire (of the whole datagram for a fragment)
    tcp_seq: int = 0
    fragment: bool = False  # an IP first fragment
    tcp_fin: bool = False
    tcp_rst: bool = False


# The same few addresses (the server's, each phone's) recur in every capture; building an
# ipaddress object costs more than the rest of the walk, so recent ones are reused.
ADDRESS_CACHE_SIZE = 65536
_V4_ADDRESSES: dict[bytes, ipaddress.IPv4Address] = {}
_V6_ADDRESSES: dict[bytes, ipaddress.IPv6Address] = {}


def address(packed: bytes) -> IPAddress:
    """The ipaddress object of 4 or 16 packed bytes, reused while it is recent."""
    cache = _V4_ADDRESSES if len(packed) == 4 else _V6_ADDRESSES
    found = cache.get(packed)
    if found is None:
        if len(cache) >= ADDRESS_CACHE_SIZE:
            cache.clear()
        found = cache[packed] = ipaddress.ip_address(packed)
    return found


def _network_start(linktype: int, frame: bytes) -> tuple[int, int] | None:
    """(ethertype, offset of the IP header) of a frame, or None."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        etype, off = frame[12] << 8 | frame[13], 14
        for _ in range(MAX_VLAN_TAGS):
            if etype not in VLAN_TYPES or len(frame) < off + 4:
                break
            etype, off = frame[off + 2] << 8 | frame[off + 3], off + 4
        return etype, off
    if linktype == LINKTYPE_LINUX_SLL:
        return (frame[14] << 8 | frame[15], 16) if len(frame) >= 16 else None
    if linktype == LINKTYPE_LINUX_SLL2:
        return (frame[0] << 8 | frame[1], 20) if len(frame) >= 20 else None
    if linktype in LINKTYPE_RAW or linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        return (_IP if frame[0] >> 4 == 4 else _IPV6, 0) if frame else None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return (_IP if frame[4] >> 4 == 4 else _IPV6, 4) if len(frame) >= 5 else None
    return None


def decode(linktype: int, frame: bytes) -> Segment | None:
    """The TCP/UDP segment of a frame, or None when it carries none (raises LaterFragment)."""
    start = _network_start(linktype, frame)
    if start is None:
        return None
    etype, off = start
    fragment = False
    if etype == _IP:
        if len(frame) < off + 20 or frame[off] >> 4 != 4:
            return None
        ihl = (frame[off] & 0x0F) * 4
        total = frame[off + 2] << 8 | frame[off + 3]
        flags_offset = frame[off + 6] << 8 | frame[off + 7]
        if flags_offset & 0x1FFF:
            raise LaterFragment()
        fragment = bool(flags_offset & 0x2000)
        proto = frame[off + 9]
        src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
        end = off + total if total >= ihl else len(frame)
        off += ihl
    elif etype == _IPV6:
        if len(frame) < off + 40 or frame[off] >> 4 != 6:
            return None
        proto = frame[off + 6]
        src, dst = frame[off + 8:off + 24], frame[off + 24:off + 40]
        end = off + 40 + (frame[off + 4] << 8 | frame[off + 5])
        off += 40
        for _ in range(MAX_IPV6_EXTENSIONS):
            if proto not in _IPV6_EXTENSIONS:
                break
            if len(frame) < off + 4:
                return None
            if proto == _FRAGMENT:
                if (frame[off + 2] << 5 | frame[off + 3] >> 3) != 0:
                    raise LaterFragment()
                fragment = fragment or bool(frame[off + 3] & 1)
                length = 8
            elif proto == _AH:
                length = (frame[off + 1] + 2) * 4
            else:
                length = (frame[off + 1] + 1) * 8
            proto = frame[off]
            off += length
            if off > MAX_OFFSET:
                return None
    else:
        return None

    if proto == _UDP:
        if len(frame) < off + 8:
            return None
        sport, dport, udp_len = struct.unpack_from("!HHH", frame, off)
        wire = udp_len - 8 if udp_len >= 8 else 0
        off += 8
        payload = frame[off:min(end, off + wire, len(frame))]
        return Segment(address(src), address(dst), sport, dport, "udp", payload, wire,
                       fragment=fragment)
    if proto == _TCP:
        if len(frame) < off + 20:
            return None
        sport, dport, seq = struct.unpack_from("!HHI", frame, off)
        flags = frame[off + 13]
        off += (frame[off + 12] >> 4) * 4
        wire = max(0, end - off)
        return Segment(address(src), address(dst), sport, dport, "tcp",
                       frame[off:min(end, len(frame))], wire, seq, fragment,
                       bool(flags & 0x01), bool(flags & 0x04))
    return None
