"""The data plane on the real kernel: XDP drop, pinning and expiry, TC capture, counters, errors.

Every test builds its traffic between its own network namespaces (10.210.x, 10.211.x, 10.212.x
and fd00:210::, fd00:211::); the shared DataPlane (one BCC compile) serves the tests that only
change map contents, and each of them starts from empty ban, allow and scope maps.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fastban import dataplane, headerscan
from fastban.dataplane import (BanTableFull, DataPlane, DataPlaneError, FbAddr6, FbBanValue,
                               FbCallKey, FbCaptureMeta, FbLpm4, FbLpm6, FbPeer, FbPeerState,
                               FbScanTable)
from fastban.lab import netns
from udp_rig import UdpRig, guarded, receive

ROOT = Path(__file__).resolve().parent.parent
IP = ipaddress.ip_address
NET = ipaddress.ip_network

SRV4, SRV6 = "10.210.0.1", "fd00:210::1"
CLI4 = ["10.210.0.2", "10.210.0.3", "10.210.0.4", "10.210.0.66", "10.210.0.9"]
CLI6 = ["fd00:210::2", "fd00:210::3", "fd00:210::4", "fd00:210::66"]


@pytest.fixture(scope="module")
def rig(kernel):
    with netns.Lab() as lab, guarded(UdpRig(lab, SRV4, SRV6, CLI4, CLI6), "both") as rig:
        yield rig


@pytest.fixture
def dp(rig):
    """The shared DataPlane with no bans, no whitelist and scope all."""
    dp = rig.dp
    for ban in dp.bans(include_expired=True):
        dp.unban(ban.target)
    for network in dp.whitelisted():
        dp.unwhitelist(network)
    for network in dp.trusted_networks():
        dp.untrust(network)
    dp.set_scope(None)
    return dp


# ---- layout ----

def test_structs_match_the_compiled_layout(rig):
    bpf = rig.dp.bpf
    pairs = [(bpf[b"bans_v4"].Leaf, FbBanValue), (bpf[b"bans_v6"].Key, FbAddr6),
             (bpf[b"ranges_v4"].Key, FbLpm4), (bpf[b"ranges_v6"].Key, FbLpm6),
             (bpf[b"ranges_v6"].Leaf, FbBanValue), (bpf[b"challenged"].Key, FbPeer),
             (bpf[b"challenged"].Leaf, FbPeerState), (bpf[b"open_calls"].Key, FbCallKey),
             (bpf[b"scan_table"].Leaf, FbScanTable), (bpf[b"meta_layout"].Leaf, FbCaptureMeta)]
    for compiled, mirror in pairs:
        assert ct.sizeof(compiled) == ct.sizeof(mirror), mirror.__name__
    for table, mirror in ((bpf[b"meta_layout"].Leaf, FbCaptureMeta),
                          (bpf[b"open_calls"].Key, FbCallKey),
                          (bpf[b"challenged"].Leaf, FbPeerState)):
        for name, _ in mirror._fields_:
            assert getattr(table, name).offset == getattr(mirror, name).offset, name
    assert ct.sizeof(FbCaptureMeta) == 72 == dataplane.CAPTURE_META.size
    assert bpf[b"bans_v4"].Key is ct.c_uint or ct.sizeof(bpf[b"bans_v4"].Key) == 4


def test_decode_capture_reads_the_struct_as_ctypes_lays_it_out():
    meta = FbCaptureMeta(ktime_ns=123456789, sport=5060, dport=40000, status=403,
                         payload_off=42, payload_len=1400, cap_len=47, tcp_seq=77, family=4,
                         protocol=6, direction=1, kind=1, flags=1 | 2, reason=1)
    meta.saddr[:4] = IP("192.0.2.1").packed
    meta.daddr[:4] = IP("203.0.113.9").packed
    packet = bytes(42) + b"SIP/2"
    response = dataplane.decode_capture(bytes(meta) + packet + b"trailing")
    assert (response.src, response.dst, response.sport, response.dport, response.status,
            response.protocol, response.direction, response.ktime_ns, response.kind,
            response.payload_len, response.tcp_seq, response.fragment, response.tcp_fin,
            response.tcp_rst, response.reason) == \
        (IP("192.0.2.1"), IP("203.0.113.9"), 5060, 40000, 403, "tcp", "ingress", 123456789,
         "response", 1400, 77, True, True, False, "failure")
    assert response.packet == packet and response.payload == b"SIP/2"
    assert dataplane.decode_capture(bytes(meta)[:71]) is None


def test_decoded_addresses_stay_right_past_the_address_cache(monkeypatch):
    """Recurring addresses are reused; a flood of distinct ones (spoofed sources) neither grows
    the cache past its size nor mixes the families up."""
    from fastban import packets
    monkeypatch.setattr(packets, "ADDRESS_CACHE_SIZE", 8)
    monkeypatch.setattr(packets, "_V4_ADDRESSES", {})
    monkeypatch.setattr(packets, "_V6_ADDRESSES", {})

    def record(family, src, dst):
        meta = FbCaptureMeta(status=401, payload_off=0, payload_len=3, cap_len=3,
                             family=family, protocol=17)
        meta.saddr[:len(src.packed)] = src.packed
        meta.daddr[:len(dst.packed)] = dst.packed
        return bytes(meta) + b"SIP"

    server4, server6 = IP("192.0.2.1"), IP("2001:db8::1")
    first = dataplane.decode_capture(record(4, server4, IP("203.0.113.1")))
    for n in range(1, 30):
        v4 = dataplane.decode_capture(record(4, server4, IP(f"203.0.113.{n}")))
        v6 = dataplane.decode_capture(record(6, server6, IP(f"2001:db8::{n:x}")))
        assert (v4.src, v4.dst, v6.src, v6.dst) == \
            (server4, IP(f"203.0.113.{n}"), server6, IP(f"2001:db8::{n:x}"))
        assert len(packets._V4_ADDRESSES) <= 8 and len(packets._V6_ADDRESSES) <= 8
    again = dataplane.decode_capture(record(4, server4, IP("203.0.113.29")))
    assert again.dst is v4.dst and first.src == again.src
    # an IPv4-mapped-looking IPv6 address is not confused with the IPv4 one
    mapped = dataplane.decode_capture(record(6, server6, IP("cb00:711d::")))
    assert mapped.dst.version == 6


def test_attach_reports_the_mode_and_maps_are_pinned(rig):
    assert rig.mode in ("native", "generic")
    pins = set(os.listdir(rig.dp.pin_dir))
    from fastban.abi import ABI
    assert set(ABI.pinned) <= pins
    assert "xdp" in rig.srv.run(["ip", "-d", "link", "show", rig.srv_if]).stdout


# ---- XDP drop ----

def test_banned_ipv4_source_is_dropped_others_pass(dp, rig):
    assert rig.send(CLI4[0]) == 5
    dp.ban(IP(CLI4[0]))
    assert rig.send(CLI4[0]) == 0
    assert rig.send(CLI4[1]) == 5
    assert dp.unban(IP(CLI4[0])) is True
    assert dp.unban(IP(CLI4[0])) is False
    assert rig.send(CLI4[0]) == 5


def test_banned_ipv6_source_is_dropped_others_pass(dp, rig):
    dp.ban(IP(CLI6[0]))
    assert rig.send(CLI6[0]) == 0
    assert rig.send(CLI6[1]) == 5
    assert rig.send(CLI4[0]) == 5          # the same host's IPv4 address is another source


def test_host_networks_are_exact_bans(dp, rig):
    dp.ban(NET(f"{CLI4[0]}/32"))
    dp.ban(NET(f"{CLI6[0]}/128"))
    targets = {ban.target for ban in dp.bans()}
    assert targets == {IP(CLI4[0]), IP(CLI6[0])}
    assert rig.send(CLI4[0]) == 0 and rig.send(CLI6[0]) == 0


def test_banned_ranges_drop_their_sources(dp, rig):
    dp.ban(NET("10.210.0.0/30"))           # .2 and .3, not .66
    dp.ban(NET("fd00:210::/126"))          # ::2 and ::3, not ::66
    assert rig.send(CLI4[0]) == 0 and rig.send(CLI4[1]) == 0
    assert rig.send(CLI4[3]) == 5
    assert rig.send(CLI6[0]) == 0 and rig.send(CLI6[1]) == 0
    assert rig.send(CLI6[3]) == 5
    assert {ban.target for ban in dp.bans()} == {NET("10.210.0.0/30"), NET("fd00:210::/126")}


def test_listing_reads_large_maps_whole_across_batches(dp):
    network = ipaddress.IPv4Network("10.96.0.0/14")
    wanted = {network.network_address + i: i % 3 * 10**12 for i in range(70_000)}
    for address, expires in wanted.items():
        dp.ban(address, expires_ns=expires)
    dp.ban(IP("fd00:210::99"))
    listed = {ban.target: ban.expires_ns for ban in dp.bans(include_expired=True)}
    assert listed == {**wanted, IP("fd00:210::99"): 0}


def test_range_tries_are_skipped_only_while_they_hold_no_ban(dp, rig):
    from fastban.abi import ABI
    FB_CFG_RANGES_V4, FB_CFG_RANGES_V6 = ABI["FB_CFG_RANGES_V4"], ABI["FB_CFG_RANGES_V6"]
    assert dp._get_config(FB_CFG_RANGES_V4) == 0 and dp._get_config(FB_CFG_RANGES_V6) == 0
    dp.ban(NET("10.210.0.0/30"))
    dp.ban(NET("10.210.0.64/26"))
    assert dp._get_config(FB_CFG_RANGES_V4) == 1 and dp._get_config(FB_CFG_RANGES_V6) == 0
    assert dp.unban(NET("10.210.0.0/30"))
    assert dp._get_config(FB_CFG_RANGES_V4) == 1       # one range left: still looked up
    assert rig.send(CLI4[3]) == 0 and rig.send(CLI4[1]) == 5
    dp.ban(IP(CLI4[3]), expires_ns=time.monotonic_ns() + 300_000_000)
    time.sleep(0.4)
    assert rig.send(CLI4[3]) == 0                       # lapsed exact ban: the range still holds
    assert dp.unban(NET("10.210.0.64/26"))
    assert dp._get_config(FB_CFG_RANGES_V4) == 0
    assert rig.send(CLI4[3]) == 5
    dp.ban(NET("fd00:210::/126"))
    assert DataPlane.open_pinned(rig.dp.iface, pin_root=rig.dp.pin_dir.rsplit("/", 1)[0]) \
        ._get_config(FB_CFG_RANGES_V6) == 1


def test_the_whitelist_wins_over_bans(dp, rig):
    dp.ban(IP(CLI4[0]))
    dp.ban(NET("10.210.0.0/24"))
    dp.ban(IP(CLI6[0]))
    dp.whitelist(NET(f"{CLI4[0]}/32"))
    dp.whitelist(NET("fd00:210::/120"))
    assert rig.send(CLI4[0]) == 5           # whitelisted although banned twice
    assert rig.send(CLI4[1]) == 0           # banned by the range, not whitelisted
    assert rig.send(CLI6[0]) == 5
    assert set(dp.whitelisted()) == {NET(f"{CLI4[0]}/32"), NET("fd00:210::/120")}
    assert dp.unwhitelist(NET(f"{CLI4[0]}/32")) is True
    assert rig.send(CLI4[0]) == 0
    assert rig.send(CLI6[0]) == 5               # the v6 whitelist is still looked up
    assert dp.unwhitelist(NET("fd00:210::/120")) is True
    assert rig.send(CLI6[0]) == 0


def test_trusted_sources_are_kept_with_their_end(dp):
    until = time.monotonic_ns() + 60 * 10**9
    dp.trust(NET(f"{CLI4[0]}/32"), until)
    dp.trust(NET("fd00:210::/64"), until + 1)
    assert dp.trusted_networks() == {NET(f"{CLI4[0]}/32"): until,
                                     NET("fd00:210::/64"): until + 1}
    dp.trust(NET(f"{CLI4[0]}/32"), until + 5)
    assert dp.trusted_networks()[NET(f"{CLI4[0]}/32")] == until + 5
    assert dp.untrust(NET(f"{CLI4[0]}/32")) is True
    assert dp.untrust(NET(f"{CLI4[0]}/32")) is False
    assert dp.trusted_networks() == {NET("fd00:210::/64"): until + 1}


def test_a_ban_lapses_at_its_expiry(dp, rig):
    dp.ban(IP(CLI4[0]), expires_ns=time.monotonic_ns() + 1_000_000_000)
    dp.ban(NET("fd00:210::/64"), expires_ns=time.monotonic_ns() + 1_000_000_000)
    assert rig.send(CLI4[0]) == 0 and rig.send(CLI6[1]) == 0
    time.sleep(1.2)
    assert rig.send(CLI4[0]) == 5 and rig.send(CLI6[1]) == 5
    assert dp.bans() == []
    assert len(dp.bans(include_expired=True)) == 2
    assert dp.purge_expired() == 2
    assert dp.bans(include_expired=True) == []


def test_banning_again_changes_the_expiry_and_keeps_the_hits(dp, rig):
    dp.ban(IP(CLI4[0]), expires_ns=time.monotonic_ns() + 60_000_000_000)
    assert rig.send(CLI4[0], count=3) == 0
    dp.ban(IP(CLI4[0]))
    [ban] = dp.bans()
    assert ban.expires_ns == 0 and ban.remaining_ns() is None and ban.hits == 3


def test_many_new_bans_are_written_together_and_drop_like_one(dp, rig):
    later = time.monotonic_ns() + 60_000_000_000
    many = [(IP(f"10.250.{i // 256}.{i % 256}"), later) for i in range(25_000)]  # 3 batches
    assert dp.ban_new([(IP(CLI4[0]), later), (IP(CLI6[1]), 0), (NET("fd00:211::/64"), later),
                       *many]) == []
    bans = {ban.target: ban for ban in dp.bans()}
    assert len(bans) == 25_003
    assert bans[IP(CLI4[0])].expires_ns == later and bans[IP(CLI6[1])].expires_ns == 0
    assert bans[NET("fd00:211::/64")].expires_ns == bans[IP("10.250.97.167")].expires_ns == later
    assert rig.send(CLI4[0]) == 0 and rig.send(CLI6[1]) == 0 and rig.send(CLI4[1]) == 5
    assert bans[IP(CLI4[0])].hits == 0 and dp.ban_of(IP(CLI4[0])).hits == 5


def test_port_scope_drops_only_the_listed_ports(dp, rig):
    dp.ban(IP(CLI4[0]))
    dp.ban(NET("fd00:210::/64"))
    dp.set_scope([7001, 7002])
    assert dp.scope() == [7001, 7002]
    assert rig.send(CLI4[0], port=7000) == 5
    assert rig.send(CLI4[0], port=7001) == 0
    assert rig.send(CLI6[0], port=7000) == 5
    assert rig.send(CLI6[0], port=7002) == 0
    assert rig.send(CLI4[1], port=7001) == 5            # not banned
    dp.set_scope(None)
    assert dp.scope() is None
    assert rig.send(CLI4[0], port=7000) == 0
    with pytest.raises(ValueError):
        dp.set_scope([])


def test_counters_and_hit_counts_match_the_packets_sent(dp, rig):
    dp.ban(IP(CLI4[0]))
    dp.ban(NET("10.210.0.64/26"))
    dp.whitelist(NET(f"{CLI4[2]}/32"))
    dp.ban(IP(CLI4[2]))
    before = dp.counters()
    assert rig.send(CLI4[0], count=7) == 0
    assert rig.send(CLI4[3], count=4) == 0
    assert rig.send(CLI4[1], count=5) == 5
    assert rig.send(CLI4[2], count=3) == 3
    after = dp.counters()
    delta = {k: after[k] - before[k] for k in before}
    assert delta["dropped"] == 11
    assert delta["whitelisted"] == 3
    assert delta["passed"] >= 8
    assert delta["seen"] >= 19
    assert delta["seen"] == delta["passed"] + delta["dropped"]
    hits = {ban.target: ban.hits for ban in dp.bans()}
    assert hits == {IP(CLI4[0]): 7, NET("10.210.0.64/26"): 4, IP(CLI4[2]): 0}


def test_vlan_and_qinq_frames_from_banned_sources_are_dropped(dp, rig):
    from scapy.layers.inet import IP as ScapyIP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    dp.ban(IP(CLI4[0]))
    dp.ban(IP(CLI6[0]))
    eth = Ether(src=rig.cli_mac, dst=rig.srv_mac)
    v4 = ScapyIP(src=CLI4[0], dst=SRV4) / UDP(sport=4000, dport=7000) / b"tagged"
    v6 = IPv6(src=CLI6[0], dst=SRV6) / UDP(sport=4000, dport=7000) / b"tagged"
    clean = ScapyIP(src=CLI4[1], dst=SRV4) / UDP(sport=4000, dport=7000) / b"tagged"
    banned_frames = [eth / Dot1Q(vlan=10) / v4, eth / Dot1AD(vlan=20) / Dot1Q(vlan=10) / v4,
                     eth / Dot1Q(vlan=30) / Dot1Q(vlan=10) / v4, eth / Dot1Q(vlan=10) / v6,
                     eth / Dot1AD(vlan=20) / Dot1Q(vlan=10) / v6]
    other_frames = [eth / Dot1Q(vlan=10) / clean,
                    Ether(src=rig.cli_mac, dst=rig.srv_mac, type=0x88B5) / (b"\x00" * 46)]
    before = dp.counters()
    _write_frames(rig.cli, rig.cli_if, banned_frames + other_frames)
    time.sleep(0.2)
    after = dp.counters()
    assert after["dropped"] - before["dropped"] == len(banned_frames)
    assert after["passed"] - before["passed"] >= len(other_frames)
    hits = {ban.target: ban.hits for ban in dp.bans()}
    assert hits == {IP(CLI4[0]): 3, IP(CLI6[0]): 2}


# ---- capture ----

def _sip(status: int, reason: str = "Reason", call_id: str | None = None) -> bytes:
    call_id = call_id or f"test-{status}@fastban"
    return (f"SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/UDP 10.210.0.2:5060;branch=z9hG4bK1\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode()


def _request(call_id: str, credentials: bool, method: str = "REGISTER") -> bytes:
    authorization = ('Authorization: Digest username="1001", realm="lab", nonce="n1", '
                     'uri="sip:lab", response="0123456789abcdef0123456789abcdef"\r\n'
                     if credentials else "")
    return (f"{method} sip:lab SIP/2.0\r\nVia: SIP/2.0/UDP 10.210.0.2:5062;branch=z9hG4bK9\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 2 {method}\r\n{authorization}"
            f"Content-Length: 0\r\n\r\n").encode()


class Collector:
    def __init__(self, dp: DataPlane):
        self.dp = dp
        self.items = []
        dp.on_capture(self.items.append)
        self.flush()

    def flush(self):
        self.dp.poll(50)
        self.items.clear()

    def wait(self, count: int, timeout: float = 3.0, settle: float = 0.3):
        deadline = time.monotonic() + timeout
        while len(self.items) < count and time.monotonic() < deadline:
            self.dp.poll(50)
        end = time.monotonic() + settle
        while time.monotonic() < end:
            self.dp.poll(50)
        items = list(self.items)
        self.items.clear()
        return items


@pytest.fixture(scope="module")
def collector(rig):
    return Collector(rig.dp)


def _server_udp(rig, family: int, port: int = 5060) -> socket.socket:
    with rig.srv.entered():
        sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                             socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((SRV6 if family == 6 else SRV4, port))
    return sock


def _send_responses(rig, family, messages, destination, dport=5062, sport=5060):
    with _server_udp(rig, family, sport) as sock:
        for message in messages:
            sock.sendto(message, (destination, dport))


def _send_requests(rig, source, messages, sport=5062):
    """Requests from a client address to the server's port 5060 (they pass TC ingress)."""
    family = IP(source).version
    with rig.cli.entered():
        sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                             socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((source, sport))
        for message in messages:
            sock.sendto(message, (SRV6 if family == 6 else SRV4, 5060))


