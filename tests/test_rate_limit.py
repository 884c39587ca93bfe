"""The per-source rate limit of SIP requests in XDP (bpf/rate_limit.h), on the real kernel.

A server namespace guarded by a DataPlane and a client namespace with many addresses (10.213.x,
fd00:213::); each test sends from addresses of its own, so the buckets of one test never
carry into another.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time

import pytest

from fastban import cli
from fastban.lab import netns
from udp_rig import UdpRig, guarded

IP = ipaddress.ip_address
SRV4, SRV6 = "10.213.0.1", "fd00:213::1"
CLI4 = [f"10.213.0.{n}" for n in range(2, 14)]
CLI6 = [f"fd00:213::{n}" for n in range(2, 6)]
SIP = 5060
REGISTER = b"REGISTER sip:example.test SIP/2.0\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture(scope="module")
def rig(kernel):
    with netns.Lab() as lab:
        udp = UdpRig(lab, SRV4, SRV6, CLI4, CLI6, port=SIP, payload=REGISTER)
        with guarded(udp, "none") as rig:
            yield rig


@pytest.fixture
def dp(rig):
    """The rig's DataPlane with no limit, whitelist or trust to start with."""
    dp = rig.dp
    dp.set_rate_limit(0)
    for network in dp.whitelisted():
        dp.unwhitelist(network)
    for network in dp.trusted_networks():
        dp.untrust(network)
    yield dp
    dp.set_rate_limit(0)


def _limited_of(dp, address: str) -> int:
    return sum(source.limited for source in dp.limited_sources() if source.address == IP(address))


def test_a_flood_gets_the_burst_through_and_is_counted(rig, dp):
    dp.set_rate_limit(2, burst=5)
    before = dp.kernel_counters()["rate_limited"]
    passed = rig.send(CLI4[1], 40)
    assert 5 <= passed <= 6           # the burst, and at most one more refilled meanwhile
    assert dp.kernel_counters()["rate_limited"] - before == 40 - passed
    assert _limited_of(dp, CLI4[1]) == 40 - passed


def test_a_source_over_its_rate_gets_the_rate_through(rig, dp):
    rate, burst = 10, 3
    dp.set_rate_limit(rate, burst)
    passed = rig.send(CLI4[2], 50, interval=0.02)        # about 50/s, five times the rate
    elapsed = rig.sending_took
    # the last interval's sleep comes after the last datagram: up to one refill less
    assert burst + rate * elapsed - 2 <= passed <= burst + rate * elapsed + 1
    assert _limited_of(dp, CLI4[2]) == 50 - passed


def test_a_source_under_its_rate_is_never_limited(rig, dp):
    dp.set_rate_limit(10, burst=1)                       # one request every 100 ms
    assert rig.send(CLI4[3], 8, interval=0.15) == 8
    assert _limited_of(dp, CLI4[3]) == 0


def test_the_default_burst_is_twice_the_rate(rig, dp):
    dp.set_rate_limit(4)
    assert dp.rate_limit() == (4, 8)
    assert rig.send(CLI4[4], 30) in (8, 9)


def test_whitelisted_and_trusted_sources_are_never_limited(rig, dp):
    dp.set_rate_limit(1, burst=1)
    dp.whitelist(ipaddress.ip_network("10.213.0.5/32"))
    dp.trust(IP(CLI4[5]), time.monotonic_ns() + 60 * 10**9)
    dp.trust(IP(CLI6[1]), time.monotonic_ns() + 60 * 10**9)
    before = dp.kernel_counters()["rate_limited"]
    assert rig.send("10.213.0.5", 30) == 30
    assert rig.send(CLI4[5], 30) == 30
    assert rig.send(CLI6[1], 30) == 30
    assert dp.kernel_counters()["rate_limited"] == before
    # lapsed trust is no exemption
    dp.trust(IP(CLI4[6]), time.monotonic_ns() - 1)
    assert rig.send(CLI4[6], 30) == 1


def test_ipv6_sources_are_limited_each_on_its_own(rig, dp):
    dp.set_rate_limit(1, burst=2)
    assert rig.send(CLI6[2], 20) == 2
    assert rig.send(CLI6[3], 20) == 2
    assert _limited_of(dp, CLI6[2]) == _limited_of(dp, CLI6[3]) == 18


def test_keep_alives_and_other_ports_are_not_limited(rig, dp):
    dp.set_rate_limit(1, burst=1)
    before = dp.kernel_counters()["rate_limited"]
    assert rig.send(CLI4[7], 30, payload=b"\r\n\r\n") == 30
    assert dp.kernel_counters()["rate_limited"] == before
    assert rig.send(CLI4[7], 5) == 1                     # the same source's requests are


def test_new_tcp_connections_are_limited(rig, dp):
    dp.set_rate_limit(1, burst=3)
    with rig.srv.entered():
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    clients = []
    try:
        listener.bind((SRV4, SIP))
        listener.listen(64)
        listener.settimeout(0.3)
        with rig.cli.entered():
            for _ in range(10):
                client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                clients.append(client)
                client.bind((CLI4[8], 0))
                client.setblocking(False)
                client.connect_ex((SRV4, SIP))
        accepted = 0
        with pytest.raises(TimeoutError):
            for _ in range(10):          # bounded: stops at the first 0.3 s without one
                listener.accept()[0].close()
                accepted += 1
        assert accepted == 3
        assert _limited_of(dp, CLI4[8]) == 7
    finally:
        for client in clients:
            client.close()
        listener.close()


def test_no_limit_by_default(rig, dp):
    assert dp.rate_limit() == (0, 0)
    assert rig.send(CLI4[9], 40) == 40
    assert _limited_of(dp, CLI4[9]) == 0



def test_fastban_limited_reads_the_pinned_table_with_no_guard(rig, dp, capsys, tmp_path):
    dp.set_rate_limit(3, burst=4)
    assert rig.send(CLI4[10], 25) == 4
    config = tmp_path / "fastban.toml"
    config.write_text(f'control_socket = "{tmp_path}/none.sock"\n')
    assert cli.main(["limited", "--iface", rig.srv_if, "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["rate_limit"], shown["rate_limit_burst"]) == (3, 4)
    rows = {row["address"]: row for row in shown["sources"]}
    assert rows[CLI4[10]]["requests_dropped"] == 21
    assert 0 <= rows[CLI4[10]]["seconds_since_last"] < 5
    assert cli.main(["limited", "--iface", rig.srv_if, "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "rate limit: 3 requests/s per source, burst 4" in text
    assert any(line.split()[:2] == [CLI4[10], "21"] for line in text.splitlines())
