"""The packet walk of user space (fastban.packets) reads what the kernel's capture reads."""
import ipaddress

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, fragment6)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from fastban.packets import LINKTYPE_ETHERNET, MAX_OFFSET, LaterFragment, decode

SIP = (b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n" + b"Contact: <sip:a@b>\r\n" * 120
       + b"Content-Length: 0\r\n\r\n")
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def walk(packet):
    return decode(LINKTYPE_ETHERNET, bytes(packet))


def test_udp_and_tcp_over_both_families():
    for ip in (IP(src="192.0.2.1", dst="198.51.100.2"), IPv6(src="2001:db8::1", dst="2001:db8::2")):
        udp = walk(ETH / ip / UDP(sport=5060, dport=40000) / Raw(b"SIP/2.0 401 x\r\n\r\n"))
        assert (str(udp.src), str(udp.dst), udp.sport, udp.dport, udp.protocol) == \
            (ip.src, ip.dst, 5060, 40000, "udp")
        assert udp.payload == b"SIP/2.0 401 x\r\n\r\n" == udp.payload[:udp.payload_len]
        tcp = walk(ETH / ip / TCP(sport=5060, dport=40000, seq=77, flags="FA") / Raw(b"abc"))
        assert (tcp.protocol, tcp.tcp_seq, tcp.payload, tcp.payload_len, tcp.tcp_fin,
                tcp.tcp_rst) == ("tcp", 77, b"abc", 3, True, False)


def test_ethernet_padding_is_not_payload():
    frame = bytes(ETH / IP(src="192.0.2.1", dst="198.51.100.2") / UDP(sport=5060, dport=1)
                  / Raw(b"ab")) + b"\0" * 20
    assert decode(LINKTYPE_ETHERNET, frame).payload == b"ab"


def test_an_ipv4_first_fragment_is_the_segment_and_later_ones_raise():
    datagram = IP(src="192.0.2.1", dst="198.51.100.2", id=9) / UDP(sport=5060, dport=4) / SIP
    first, *later = fragment(datagram, fragsize=1400)
    segment = walk(ETH / first)
    assert segment.fragment and segment.payload_len == len(SIP)
    assert SIP.startswith(segment.payload) and len(segment.payload) < len(SIP)
    for piece in later:
        with pytest.raises(LaterFragment):
            walk(ETH / piece)
    assert not walk(ETH / datagram).fragment


def test_an_ipv6_first_fragment_is_the_segment_and_later_ones_raise():
    datagram = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=3) / \
        UDP(sport=5060, dport=4) / SIP
    first, *later = fragment6(datagram, 1400)
    segment = walk(ETH / first)
    assert segment.fragment and segment.payload_len == len(SIP)
    for piece in later:
        with pytest.raises(LaterFragment):
            walk(ETH / piece)
    atomic = walk(ETH / IPv6(src="2001:db8::1", dst="2001:db8::2") /
                  IPv6ExtHdrFragment(m=0, offset=0) / UDP(sport=5060, dport=4) / b"x")
    assert not atomic.fragment and atomic.payload == b"x"


def test_ipv6_extension_headers_up_to_four_as_in_the_kernel():
    ip6 = IPv6(src="2001:db8::1", dst="2001:db8::2")
    udp = UDP(sport=5060, dport=4) / b"payload"
    for extensions in ([IPv6ExtHdrHopByHop()], [AH(nh=17, payloadlen=1)],
                       [IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(nh=51),
                        AH(nh=17, payloadlen=1)]):
        packet = ip6
        for extension in extensions:
            packet = packet / extension
        assert walk(ETH / packet / udp).payload == b"payload", extensions
    five = ip6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / \
        IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / udp
    assert walk(ETH / five) is None


def test_up_to_two_vlan_tags_as_in_the_kernel():
    inner = IP(src="192.0.2.1", dst="198.51.100.2") / UDP(sport=5060, dport=4) / b"p"
    assert walk(ETH / Dot1Q(vlan=1) / inner).payload == b"p"
    assert walk(ETH / Dot1AD(vlan=2) / Dot1Q(vlan=1) / inner).payload == b"p"
    tagged = bytes(ETH / Dot1Q(vlan=1) / inner)
    custom = tagged[:12] + b"\x91\x00" + tagged[14:]            # a 0x9100 outer tag
    assert decode(LINKTYPE_ETHERNET, custom).payload == b"p"
    assert walk(ETH / Dot1AD(vlan=3) / Dot1Q(vlan=2) / Dot1Q(vlan=1) / inner) is None


def test_truncated_and_foreign_frames_give_nothing():
    good = bytes(ETH / IP(src="192.0.2.1", dst="198.51.100.2") / UDP(sport=1, dport=2) / b"x")
    for cut in (0, 10, 14, 20, 33):
        assert decode(LINKTYPE_ETHERNET, good[:cut]) is None
    assert decode(LINKTYPE_ETHERNET, bytes(ETH / (b"\x00" * 40))) is None
    assert decode(999, good) is None
    assert ipaddress.ip_address("192.0.2.1") == decode(LINKTYPE_ETHERNET, good).src


def test_no_header_is_read_past_the_walk_limit_as_in_the_kernel():
    # The kernel test cannot send these: they are longer than the link's MTU.
    ip6 = IPv6(src="2001:db8::1", dst="2001:db8::2")
    udp = UDP(sport=5060, dport=4) / b"p"
    long_routing = IPv6ExtHdrRouting(addresses=["2001:db8::9"] * 127)     # 2,040 bytes
    assert len(long_routing) == 2040
    within = ETH / ip6 / long_routing / udp                          # UDP at 2,094
    assert walk(within).payload == b"p"
    past = ETH / ip6 / long_routing / IPv6ExtHdrRouting(addresses=["2001:db8::9"] * 127) / udp
    assert len(ETH / ip6) + 2 * 2040 > MAX_OFFSET                   # UDP at 4,134
    assert walk(past) is None