@pytest.mark.parametrize("family", [4, 6])
def test_capture_udp_delivers_401_403_407_with_their_bytes(dp, rig, collector, family):
    collector.flush()
    client = CLI4[0] if family == 4 else CLI6[0]
    messages = [_sip(401), _sip(403), _sip(407)]
    _send_responses(rig, family, messages, client)
    got = collector.wait(3)
    assert [r.status for r in got] == [401, 403, 407]
    for response, message in zip(got, messages):
        assert response.payload == message and response.payload_len == len(message)
        assert response.protocol == "udp" and response.direction == "egress"
        assert response.kind == "response" and response.reason == "failure"
        assert not response.fragment
        assert response.src == IP(SRV4 if family == 4 else SRV6)
        assert response.dst == IP(client)
        assert (response.sport, response.dport) == (5060, 5062)
        assert abs(response.ktime_ns - time.monotonic_ns()) < 30_000_000_000
    # The challenges marked the peer and their Call-IDs, read by the header scan.
    challenged_ns, _ = dp.challenged_peers()[IP(client)]
    assert challenged_ns == got[2].ktime_ns
    calls = dp.open_calls()
    assert calls[IP(client), headerscan.call_hash(b"test-401@fastban")] == got[0].ktime_ns
    assert calls[IP(client), headerscan.call_hash(b"test-407@fastban")] == got[2].ktime_ns
    assert (IP(client), headerscan.call_hash(b"test-403@fastban")) not in calls
    _send_responses(rig, family, [_sip(200, "OK", "test-401@fastban")], client)
    [ok] = collector.wait(1)
    assert ok.status == 200 and ok.reason == "open call"


@pytest.mark.parametrize("family", [4, 6])
def test_capture_ignores_other_statuses_ports_and_payloads(dp, rig, collector, family):
    collector.flush()
    client = CLI4[2] if family == 4 else CLI6[2]           # never challenged
    _send_responses(rig, family, [_sip(100, "Trying"), _sip(180, "Ringing"), _sip(200, "OK"),
                                  _sip(486, "Busy Here"), _sip(404, "Not Found"),
                                  b"REGISTER sip:x SIP/2.0\r\n\r\n", b"SIP/2.0 40"], client)
    _send_responses(rig, family, [_sip(401), _sip(403)], client, sport=5070)  # not a SIP port
    _send_requests(rig, client, [_request("never-challenged", credentials=True)])
    assert collector.wait(0, timeout=0.5) == []


def test_capture_404_only_when_asked(dp, rig, collector):
    collector.flush()
    client = CLI4[2]
    dp.set_count_register_404(True)
    try:
        _send_responses(rig, 4, [_sip(404, "Not Found")], client)
        assert [r.status for r in collector.wait(1)] == [404]
    finally:
        dp.set_count_register_404(False)
    _send_responses(rig, 4, [_sip(404, "Not Found")], client)
    assert collector.wait(0, timeout=0.5) == []


def test_capture_forwards_final_answers_only_on_an_open_call(dp, rig, collector):
    """One address, many phones: the answers to a phone with a challenge open are copied,
    the healthy traffic of the others on other Call-IDs is not."""
    collector.flush()
    office, healthy = CLI4[1], CLI4[3]
    _send_responses(rig, 4, [_sip(200, "OK", "keepalive-1")], healthy)
    _send_responses(rig, 4, [_sip(401, "Unauthorized", "phone-a")], office)
    _send_responses(rig, 4, [_sip(200, "OK", "keepalive-1")], healthy)
    _send_responses(rig, 4, [_sip(200, "OK", "options-of-phone-b")], office)   # another call
    _send_responses(rig, 4, [_sip(200, "OK", "phone-a")], office)      # answers the challenge
    _send_responses(rig, 4, [_sip(486, "Busy", "phone-a")], office)    # still within the grace
    got = collector.wait(3)
    assert [(r.status, str(r.dst), r.reason) for r in got] == \
        [(401, office, "failure"), (200, office, "open call"), (486, office, "open call")]


def test_capture_window_follows_challenge_grace(dp, rig, collector):
    collector.flush()
    peer = CLI6[1]
    dp.set_challenge_grace(0.3)
    try:
        _send_responses(rig, 6, [_sip(407, "Proxy Auth", "late-answer")], peer)
        assert len(collector.wait(1)) == 1
        time.sleep(0.5)
        _send_responses(rig, 6, [_sip(200, "OK", "late-answer")], peer)
        _send_requests(rig, peer, [_request("late-answer", credentials=True)])
        assert collector.wait(0, timeout=0.5) == []
    finally:
        dp.set_challenge_grace(32)
    _send_responses(rig, 6, [_sip(407, "Proxy Auth", "late-answer")], peer)
    _send_responses(rig, 6, [_sip(200, "OK", "late-answer")], peer)
    assert [r.status for r in collector.wait(2)] == [407, 200]


def test_capture_copies_requests_with_credentials_from_challenged_peers(dp, rig, collector):
    collector.flush()
    peer = CLI4[4]
    _send_requests(rig, peer, [_request("before", credentials=True)])
    assert collector.wait(0, timeout=0.5) == []                    # not challenged yet
    _send_responses(rig, 4, [_sip(401, "Unauthorized", "reg-1")], peer)
    _send_requests(rig, peer, [_request("reg-1", credentials=False),
                               _request("reg-1", credentials=True),
                               _request("new-call", credentials=True, method="INVITE")])
    # The request with credentials opened its Call-ID: its answer is copied too.
    _send_responses(rig, 4, [_sip(200, "OK", "new-call")], peer)
    got = collector.wait(4)
    assert [(r.kind, r.reason, r.direction) for r in got] == [
        ("response", "failure", "egress"), ("request", "credentials", "ingress"),
        ("request", "credentials", "ingress"), ("response", "open call", "egress")]
    assert got[1].src == IP(peer) and got[1].dport == 5060
    assert got[1].payload == _request("reg-1", credentials=True)
    assert (IP(peer), headerscan.call_hash(b"new-call")) in dp.open_calls()


def test_capture_counts_an_unreadable_call_id_as_open(dp, rig, collector):
    """A Call-ID past the scan's reach: every answer to that peer is copied for the grace."""
    collector.flush()
    peer = CLI6[2]
    padding = "X-Padding: " + "p" * (headerscan.SCAN_MAX + 10) + "\r\n"
    challenge = (f"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP [{peer}];branch=z9hG4bK1\r\n"
                 f"{padding}Call-ID: far-away\r\nCSeq: 1 REGISTER\r\n"
                 f"Content-Length: 0\r\n\r\n").encode()
    _send_responses(rig, 6, [challenge], peer)
    _send_responses(rig, 6, [_sip(200, "OK", "any-other-call")], peer)
    got = collector.wait(2)
    assert [(r.status, r.reason) for r in got] == [(401, "failure"), (200, "unsure")]
    assert dp.challenged_peers()[IP(peer)][1] == got[0].ktime_ns


SCAN_CORPUS = [
    b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: plain@host\r\n"
    b"CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n",
    b"SIP/2.0 401 Unauthorized\r\nv: SIP/2.0/UDP h\r\ni:compact-form\r\nl:0\r\n\r\n",
    b"SIP/2.0 407 Proxy Auth\r\nCALL-ID :  upper case and blanks \t\r\nCSeq: 9 INVITE\r\n\r\n",
    b"SIP/2.0 401 Unauthorized\nCall-Id: bare-lf@x\nContent-Length: 0\n\n",
    b"SIP/2.0 401 Unauthorized\r\nCall-ID: one\r\nCall-ID: two\r\n\r\n",
    b"SIP/2.0 401 Unauthorized\r\nCall-IDx: not-it\r\nX-Call-ID: nor-this\r\nCall-ID: it\r\n\r\n",
    b"SIP/2.0 401 Unauthorized\r\nSubject: \r\n Call-ID: folded-line-is-not-a-header\r\n"
    b"Call-ID: real\r\n\r\n",
    b"SIP/2.0 407 Proxy Auth\r\nCall-ID: \xff\xfe-high-bytes-\x80\r\n\r\n",
    b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h\r\nContent-Length: 0\r\n\r\n",
    b"SIP/2.0 401 Unauthorized\r\nCall-ID: " + b"long" * 70 + b"\r\n\r\n",
]


REQUEST_SCAN_CORPUS = [
    _request("first-of-two", credentials=True).replace(b"CSeq:", b"Call-ID: second\r\nCSeq:"),
    _request("plain", credentials=True, method="INVITE"),
    b"REGISTER sip:lab SIP/2.0\r\nl: 0\r\ni:compact\r\nProxy-Authorization: Digest a=b\r\n\r\n",
    b"OPTIONS sip:lab SIP/2.0\r\nAUTHORIZATION: Digest x=y\r\nCall-ID:\r\n\r\n",
]


def test_kernel_header_scan_agrees_with_fastban_headerscan(dp, rig, collector):
    """The kernel runs the same automaton as headerscan.scan(): the Call-ID it marks is the
    hash the Python side computes (the first Call-ID's, as the parser reads it), and a message
    whose Call-ID it cannot read marks every Call-ID of the peer open."""
    from scapy.layers.inet import IP as ScapyIP, UDP
    from scapy.layers.l2 import Ether

    collector.flush()
    peer = CLI4[3]
    eth = Ether(src=rig.srv_mac, dst=rig.cli_mac)
    for message in SCAN_CORPUS:
        expected = headerscan.scan(message, stop_at_call_id=True)
        assert expected.call_hash == headerscan.scan(message).call_hash
        before_calls = set(dp.open_calls())
        frame = eth / ScapyIP(src=SRV4, dst=peer) / UDP(sport=5060, dport=5062) / message
        _write_frames(rig.srv, rig.srv_if, [frame])
        [got] = collector.wait(1)
        added = set(dp.open_calls()) - before_calls
        if expected.call_hash is not None:
            assert (IP(peer), expected.call_hash) in dp.open_calls(), message
            assert added <= {(IP(peer), expected.call_hash)}, message
        else:
            assert added == set(), message
            assert dp.challenged_peers()[IP(peer)][1] == got.ktime_ns, message
    # Requests are scanned to their end (credentials may come late): the Call-ID they open is
    # still the first one.
    for message in REQUEST_SCAN_CORPUS:
        expected = headerscan.scan(message)
        assert expected.credentials
        before_calls = set(dp.open_calls())
        _send_requests(rig, peer, [message])
        [got] = collector.wait(1)
        assert got.kind == "request"
        added = set(dp.open_calls()) - before_calls
        if expected.call_hash is not None:
            assert (IP(peer), expected.call_hash) in dp.open_calls(), message
            assert added <= {(IP(peer), expected.call_hash)}, message
        else:
            assert dp.challenged_peers()[IP(peer)][1] == got.ktime_ns, message


@pytest.mark.parametrize("family", [4, 6])
def test_capture_first_fragment_of_a_large_answer(dp, rig, collector, family):
    """A 200 OK bigger than the MTU leaves as IP fragments: the first, which holds the headers,
    is copied and says so; the later ones are not."""
    collector.flush()
    peer = CLI4[1] if family == 4 else CLI6[1]
    contacts = "".join(f"Contact: <sip:30{i:02d}@192.168.50.2:{40000 + i}>;expires=60\r\n"
                       for i in range(60))
    big = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK7\r\nCall-ID: shared-account\r\n"
           f"CSeq: 2 REGISTER\r\n{contacts}Content-Length: 0\r\n\r\n").encode()
    assert len(big) > 3000
    _send_responses(rig, family, [_sip(401, "Unauthorized", "shared-account"), big], peer)
    got = collector.wait(2)
    assert [(r.status, r.fragment) for r in got] == [(401, False), (200, True)]
    first = got[1]
    assert first.payload_len == len(big) and len(first.payload) < 1500
    assert big.startswith(first.payload)


def test_capture_tcp_copies_segments_that_are_not_one_whole_message(dp, rig, collector):
    """A segment holding two responses may hide a 401 behind a 200: it is copied whole."""
    collector.flush()
    client_ip = CLI4[2]                   # never challenged
    with rig.srv.entered():
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with rig.cli.entered():
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener, client:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((SRV4, 5060))
        listener.listen(1)
        client.bind((client_ip, 0))
        client.settimeout(5)
        client.connect((SRV4, 5060))
        conn, _ = listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            alone = _sip(200, "OK", "options-1")
            pair = _sip(200, "OK", "options-2") + _sip(401, "Unauthorized", "register-1")
            for data in (alone, pair):
                conn.sendall(data)
                received = b""
                while len(received) < len(data):
                    received += client.recv(4096)
        got = collector.wait(1)
    assert [(r.kind, r.status, r.reason, r.payload) for r in got] == \
        [("response", 200, "tcp segment", pair)]


@pytest.mark.parametrize("family", [4, 6])
def test_capture_tcp_delivers_the_responses_of_a_real_connection(dp, rig, collector, family):
    collector.flush()
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    server_ip = SRV4 if family == 4 else SRV6
    client_ip = CLI4[0] if family == 4 else CLI6[0]
    with rig.srv.entered():
        listener = socket.socket(af, socket.SOCK_STREAM)
    with rig.cli.entered():
        client = socket.socket(af, socket.SOCK_STREAM)
    with listener, client:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((server_ip, 5060))
        listener.listen(1)
        client.bind((client_ip, 0))
        client.settimeout(5)
        client.connect((server_ip, 5060))
        client_port = client.getsockname()[1]
        conn, _ = listener.accept()
        with conn:
            client.sendall(b"REGISTER sip:fastban SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            conn.recv(4096)
            messages = [_sip(407), _sip(180, "Ringing"), _sip(403)]
            for message in messages:
                conn.sendall(message)
                client.recv(4096)           # one segment per response
        got = collector.wait(2)
    assert [r.status for r in got] == [407, 403]
    for response, message in zip(got, [messages[0], messages[2]]):
        assert response.protocol == "tcp"
        assert response.payload == message
        assert response.dst == IP(client_ip) and response.sport == 5060
        assert response.dport == client_port
    assert got[1].tcp_seq - got[0].tcp_seq == len(messages[0]) + len(messages[1])


def test_lost_captures_are_counted_and_visible(dp, rig, collector):
    collector.flush()
    before = dp.counters()
    # More than the ring (capture_pages pages) holds while nobody polls: each record is the
    # ring's 8-byte header, the 72-byte meta and the frame.
    record = 8 + 72 + 14 + 20 + 8 + len(_sip(403))
    sent = 2 * dp.capture_pages * 4096 // record
    _send_responses(rig, 4, [_sip(403)] * sent, CLI4[4])
    got = collector.wait(sent, timeout=3.0)
    after = dp.counters()
    delta = {k: after[k] - before[k] for k in before}
    assert delta["capture_examined"] == sent
    assert delta["captured"] + delta["capture_failed"] == sent
    assert len(got) == delta["captured"] and delta["capture_failed"] > 0
    # The drained ring takes the next record again.
    _send_responses(rig, 4, [_sip(403)], CLI4[4])
    assert len(collector.wait(1)) == 1
    assert dp.counters()["capture_lost"] - before["capture_lost"] == delta["capture_failed"]


def _write_frames(namespace, iface, frames):
    """Writes whole frames out of an interface (the server's: they pass its TC egress; the
    client's: they reach the server's XDP)."""
    with namespace.entered():
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with raw:
        raw.bind((iface, 0))
        for frame in frames:
            raw.send(bytes(frame))


def test_capture_parses_vlan_and_qinq_tagged_responses(dp, rig, collector):
    """Tagged frames written on the server side go through TC egress with the tag in the bytes."""
    from scapy.layers.inet import IP as ScapyIP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    collector.flush()
    eth = Ether(src=rig.srv_mac, dst=rig.cli_mac)
    v4 = ScapyIP(src=SRV4, dst=CLI4[4]) / UDP(sport=5060, dport=5062) / _sip(403)
    v6 = IPv6(src=SRV6, dst=CLI6[2]) / UDP(sport=5060, dport=5062) / _sip(403)
    other = ScapyIP(src=SRV4, dst=CLI4[4]) / UDP(sport=5061, dport=5062) / _sip(403)
    frames = [eth / Dot1Q(vlan=10) / v4, eth / Dot1AD(vlan=20) / Dot1Q(vlan=10) / v4,
              eth / Dot1Q(vlan=10) / v6, eth / Dot1Q(vlan=10) / other]
    _write_frames(rig.srv, rig.srv_if, frames)
    got = collector.wait(3)
    assert [(r.status, str(r.dst)) for r in got] == [(403, CLI4[4]), (403, CLI4[4]),
                                                     (403, CLI6[2])]
    assert [r.payload for r in got] == [_sip(403)] * 3
    assert [r.packet[12:14] for r in got] == [b"\x81\x00", b"\x88\xa8", b"\x81\x00"]


def test_capture_skips_ipv6_extension_headers(dp, rig, collector):
    """Hop-by-hop, destination options, routing and a first fragment lie between the IPv6
    header and UDP; a later fragment (no UDP header, no status line) is not forwarded."""
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                    IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
    from scapy.layers.l2 import Ether

    collector.flush()
    eth = Ether(src=rig.srv_mac, dst=rig.cli_mac)
    ip6 = IPv6(src=SRV6, dst=CLI6[3])
    udp = UDP(sport=5060, dport=5062) / _sip(403)
    frames = [eth / ip6 / IPv6ExtHdrHopByHop() / udp,
              eth / ip6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / udp,
              eth / ip6 / IPv6ExtHdrFragment(id=7, offset=0, m=0) / udp,
              eth / ip6 / IPv6ExtHdrFragment(id=8, offset=8, m=0, nh=17) / _sip(403)]
    _write_frames(rig.srv, rig.srv_if, frames)
    got = collector.wait(3)
    assert [(r.status, str(r.dst), r.sport, r.dport) for r in got] == \
        [(403, CLI6[3], 5060, 5062)] * 3
    assert [r.payload for r in got] == [_sip(403)] * 3


def test_the_capture_and_the_replay_walk_read_the_same_frames(dp, rig, collector):
    """bpf/walk.h in the kernel and fastban.packets on a recording take the same frames: the
    odd ones at the limits (bpf/abi.h) included."""
    from scapy.layers.inet import IP as ScapyIP, UDP
    from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop,
                                    IPv6ExtHdrRouting)
    from scapy.layers.ipsec import AH
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    from fastban import packets

    eth = Ether(src=rig.srv_mac, dst=rig.cli_mac)
    v4 = ScapyIP(src=SRV4, dst=CLI4[4])
    v6 = IPv6(src=SRV6, dst=CLI6[3])
    udp = UDP(sport=5060, dport=5062)
    hop, dst, rt = IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting
    shapes = {
        "0x9100 outer tag": lambda m: Ether(src=rig.srv_mac, dst=rig.cli_mac, type=0x9100)
        / Dot1Q(vlan=10) / v4 / udp / m,
        "two tags": lambda m: eth / Dot1AD(vlan=20) / Dot1Q(vlan=10) / v4 / udp / m,
        "three tags": lambda m: eth / Dot1AD(vlan=30) / Dot1Q(vlan=20) / Dot1Q(vlan=10) / v4
        / udp / m,
        "IPv4 options": lambda m: eth / ScapyIP(src=SRV4, dst=CLI4[4], options=b"\x01" * 8)
        / udp / m,
        "AH": lambda m: eth / v6 / AH(nh=17, payloadlen=4, spi=7, icv=b"\0" * 12) / udp / m,
        "four extension headers": lambda m: eth / v6 / hop() / dst() / rt() / dst() / udp / m,
        "five extension headers": lambda m: eth / v6 / hop() / dst() / rt() / dst() / dst()
        / udp / m,
    }
    frames, expected = [], set()
    for name, shape in shapes.items():
        frame = bytes(shape(_sip(403, call_id=f"walk {name}")))
        frames.append(frame)
        segment = packets.decode(packets.LINKTYPE_ETHERNET, frame)
        if segment is not None and segment.sport == 5060 and segment.payload.startswith(b"SIP"):
            expected.add(name)
    # the limits cut somewhere: both walks agree on frames on either side of them
    assert {"0x9100 outer tag", "AH", "four extension headers"} <= expected
    assert not {"three tags", "five extension headers"} & expected
    # FB_WALK_MAX_OFFSET is past the link's MTU, so it is pinned on fastban.packets alone
    collector.flush()
    _write_frames(rig.srv, rig.srv_if, frames)
    got = collector.wait(len(expected))
    captured = {r.payload.split(b"Call-ID: walk ")[1].split(b"\r\n")[0].decode() for r in got}
    assert captured == expected


def test_ingress_capture_sees_responses_arriving_at_the_interface(dp, rig, collector):
    collector.flush()
    with rig.cli.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind((CLI4[4], 5060))
        sock.sendto(_sip(401), (SRV4, 5062))
    [got] = collector.wait(1)
    assert got.direction == "ingress" and got.src == IP(CLI4[4]) and got.status == 401


# ---- capacity, persistence, errors ----

@pytest.fixture(scope="module")
def small(rig):
    """A DataPlane with capacity 4, not attached, on the server's loopback."""
    root = f"/sys/fs/bpf/fastban-test-{os.getpid()}"
    with rig.srv.entered():
        dp = DataPlane("lo", capacity=4, capture="none", pin_root=root)
    yield dp
    dp.close()
    dataplane.remove_pins(dp.pin_dir)
    os.rmdir(root)


def test_a_full_map_refuses_a_new_ban_with_a_clear_error(small):
    addresses = [IP(f"192.0.2.{i}") for i in range(1, 5)]
    for address in addresses:
        small.ban(address)
    small.ban(addresses[0], expires_ns=0)          # re-banning needs no room
    with pytest.raises(BanTableFull) as error:
        small.ban(IP("192.0.2.99"))
    assert "\n" not in str(error.value) and "full" in str(error.value)
    assert isinstance(error.value, DataPlaneError)
    assert {b.target for b in small.bans()} == set(addresses)     # nothing evicted
    for i in range(4):
        small.ban(NET(f"198.51.{i}.0/24"))
    with pytest.raises(BanTableFull):
        small.ban(NET("198.51.100.0/24"))
    # Lapsed bans make room.
    for address in addresses:
        small.ban(address, expires_ns=time.monotonic_ns() + 1)
    small.ban(IP("192.0.2.99"))
    assert IP("192.0.2.99") in {b.target for b in small.bans()}


def test_bans_written_together_into_a_full_map_name_the_ones_refused(small):
    for ban in small.bans(include_expired=True):
        small.unban(ban.target)
    wanted = [(IP(f"192.0.2.{i}"), 0) for i in range(1, 7)] + [(NET("198.51.7.0/24"), 0)]
    refused = small.ban_new(wanted)
    assert [target for target, _ in refused] == [IP("192.0.2.5"), IP("192.0.2.6")]
    assert all(isinstance(error, BanTableFull) for _, error in refused)
    assert {b.target for b in small.bans()} == {IP(f"192.0.2.{i}") for i in range(1, 5)} | \
        {NET("198.51.7.0/24")}


def _fdinfo(table) -> dict:
    info = Path(f"/proc/self/fdinfo/{table.map_fd}").read_text()
    return dict(line.split(":\t") for line in info.splitlines() if ":\t" in line)


def test_default_capacity_reserves_no_memory_per_ban_up_front(rig):
    # A hash map always allocates its bucket array (16 bytes per slot); BPF_F_NO_PREALLOC
    # keeps the elements (key, value and ~48 bytes of overhead) from being reserved too.
    # LPM tries reserve nothing.
    for name in ("bans_v4", "bans_v6", "ranges_v4", "ranges_v6"):
        table = rig.dp.bpf[name.encode()]
        assert table.max_entries == 1_048_576
        fields = _fdinfo(table)
        assert int(fields["map_flags"], 16) & 1, name      # BPF_F_NO_PREALLOC
        assert int(fields["memlock"]) <= 17 * 1_048_576, name


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", "import sys; sys.path.insert(0, %r)\n" % str(ROOT)
            + textwrap.dedent(body)]


def test_bans_outlive_the_process_and_lapse_with_no_process_running(kernel):
    with netns.Lab() as lab:
        srv, cli = lab.namespace("srv"), lab.namespace("cli")
        link = lab.link(srv, cli, "10.211.0.1/24", "10.211.0.2/24")
        cli.run(["ip", "addr", "add", "10.211.0.3/24", "dev", link.b])
        pin_dir = f"/sys/fs/bpf/fastban/{link.a}"

        def reach(source: str) -> int:
            with srv.entered():
                rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with cli.entered():
                tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with rx, tx:
                rx.bind(("10.211.0.1", 7000))
                rx.setblocking(False)
                tx.bind((source, 0))
                for _ in range(3):
                    tx.sendto(b"x", ("10.211.0.1", 7000))
                return receive(rx, 3)

        assert reach("10.211.0.2") == 3             # warms ARP both ways
        assert reach("10.211.0.3") == 3
        loader = srv.nsenter(_script(f"""
            import ipaddress, time
            from fastban.dataplane import DataPlane
            dp = DataPlane({link.a!r}, capture="none")
            print(dp.attach("generic"))
            dp.ban(ipaddress.ip_address("10.211.0.2"))
            dp.ban(ipaddress.ip_address("10.211.0.3"), time.monotonic_ns() + 2_000_000_000)
            """))
        loaded = subprocess.run(loader, check=True, capture_output=True, text=True, timeout=60)
        banned_at = time.monotonic()
        assert loaded.stdout.strip() == "generic"
        try:
            assert reach("10.211.0.2") == 0 and reach("10.211.0.3") == 0
            lister = srv.nsenter(_script(f"""
                from fastban.dataplane import DataPlane
                dp = DataPlane.open_pinned({link.a!r})       # no compile
                for ban in dp.bans(include_expired=True):
                    print(ban.target, ban.expires_ns > 0, ban.hits)
                print("dropped", dp.counters()["dropped"])
                """))
            listed = subprocess.run(lister, check=True, capture_output=True, text=True,
                                    timeout=60).stdout.split("\n")
            assert "10.211.0.2 False 3" in listed and "10.211.0.3 True 3" in listed
            assert "dropped 6" in listed
            time.sleep(max(0.0, banned_at + 2.3 - time.monotonic()))
            assert reach("10.211.0.3") == 3         # lapsed, no fastban process running
            assert reach("10.211.0.2") == 0         # permanent
        finally:
            remover = srv.nsenter(_script(f"""
                from fastban.dataplane import DataPlane
                DataPlane({link.a!r}, capture="none").detach()
                """))
            subprocess.run(remover, check=True, capture_output=True, timeout=60)
        assert not os.path.exists(pin_dir)
        assert "xdp" not in srv.run(["ip", "-d", "link", "show", link.a]).stdout
        assert reach("10.211.0.2") == 3


def test_open_pinned_shares_the_maps_of_the_loaded_program(dp, rig):
    other = DataPlane.open_pinned(rig.srv_if)
    try:
        other.ban(IP(CLI4[0]))
        assert rig.send(CLI4[0], count=2) == 0
        assert [(b.target, b.hits) for b in dp.bans()] == [(IP(CLI4[0]), 2)]
        assert other.counters()["dropped"] == dp.counters()["dropped"]
        assert other.capacity == 1_048_576
        with pytest.raises(DataPlaneError, match="opened from the pins"):
            other.attach()
    finally:
        other.close()
    with pytest.raises(DataPlaneError, match="no fastban maps pinned for fbnosuch0"):
        DataPlane.open_pinned("fbnosuch0")


def test_the_rate_table_is_as_big_as_asked_and_a_new_size_replaces_its_pin(kernel):
    from fastban.abi import ABI
    root = f"/sys/fs/bpf/fastban-ratesize-{os.getpid()}"
    try:
        with netns.Lab() as lab, lab.namespace("ratesize").entered():
            first = DataPlane("lo", capture="none", pin_root=root, rate_entries=4096)
            first.ban(IP("192.0.2.78"))
            assert first.rate_table_entries() == 4096
            first.close()
            same = DataPlane("lo", capture="none", pin_root=root, rate_entries=4096)
            assert "rate_limit" not in same.replaced_pins
            same.close()
            again = DataPlane("lo", capture="none", pin_root=root)
            try:
                assert again.replaced_pins == ["rate_limit"]
                assert again.rate_table_entries() == ABI["FB_RATE_ENTRIES_DEFAULT"]
                assert [ban.target for ban in again.bans()] == [IP("192.0.2.78")]
            finally:
                again.close()
    finally:
        dataplane.remove_pins(f"{root}/lo")
        os.rmdir(root)


def test_pins_left_by_another_version_are_replaced_and_bans_kept(kernel):
    from fastban.abi import ABI
    """BCC would reuse a pinned map of another layout as it is (an 8-entry config of before
    would hide the newer settings from the programs): such pins are replaced, retired ones
    removed, and the ban maps kept."""
    from bcc import BPF
    root = f"/sys/fs/bpf/fastban-stale-{os.getpid()}"
    pins = os.path.join(root, "lo")
    os.makedirs(pins)
    try:
        old = BPF(text=f'''
            BPF_TABLE_PINNED("array", u32, u32, config, 8, "{pins}/config");
            BPF_TABLE_PINNED("hash", u32, u32, challenges, 16, "{pins}/challenges");
            int f(void *ctx) {{ return 0; }}'''.encode())
        old.cleanup()
        with netns.Lab() as lab:
            ns = lab.namespace("old")
            with ns.entered():
                first = DataPlane("lo", capture="none", pin_root=root)
                first.ban(IP("192.0.2.77"))
                first.close()
                again = DataPlane("lo", capture="egress", pin_root=root)
            try:
                assert sorted(first.replaced_pins) == ["challenges", "config"]
                assert again.replaced_pins == []
                assert len(again.config_values()) == ABI["FB_CFG_MAX"]
                assert [ban.target for ban in again.bans()] == [IP("192.0.2.77")]
                assert not os.path.exists(os.path.join(pins, "challenges"))
            finally:
                again.close()
    finally:
        dataplane.remove_pins(pins)
        os.rmdir(root)


def test_a_pin_root_off_bpffs_is_one_clear_line(kernel, tmp_path):
    with pytest.raises(DataPlaneError, match="is not on a bpf filesystem"):
        DataPlane("lo", pin_root=str(tmp_path))


def test_unknown_interface_is_one_clear_line(kernel):
    with pytest.raises(DataPlaneError, match=r"no network interface named 'fbnosuch0'"):
        DataPlane("fbnosuch0")


def test_not_root_is_one_clear_line(kernel):
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "--inh-caps=-all", "--bounding-set=-all", *_script("""
            from fastban.dataplane import DataPlane, DataPlaneError
            try:
                DataPlane("lo")
            except DataPlaneError as e:
                print(e)
            """)], capture_output=True, text=True, timeout=60)
    assert "needs root" in result.stdout, result.stderr


def test_verifier_rejection_shows_the_tail_of_its_log(rig, monkeypatch):
    from fastban.dataplane import program
    source = program.program_source()
    bounds_check = "if (at + len > end)\n        return NULL;"
    assert bounds_check in source
    monkeypatch.setattr(program, "program_source", lambda: source.replace(bounds_check, ""))
    root = f"/sys/fs/bpf/fastban-verifier-{os.getpid()}"
    try:
        with rig.srv.entered(), pytest.raises(DataPlaneError) as error:
            DataPlane("lo", capture="none", pin_root=root)
        message = str(error.value)
        assert "\n" not in message and "verifier rejected xdp_fastban" in message
        assert "invalid access to packet" in message
    finally:
        dataplane.remove_pins(f"{root}/lo")
        if os.path.isdir(root):
            os.rmdir(root)
